"""Messages pushed straight into a queue's Redis list, as a producer in another language (or a bug) would."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis


def envelope(
    task: Any,
    args: Any = (),
    kwargs: Any = None,
    *,
    queue: str,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    content_type: str = "application/json",
    task_id: str | None = None,
) -> dict[str, Any]:
    """A kombu envelope of a Celery protocol 2 message; every part can be replaced to break it on purpose."""
    task_id = task_id or str(uuid.uuid4())
    if body is None:
        body = base64.b64encode(
            json.dumps([list(args), kwargs or {}, {"callbacks": None, "errbacks": None, "chain": None}]).encode()
        ).decode()
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": content_type,
        "headers": {"lang": "py", "task": task, "id": task_id, "retries": 0, "timelimit": [None, None]}
        | (headers or {}),
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        }
        | (properties or {}),
    }


def push(redis_url: str, queue: str, value: bytes | str | dict[str, Any] | list[Any]) -> None:
    """LPUSH one raw value onto the queue's list, where kombu's BRPOP takes it from."""
    raw = value if isinstance(value, bytes | str) else json.dumps(value)
    redis.Redis.from_url(redis_url).lpush(queue, raw)
