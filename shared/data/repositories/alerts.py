"""`alerts`: operators' alerts waiting for (or done with) their Telegram delivery, one row per change reported;
worked off oldest first by whichever deliverer comes (shared/data/work_rows.py)."""

from __future__ import annotations

from shared.core.db import Connection
from shared.data.models import MAX_ALERT_CHARS, AlertIn
from shared.data.work_rows import WORK_COLUMNS, WorkRows


class AlertRepository(WorkRows):
    table = "alerts"
    columns = WORK_COLUMNS | frozenset({"key", "kind", "text", "created_at"})
    key = ("key",)
    model = AlertIn

    def add(self, key: str, kind: str, text: str, *, conn: Connection | None = None) -> bool:
        """Store an alert unless one with this key exists (a change is reported once); True if stored."""
        if len(text) > MAX_ALERT_CHARS:
            text = text[: MAX_ALERT_CHARS - 1] + "…"
        stored = self.bulk_upsert([{"key": key, "kind": kind, "text": text}], update=[], conn=conn)
        return stored.changed > 0
