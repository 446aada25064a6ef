"""The root of the errors the fleet raises on purpose, and the one question a task asks of any error."""

from __future__ import annotations


class FleetError(Exception):
    """Data layer, YClients, gateway and backup errors all derive from this; `retryable` decides retries."""

    retryable: bool = False


def is_retryable(error: BaseException | None) -> bool:
    """Whether another try can help: only errors that say so (a lost connection, a 5xx, a rate limit)."""
    return isinstance(error, FleetError) and bool(error.retryable)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """The fleet's one retry spacing: `base` before the second attempt, doubling after each, never over `cap`
    (`attempt` counts the tries made so far, the failed one included)."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap))
