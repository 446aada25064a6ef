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

from shared.core.settings import KeysSettings
from shared.data.repositories.key_cleanup_runs import KeyCleanupRunRepository
from shared.data.repositories.whatsapp import Deletable, WhatsAppKeysRepository
from shared.whatsapp.policy import POLICY, PROTECTED_KEY_IDS, Retention

log = logging.getLogger(__name__)


def rules(settings: KeysSettings) -> list[Deletable]:
    """The policy as deletion rules, one per key type that may be pruned."""
    found: list[Deletable] = []
    for key_type, retention in POLICY.items():
        if retention is Retention.NEVER:
            continue
        idle_days = None if retention is Retention.EXPIRED else settings.idle_days.get(key_type, 30)
        found.append(Deletable(key_type, idle_days, tuple(sorted(PROTECTED_KEY_IDS.get(key_type, ())))))
    return found


@dataclass
class CleanupReport:
    run_id: int
    dry_run: bool
    status: str = "running"
    batches: int = 0
    largest_batch: int = 0
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
            f"{verb} {sum(self.deleted.values())} keys in {self.batches} batches (largest {self.largest_batch})"
        ]
        for company, counts in sorted(self.by_company.items()):
            detail = ", ".join(f"{key_type} {n}" for key_type, n in sorted(counts.items()))
            lines.append(f"  {company}: {detail}")
        if self.unknown_types:
            kept = ", ".join(f"{key_type} ({n})" for key_type, n in sorted(self.unknown_types.items()))
            lines.append(f"  kept, not in the policy: {kept}")
        return "\n".join(lines)


def next_batch_size(size: int, seconds: float, settings: KeysSettings) -> int:
    """Grow a batch that stayed well under the target time, shrink one that went over it: each statement holds
    its row locks for about the target, whatever the machine, the table and the gateway's load."""
    target = settings.batch_target_ms / 1000
    if seconds < target / 2:
        return min(size * 2, settings.max_batch_size)
    if seconds > target:
        return max(size // 2, 1)
    return size


def _record(report: CleanupReport, *, finished: bool, error: str | None = None) -> None:
    KeyCleanupRunRepository().save(
        report.run_id,
        status=report.status,
        batches=report.batches,
        deleted=dict(report.deleted),
        by_company={company: dict(counts) for company, counts in report.by_company.items()},
        unknown_types=report.unknown_types,
        error=error,
        finished=finished,
    )


def unknown_key_types() -> dict[str, int]:
    return WhatsAppKeysRepository().counts_outside(sorted(POLICY))


def _dry_run(report: CleanupReport, settings: KeysSettings) -> None:
    keys = WhatsAppKeysRepository()
    for rule in rules(settings):
        for company_id, n in keys.count_deletable(rule).items():
            report.count(company_id, rule.key_type, n)


def cleanup_keys(
    settings: KeysSettings, *, dry_run: bool = False, time_budget: float | None = None, max_batches: int | None = None
) -> CleanupReport:
    """Delete (or count, dry) what the policy allows; stops cleanly between batches when the time budget or
    the batch allowance runs out (status "partial"), and the next run carries on."""
    report = CleanupReport(KeyCleanupRunRepository().start(dry_run), dry_run)
    keys = WhatsAppKeysRepository()
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
        size = settings.batch_size
        for rule in rules(settings):
            while True:
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if out_of_time or (max_batches is not None and report.batches >= max_batches):
                    report.status = "partial"
                    log.info("key cleanup stopped after %s batches; the next run continues", report.batches)
                    return report
                started = time.monotonic()
                deleted = keys.delete_batch(rule, size)
                count = sum(deleted.values())
                report.batches += 1
                report.largest_batch = max(report.largest_batch, count)
                for company_id, n in deleted.items():
                    report.count(company_id, rule.key_type, n)
                if report.batches % 20 == 0:
                    _record(report, finished=False)  # progress visible while a long run goes on
                if count == 0:  # not "fewer than asked": a batch that skipped a key being written is short
                    break
                size = next_batch_size(size, time.monotonic() - started, settings)
        return report
    except Exception as exc:
        report.status = "failed"
        _record(report, finished=True, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        if report.status != "failed":
            _record(report, finished=True)
