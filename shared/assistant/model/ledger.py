"""What the model costs and how it does, per salon and day, in Redis: tokens (the daily budget is read from
here before every turn), turns, fallbacks by reason, tool calls accepted and refused, and time spent. Every
inbound worker process adds to the same hash, so the health report and /metrics see the fleet's figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

KEPT_SECONDS = 3 * 24 * 3600


def _key(company_id: int, day: str | None = None) -> str:
    return f"fleet:model:{company_id}:{day or datetime.now(UTC).strftime('%Y%m%d')}"


@dataclass
class TurnFigures:
    """One turn's figures, added to the salon's day in one round trip."""

    tokens: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    tool_refused: int = 0
    seconds: float = 0.0
    fallback: str | None = None  # the reason, when the rule-based assistant answered


class Ledger:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def tokens_today(self, company_id: int) -> int:
        value = self.client.hget(_key(company_id), "tokens")
        return int(value or 0)

    def add(self, company_id: int, figures: TurnFigures) -> None:
        key = _key(company_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, "turns", 1)
        pipe.hincrby(key, "tokens", figures.tokens)
        pipe.hincrby(key, "model_calls", figures.model_calls)
        pipe.hincrby(key, "tool_calls", figures.tool_calls)
        pipe.hincrby(key, "tool_refused", figures.tool_refused)
        pipe.hincrbyfloat(key, "seconds", figures.seconds)
        if figures.fallback is not None:
            pipe.hincrby(key, "fallbacks", 1)
            pipe.hincrby(key, f"fallback:{figures.fallback}", 1)
        pipe.expire(key, KEPT_SECONDS)
        pipe.execute()

    def today(self, company_id: int) -> dict[str, float]:
        """The salon's figures so far today (UTC day): numbers by name, `fallback:<reason>` for each reason."""
        raw = self.client.hgetall(_key(company_id))
        return {_text(name): float(value) for name, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
