"""Everything the fleet assumes about kombu's Redis transport, in one place: how a queued message (kombu's
envelope around a Celery message) is read, and which Redis keys kombu and the fleet's broker extension use.

The consumer's channel (`workers/broker.py`) and the lanes router (`shared/inbound/lanes.py`,
`workers/lanes.py`) read messages and name these keys only through this module, so a kombu upgrade that
changes one of them is met in one place; `tests/test_kombu_contract.py` checks each assumption against the
installed kombu and a real Redis.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from kombu.utils.json import dumps, loads

# ---- Redis keys ----------------------------------------------------------------------------------------------

# kombu's separator between a queue and its priority step (`Channel.sep`): a queue published with priorities
# keeps `<queue>\x06\x16<step>` lists beside its own. The fleet runs with `priority_steps: [0]`.
PRIORITY_SEPARATOR = "\x06\x16"


def queue_key(queue: str) -> str:
    """The Redis list a queue's messages wait in: producers LPUSH, consumers take from the right end."""
    return queue


@dataclass(frozen=True)
class UnackedKeys:
    """kombu's ack emulation for one worker type: the hash (delivery tag -> [envelope, exchange, routing key])
    of messages taken but not acknowledged, its index (tag -> time taken) that the visibility-timeout restore
    scans, and the mutex that restore holds."""

    hash: str
    index: str
    mutex: str


def unacked_keys(owner: str) -> UnackedKeys:
    """Each worker type keeps its own (workers/config.py): `owner` is the queue it is named after."""
    return UnackedKeys(f"unacked:{owner}", f"unacked_index:{owner}", f"unacked_mutex:{owner}")


# The fleet's own in-flight lists: what a lanes router took from the intake and has not yet placed in a lane
# (`fleet:inflight:<queue>:<owner>`), each registered in one set so no one scans the keyspace, with an alive
# key its owner keeps fresh. Any router returns a list whose owner's alive key expired to its queue.
INFLIGHT = "fleet:inflight:"
ALIVE = "fleet:inflight-alive:"
INFLIGHT_KEYS = "fleet:inflight-keys"


def inflight_key(queue: str, owner: str) -> str:
    return f"{INFLIGHT}{queue}:{owner}"


def inflight_owner(key: str) -> tuple[str, str]:
    """(queue, owner) of an in-flight list; queue names hold no colon."""
    queue, _, owner = key.removeprefix(INFLIGHT).partition(":")
    return queue, owner


# ---- the envelope --------------------------------------------------------------------------------------------

PROTOCOL_1_REFUSAL = "Celery message protocol 1 is not accepted: send protocol 2"


class NotAnEnvelope(ValueError):
    """JSON that kombu could not deliver as a message; the text names the field."""


@dataclass(frozen=True)
class Delivery:
    """Where kombu's restore sends a message back: `exchange` "" is the default one, `routing_key` the queue."""

    tag: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Envelope:
    """A raw queue entry as kombu's Redis transport writes it: `body` (the Celery message, base64 under
    `properties.body_encoding`), `headers` (protocol 2: the task name and id), `properties` (the delivery tag
    and `delivery_info`), `content-type` and `content-encoding`."""

    fields: dict[str, Any]

    @classmethod
    def parse(cls, raw: bytes | str) -> Envelope:
        """Read an entry with kombu's own JSON reader; raises ValueError (UnicodeDecodeError, NotAnEnvelope,
        JSON errors) or RecursionError for what is not an envelope."""
        fields = loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
        if not isinstance(fields, dict):
            raise NotAnEnvelope(f"a kombu envelope is a JSON object, not {type(fields).__name__}")
        return cls(fields)

    @property
    def headers(self) -> dict[str, Any]:
        value = self.fields.get("headers")
        return value if isinstance(value, dict) else {}

    @property
    def properties(self) -> dict[str, Any]:
        value = self.fields.get("properties")
        return value if isinstance(value, dict) else {}

    @property
    def task(self) -> Any:
        """The task name a protocol 2 message carries in its headers (None when absent: not protocol 2)."""
        return self.headers.get("task")

    @property
    def task_id(self) -> Any:
        return self.headers.get("id")

    def delivery(self) -> Delivery:
        """The delivery tag and where the message goes back to; every part must be a string, or kombu's unacked
        record (and its restore) would fail on this message."""
        properties = self.fields.get("properties")
        if not isinstance(properties, dict):
            raise NotAnEnvelope("properties is not an object")
        tag = properties.get("delivery_tag")
        if not isinstance(tag, str):
            raise NotAnEnvelope("properties.delivery_tag is not a string")
        info = properties.get("delivery_info")
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("exchange", "routing_key")):
            raise NotAnEnvelope("properties.delivery_info needs exchange and routing_key strings")
        return Delivery(tag, info["exchange"], info["routing_key"])

    def body(self) -> bytes:
        """The Celery message's bytes, decoded as kombu does (`Channel.decode_body`)."""
        body = self.fields.get("body")
        encoding = self.properties.get("body_encoding")
        if encoding == "base64":
            return base64.b64decode(body if isinstance(body, bytes) else str(body).encode())
        if isinstance(body, str):
            return body.encode("utf-8")
        raise NotAnEnvelope(f"body is {type(body).__name__}, not text, under encoding {encoding!r}")

    def call(self) -> tuple[list[Any], dict[str, Any]]:
        """A protocol 2 body's positional and keyword arguments (JSON `[args, kwargs, embed]`)."""
        args, kwargs, _ = json.loads(self.body())
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise NotAnEnvelope("the body is not [args, kwargs, embed]")
        return args, kwargs

    def unacked_record(self, delivery: Delivery) -> str:
        """The value kombu's `QoS.append` stores under the delivery tag in the unacked hash, and its restore reads."""
        return dumps([self.fields, delivery.exchange, delivery.routing_key])


def celery_protocol(headers: Any, body: Any) -> int | None:
    """Which Celery message protocol a message speaks, as Celery's consumer tells them apart: 2 names the task
    in the headers; 1 (Celery 3's layout, still sent by clients set to protocol 1) only in the decoded body,
    a mapping with `task`, `id`, `args` and `kwargs`. None: neither, not a task message."""
    if isinstance(headers, dict) and "task" in headers:
        return 2
    if isinstance(headers, dict) and isinstance(body, dict) and "task" in body:
        return 1
    return None


def protocol_1_task_id(body: Any) -> Any:
    """A protocol 1 message keeps its task id in the body."""
    return body.get("id") if isinstance(body, dict) else None
