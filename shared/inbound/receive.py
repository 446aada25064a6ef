"""Receiving one producer message: it ends stored (to be answered) or as a dead letter with the reason.

This is the one place an inbound payload is judged. Only a `TransientError` (the database is away for a
moment) leaves here, for the task to retry; every other outcome, including errors nobody foresaw, is
decided here, so a task can never be acknowledged with its message gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import sentry_sdk
from pydantic import ValidationError

from shared.data.dead_letters import record_dead_letter
from shared.data.errors import DataLayerError, TransientError, pydantic_errors
from shared.inbound.payload import InboundPayload
from shared.inbound.store import ConflictingRepeatError, UnknownCompanyError, store_message

log = logging.getLogger(__name__)

SOURCE = "inbound.receive"


@dataclass(frozen=True)
class Received:
    outcome: Literal["stored", "duplicate", "rejected"]
    company_id: int | None = None
    chat_id: str | None = None


def reference_of(payload: Any) -> tuple[Any, Any]:
    """(company id, gateway message id) as sent, for the dead letter's columns; never an error."""
    if not isinstance(payload, dict):
        return None, None
    return payload.get("company_id"), payload.get("gateway_message_id")


def reject(payload: Any, reason: str, error_type: str, *, task_id: str | None = None, extra: Any = None) -> Received:
    company, reference = reference_of(payload)
    record_dead_letter(
        SOURCE,
        reason,
        payload if extra is None else {"payload": payload, **extra},
        error_type=error_type,
        company_id=company,
        reference=reference if isinstance(reference, str | int) and not isinstance(reference, bool) else None,
        task_id=task_id,
    )
    return Received("rejected")


def receive(payload: Any, unexpected: dict[str, Any], *, task_id: str | None = None) -> Received:
    """Validate and store; raises only `TransientError`, which is safe to retry."""
    if unexpected:
        return reject(
            payload,
            f"unexpected task arguments: {sorted(unexpected)}",
            "InvalidPayload",
            task_id=task_id,
            extra={"unexpected": unexpected},
        )
    try:
        message = InboundPayload.model_validate(payload)
    except ValidationError as exc:
        reason = "invalid payload: " + "; ".join(f"{field}: {problem}" for field, problem in pydantic_errors(exc))
        return reject(payload, reason, "InvalidPayload", task_id=task_id)
    except Exception as exc:  # a validator's own bug is still this payload's dead letter
        log.exception("unexpected error validating an inbound message")
        sentry_sdk.capture_exception(exc)
        return reject(
            payload, f"unexpected error in validation: {type(exc).__name__}", "UnexpectedError", task_id=task_id
        )
    try:
        stored = store_message(message)
    except TransientError:
        raise
    except UnknownCompanyError as exc:
        return reject(payload, str(exc), "UnknownCompany", task_id=task_id)
    except ConflictingRepeatError as exc:
        return reject(payload, str(exc), "ConflictingRepeat", task_id=task_id)
    except DataLayerError as exc:
        return reject(payload, f"could not be stored: {exc}", type(exc).__name__, task_id=task_id)
    except Exception as exc:  # a bug here must not lose the message: keep it, report it
        log.exception("unexpected error storing an inbound message")
        sentry_sdk.capture_exception(exc)
        return reject(
            payload, f"unexpected error while storing: {type(exc).__name__}", "UnexpectedError", task_id=task_id
        )
    return Received("duplicate" if stored.duplicate else "stored", message.company_id, message.chat_id)
