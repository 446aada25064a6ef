"""Prune the gateway's key store by policy, in small batches, each its own short transaction.

One pass over the table in physical order, every key type present at once: a batch is the next stretch of rows
holding up to `size` deletable keys, found, counted per company and deleted by one statement, the policy's
condition repeated in the delete so a key the gateway writes meanwhile is checked again
(shared/data/repositories/whatsapp_key_batches.py). A gateway write waits for at most one short batch: a
batch waits for a key the gateway is writing at most a quarter of its target time (then it is rolled back and
redone with the lock step and SKIP LOCKED, which never waits) and runs at most twice its target (then it is
rolled back and redone at half the size). A batch that deleted fewer keys than it counted (the gateway wrote
one) is rolled back and redone at half the size, so the journal's counts are always what was deleted. A run
that reaches its time budget stops between batches and is recorded as partial; the next run starts over from
the first page, where what is left goes quickly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from shared.core.settings import KeysSettings
from shared.data.repositories.key_cleanup_runs import KeyCleanupRunRepository
from shared.data.repositories.whatsapp import Deletable, WhatsAppKeysRepository
from shared.data.repositories.whatsapp_key_batches import (
    BatchBlocked,
    BatchMiscounted,
    BatchTooSlow,
    PrunedBatch,
    PrunePolicy,
    Tid,
    WhatsAppKeyBatchRepository,
    unflushed,
)
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
    redone: int = 0  # batches rolled back (a key held or written by the gateway meanwhile) and redone
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


def unknown_key_types(present: list[str]) -> dict[str, int]:
    """How many keys each type present that the policy does not name holds."""
    unknown = [key_type for key_type in present if key_type not in POLICY]
    return WhatsAppKeyBatchRepository().count_types(unknown) if unknown else {}


def window_pages(size: int) -> int:
    """How many pages a batch of `size` keys looks through at most: a tenth of its size (about nine times its
    keys at the benchmark's 90 keys a page), and 100 pages (a millisecond's reading) at least. A batch over
    pages with few deletable keys stays quick, and a quick batch grows its window with its size."""
    return max(size // 10, 100)


def lock_timeout_ms(settings: KeysSettings) -> int:
    """A quarter of the batch target: the longest a batch waits for a key the gateway holds, and so the most it
    adds to a gateway write that waits for the batch."""
    return max(round(settings.batch_target_ms / 4), 1)


def time_limit_ms(settings: KeysSettings) -> int:
    """Twice the batch target: a batch still running then is cancelled, so a gateway write waiting for one of
    its keys waits no longer than that (and the commit) even when the machine stalls."""
    return max(round(settings.batch_target_ms * 2), 1)


CLEAN_BATCHES_TO_GROW = 8
"""After a batch lost a key to a gateway write, batches grow again only after this many in a row did not: the
chance of such a loss grows with the square of a batch's size (more keys, for longer), so under a gateway
writing the keys being pruned the size settles where about one batch in ten is redone, not one in three."""


class _Pass:
    """One pass over the table from its first page: where the next batch starts and how it is done."""

    def __init__(self, policy: PrunePolicy, pages: int, settings: KeysSettings) -> None:
        self.policy = policy
        self.pages = pages
        self.settings = settings
        self.start: Tid = (0, 0)
        self.size = settings.batch_size
        self.careful = 0  # keys still to go with the lock step after a batch was blocked
        self.clean = CLEAN_BATCHES_TO_GROW  # batches since one lost a key to the gateway

    @property
    def done(self) -> bool:
        return self.start[0] >= self.pages

    def batch(self, keys: WhatsAppKeyBatchRepository, report: CleanupReport) -> PrunedBatch | None:
        """The next batch, or None when it was rolled back. A batch blocked by a key the gateway holds is
        redone with the lock step (SKIP LOCKED), a quarter of the size, until its keys are behind the pass. A
        batch that lost a counted key to a gateway write, or ran past its time limit, is redone at half the
        size."""
        stop = min(self.start[0] + window_pages(self.size), self.pages)
        limits = {"lock_timeout_ms": lock_timeout_ms(self.settings), "time_limit_ms": time_limit_ms(self.settings)}
        started = time.monotonic()
        try:
            if self.careful > 0:
                batch = keys.delete_locking(self.policy, self.start, stop, self.size, **limits)
            else:
                batch = keys.delete_counted(self.policy, self.start, stop, self.size, **limits)
        except BatchTooSlow as exc:
            log.info("key cleanup batch of %s keys redone at half the size: %s", self.size, exc)
            report.redone += 1
            self.size = max(self.size // 2, 1)
            return None
        except BatchMiscounted as exc:
            log.info("key cleanup batch of %s keys redone at half the size: %s", self.size, exc)
            report.redone += 1
            self.size, self.clean = max(self.size // 2, 1), 0
            return None
        except BatchBlocked as exc:
            if self.careful > 0:
                raise  # the careful batch waits for no row: a table lock (DDL) held it; the next run retries
            log.info("key cleanup batch of %s keys redone with the lock step: %s", self.size, exc)
            report.redone += 1
            self.careful, self.size = self.size, max(self.size // 4, 1)
            return None
        if batch.found < self.size or batch.last is None:
            self.start, self.careful = (stop, 0), 0
        else:
            self.start = (batch.last[0], batch.last[1] + 1)
            self.careful = max(self.careful - batch.found, 0)
        grown = next_batch_size(self.size, time.monotonic() - started, self.settings)
        self.clean += 1
        self.size = grown if grown < self.size or self.clean >= CLEAN_BATCHES_TO_GROW else self.size
        return batch


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
    deadline = time.monotonic() + time_budget if time_budget else None
    try:
        present = WhatsAppKeyBatchRepository().key_types()
        report.unknown_types = unknown_key_types(present)
        if report.unknown_types:
            log.warning("key types not in the policy, kept: %s", sorted(report.unknown_types))
        if dry_run:
            _dry_run(report, settings)
            report.status = "succeeded"
            return report
        report.status = "succeeded"
        # Only the types present: each rule is one more test of every row the pass reads. A type the gateway
        # first writes during the run has no key old enough to go yet.
        deletable = [rule for rule in rules(settings) if rule.key_type in present]
        if not deletable:
            return report
        keys = WhatsAppKeyBatchRepository()
        pass_ = _Pass(keys.policy(deletable), keys.pages(), settings)
        while not pass_.done:
            out_of_time = deadline is not None and time.monotonic() >= deadline
            if out_of_time or (max_batches is not None and report.batches >= max_batches):
                report.status = "partial"
                log.info("key cleanup stopped after %s batches; the next run continues", report.batches)
                return report
            batch = pass_.batch(keys, report)
            if batch is None:
                continue
            report.batches += 1
            report.largest_batch = max(report.largest_batch, sum(batch.deleted.values()))
            for (company_id, key_type), n in batch.deleted.items():
                report.count(company_id, key_type, n)
            if report.batches % 20 == 0:
                with unflushed():  # progress visible while a long run goes on, without a WAL flush each time
                    _record(report, finished=False)
        return report
    except Exception as exc:
        report.status = "failed"
        _record(report, finished=True, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        if report.status != "failed":
            _record(report, finished=True)
