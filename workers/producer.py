"""What producers call to enqueue inbound chat messages (Python); other languages follow the README schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from shared.core.topology import Queue
from shared.data.errors import ValidationFailedError, pydantic_errors
from shared.inbound.payload import TASK_NAME, InboundPayload
from workers.app import app


def validate_payload(payload: Mapping[str, Any] | InboundPayload) -> InboundPayload:
    """The payload as the worker will read it; `ValidationFailedError` names every bad field."""
    if isinstance(payload, InboundPayload):
        return payload
    try:
        return InboundPayload.model_validate(dict(payload))
    except ValidationError as exc:
        raise ValidationFailedError("inbound message", pydantic_errors(exc), operation="enqueue") from None


def enqueue_message(payload: Mapping[str, Any] | InboundPayload) -> str:
    """Validate and enqueue one message; returns the Celery task id.

    Sent as the `fleet-producer` Redis user can (ops/redis/producer.acl): no result subscription (the task
    stores none) and no queue declaration (a direct publish is an LPUSH; declaring would write kombu's bindings).
    """
    message = validate_payload(payload)
    result = app.send_task(
        TASK_NAME,
        kwargs={"payload": message.model_dump(mode="json")},
        queue=Queue.INBOUND.value,
        ignore_result=True,
        declare=[],
    )
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
