"""The one builder of inbound messages for every test: the dict a producer sends, or the model it becomes."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.inbound.payload import InboundPayload
from tests.support.seed import COMPANY

CLIENT = "+79112345678"
_ids = itertools.count(1)


def inbound_payload(text: str = "Привет", chat: str = CLIENT, **fields: Any) -> dict[str, Any]:
    """A message as the gateway sends it: a fresh gateway id each call, sent times that keep the call order;
    `fields` replace or add any key (a chat_id given there wins over `chat`)."""
    n = next(_ids)
    return {
        "company_id": COMPANY,
        "chat_id": chat,
        "gateway_message_id": f"wamid.test.{n}.{time.time_ns()}",
        "text": text,
        "sent_at": (datetime.now(UTC) + timedelta(milliseconds=n)).isoformat(),
        **fields,
    }


def inbound_message(text: str = "Привет", chat: str = CLIENT, **fields: Any) -> InboundPayload:
    """The same message, validated as the fleet reads it."""
    return InboundPayload.model_validate(inbound_payload(text, chat, **fields))
