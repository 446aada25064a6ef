"""The one builder of inbound messages for every test: the dict a producer sends, or the model it becomes."""

from __future__ import annotations

import itertools
from typing import Any

from ops.harness.seed import COMPANY, chat_message
from shared.inbound.payload import InboundPayload

CLIENT = "+79112345678"
_ids = itertools.count(1)


def inbound_payload(text: str = "Привет", chat: str = CLIENT, **fields: Any) -> dict[str, Any]:
    """A message of the seed salon as the gateway sends it (ops/harness/seed.py's `chat_message`, which the
    benchmarks use too), numbered so sent times keep the call order; `fields` replace or add any key (a
    chat_id given there wins over `chat`)."""
    return {**chat_message(COMPANY, chat, next(_ids), text), **fields}


def inbound_message(text: str = "Привет", chat: str = CLIENT, **fields: Any) -> InboundPayload:
    """The same message, validated as the fleet reads it."""
    return InboundPayload.model_validate(inbound_payload(text, chat, **fields))
