"""What producers call to enqueue inbound chat messages (Python); other languages follow the README schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
from pydantic import ValidationError

from shared.core.failure import FleetError
from shared.core.refused_writes import refusal_cause
from shared.core.topology import Queue
from shared.data.errors import ValidationFailedError, pydantic_errors
from shared.inbound.payload import TASK_NAME, InboundPayload
from workers.app import app


class BrokerError(FleetError):
    """The broker did not take the message: the caller keeps it and sends it again later (a repeated
    `gateway_message_id` is stored and answered once)."""

    retryable = True


class BrokerRefusedError(BrokerError):
    """Redis refused the write (out of memory, read-only, unable to persist): nothing was enqueued."""


class BrokerUnreachableError(BrokerError):
    """Redis could not be reached, or did not answer in time."""


def broker_error(exc: BaseException) -> BrokerError | None:
    """The typed error for a failed publish (kombu wraps redis-py's error in its own), or None for any other."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            break
        cause = refusal_cause(seen)
        if cause is not None:
            return BrokerRefusedError(f"the broker refused the message: {cause}; nothing was enqueued")
        if isinstance(seen, redis.exceptions.TimeoutError):
            return BrokerUnreachableError(
                f"the broker did not answer in time ({seen}); the message may not be enqueued: send it again"
            )
        if isinstance(seen, redis.exceptions.ConnectionError | ConnectionError):
            return BrokerUnreachableError(f"the broker is unreachable ({seen}); nothing was enqueued")
        seen = seen.__cause__ or seen.__context__
    return None


def validate_payload(payload: Mapping[str, Any] | InboundPayload) -> InboundPayload:
    """The payload as the worker will read it; `ValidationFailedError` names every bad field."""
    if isinstance(payload, InboundPayload):
        return payload
    try:
        return InboundPayload.model_validate(dict(payload))
    except ValidationError as exc:
        raise ValidationFailedError("inbound message", pydantic_errors(exc), operation="enqueue") from None


def enqueue_message(payload: Mapping[str, Any] | InboundPayload) -> str:
    """Validate and enqueue one message; returns the Celery task id. A broker that refuses the message or cannot
    be reached raises `BrokerRefusedError` or `BrokerUnreachableError`, saying why in one line.

    Sent as the `fleet-producer` Redis user can (ops/redis/producer.acl): no result subscription (the task
    stores none) and no queue declaration (a direct publish is an LPUSH; declaring would write kombu's bindings).
    """
    message = validate_payload(payload)
    try:
        result = app.send_task(
            TASK_NAME,
            kwargs={"payload": message.model_dump(mode="json")},
            queue=Queue.INBOUND.value,
            ignore_result=True,
            declare=[],
        )
    except Exception as exc:
        typed = broker_error(exc)
        if typed is None:
            raise
        raise typed from exc
    return result.id


def enqueue_many(payloads: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[tuple[int, ValidationFailedError]]]:
    """Enqueue every valid payload; returns (task ids, [(index, error)]) so the caller can report the rest."""
    ids: list[str] = []
    rejected: list[tuple[int, ValidationFailedError]] = []
    for index, payload in enumerate(payloads):
        try:
            ids.append(enqueue_message(payload))
        except ValidationFailedError as exc:
            rejected.append((index, exc))
    return ids, rejected
