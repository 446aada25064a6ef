"""How long the fleet keeps what it no longer needs: chat messages and replies (personal data), dead letters,
sync journals, delivered alerts, handled webhook events. Deleted in small batches, so no delete holds locks for
long; pending work is never touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.core.db import run, transaction
from shared.core.settings import RetentionSettings

log = logging.getLogger(__name__)

BATCH = 5000


@dataclass(frozen=True)
class Rule:
    table: str
    older_than: str  # the row's age column
    days_setting: str
    condition: str = "TRUE"


RULES = (
    Rule("messages", "received_at", "messages_days", "status <> 'pending'"),
    Rule("outbox", "created_at", "messages_days", "status <> 'pending'"),
    Rule("dead_letters", "created_at", "dead_letters_days"),
    # The newest run of each entity stays whatever its age: incremental records runs start from it.
    Rule(
        "sync_runs",
        "started_at",
        "sync_runs_days",
        "status <> 'running' AND id NOT IN (SELECT max(id) FROM sync_runs GROUP BY company_id, entity)",
    ),
    Rule("sync_rejected_rows", "last_seen_at", "sync_runs_days"),
    Rule("alerts", "created_at", "alerts_days", "status <> 'pending'"),
    # Applied or given up: the ids are only worth keeping while someone may ask what a webhook did.
    Rule("yclients_webhook_events", "finished_at", "webhook_events_days", "status <> 'pending'"),
)


def _delete_batch(rule: Rule, days: int) -> int:
    key = "ctid"
    with transaction():
        rows = run(
            f"DELETE FROM {rule.table} WHERE {key} IN (SELECT {key} FROM {rule.table}"
            f" WHERE {rule.older_than} < now() - make_interval(days => %s) AND {rule.condition} LIMIT %s)"
            " RETURNING 1",
            (days, BATCH),
            table=rule.table,
            operation="delete",
        )
    return len(rows)


def apply_retention(settings: RetentionSettings) -> dict[str, int]:
    """Delete rows past their retention; returns how many went from each table."""
    deleted: dict[str, int] = {}
    for rule in RULES:
        days = getattr(settings, rule.days_setting)
        total = 0
        while (count := _delete_batch(rule, days)) > 0:
            total += count
        deleted[rule.table] = total
    if any(deleted.values()):
        log.info("retention deleted %s", deleted)
    return deleted
