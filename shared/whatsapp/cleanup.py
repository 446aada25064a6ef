"""Prune the gateway's key store by policy, in small batches, each its own short transaction.

A batch is located by physical row position (ctid) from an index scan, with SKIP LOCKED, so the cleanup
never waits for a row the gateway is writing and never holds a lock for long. A run that reaches its time
budget stops between batches and is recorded as partial; the next run simply continues.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from shared.core.db import run, transaction
from shared.core.settings import KeysSettings
from shared.whatsapp.policy import POLICY, PROTECTED_KEY_IDS, Retention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """The deletable rows of one key type."""

    key_type: str
    condition: sql.Composable
    params: tuple[Any, ...]


def rules(settings: KeysSettings) -> list[Rule]:
    found: list[Rule] = []
    for key_type, retention in POLICY.items():
        if retention is Retention.NEVER:
            continue
        if retention is Retention.EXPIRED:
            condition = sql.SQL("key_type = %s AND expires_at < now()")
            params: tuple[Any, ...] = (key_type,)
        else:
            condition = sql.SQL("key_type = %s AND updated_at < now() - make_interval(days => %s)")
            params = (key_type, settings.idle_days.get(key_type, 30))
        protected = PROTECTED_KEY_IDS.get(key_type)
        if protected:
            condition = condition + sql.SQL(" AND key_id <> ALL(%s)")
            params = (*params, sorted(protected))
        found.append(Rule(key_type, condition, params))
    return found


@dataclass
class CleanupReport:
    run_id: int
    dry_run: bool
    status: str = "running"
    batches: int = 0
    deleted: Counter[str] = field(default_factory=Counter)
    by_company: dict[str, Counter[str]] = field(default_factory=dict)
    unknown_types: dict[str, int] = field(default_factory=dict)

    def count(self, company_id: str, key_type: str, n: int = 1) -> None:
        self.deleted[key_type] += n
        self.by_company.setdefault(company_id, Counter())[key_type] += n

    def render(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"key cleanup run {self.run_id} ({'dry run' if self.dry_run else self.status}): "
            f"{verb} {sum(self.deleted.values())} keys in {self.batches} batches"
        ]
        for company, counts in sorted(self.by_company.items()):
            detail = ", ".join(f"{key_type} {n}" for key_type, n in sorted(counts.items()))
            lines.append(f"  {company}: {detail}")
        if self.unknown_types:
            kept = ", ".join(f"{key_type} ({n})" for key_type, n in sorted(self.unknown_types.items()))
            lines.append(f"  kept, not in the policy: {kept}")
        return "\n".join(lines)


def _record(report: CleanupReport, *, finished: bool, error: str | None = None) -> None:
    run(
        "UPDATE key_cleanup_runs SET status = %s, batches = %s, deleted = %s, by_company = %s, unknown_types = %s,"
        " error = %s, finished_at = CASE WHEN %s THEN now() END WHERE id = %s",
        (
            report.status,
            report.batches,
            Jsonb(dict(report.deleted)),
            Jsonb({company: dict(counts) for company, counts in report.by_company.items()}),
            Jsonb(report.unknown_types),
            error,
            finished,
            report.run_id,
        ),
        table="key_cleanup_runs",
        operation="update",
    )


def unknown_key_types() -> dict[str, int]:
    rows = run(
        "SELECT key_type, count(*) AS n FROM whatsapp_keys WHERE key_type <> ALL(%s) GROUP BY key_type",
        (sorted(POLICY),),
        table="whatsapp_keys",
        operation="select",
    )
    return {row["key_type"]: row["n"] for row in rows}


def _dry_run(report: CleanupReport, settings: KeysSettings) -> None:
    for rule in rules(settings):
        query = sql.SQL("SELECT company_id, count(*) AS n FROM whatsapp_keys WHERE {} GROUP BY company_id").format(
            rule.condition
        )
        for row in run(query, rule.params, table="whatsapp_keys", operation="select"):
            report.count(row["company_id"], rule.key_type, row["n"])


def _delete_batch(rule: Rule, batch_size: int) -> list[dict[str, Any]]:
    query = sql.SQL(
        "DELETE FROM whatsapp_keys WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM whatsapp_keys WHERE {} LIMIT %s FOR UPDATE SKIP LOCKED"
        ")) RETURNING company_id"
    ).format(rule.condition)
    with transaction():
        return run(query, (*rule.params, batch_size), table="whatsapp_keys", operation="delete")


def cleanup_keys(
    settings: KeysSettings, *, dry_run: bool = False, time_budget: float | None = None, max_batches: int | None = None
) -> CleanupReport:
    """Delete (or count, dry) what the policy allows; stops cleanly between batches when the time budget or
    the batch allowance runs out (status "partial"), and the next run carries on."""
    run_id = run(
        "INSERT INTO key_cleanup_runs (dry_run) VALUES (%s) RETURNING id",
        (dry_run,),
        table="key_cleanup_runs",
        operation="insert",
    )[0]["id"]
    report = CleanupReport(run_id, dry_run)
    deadline = time.monotonic() + time_budget if time_budget else None
    try:
        report.unknown_types = unknown_key_types()
        if report.unknown_types:
            log.warning("key types not in the policy, kept: %s", sorted(report.unknown_types))
        if dry_run:
            _dry_run(report, settings)
            report.status = "succeeded"
            return report
        report.status = "succeeded"
        for rule in rules(settings):
            while True:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if out_of_time or (max_batches is not None and report.batches >= max_batches):
                    report.status = "partial"
                    log.info("key cleanup stopped after %s batches; the next run continues", report.batches)
                    return report
                deleted = _delete_batch(rule, settings.batch_size)
                report.batches += 1
                for row in deleted:
                    report.count(row["company_id"], rule.key_type)
                if report.batches % 20 == 0:
                    _record(report, finished=False)  # progress visible while a long run goes on
                if len(deleted) < settings.batch_size:
                    break
        return report
    except Exception as exc:
        report.status = "failed"
        _record(report, finished=True, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        if report.status != "failed":
            _record(report, finished=True)
