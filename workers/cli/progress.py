"""Progress of the operators' long commands (`fleet sync`, `backup`, `restore`, `drill`) as tqdm bars on stderr,
drawn only when stderr is a terminal: logs, pipes and cron get the summary lines and nothing else. The jobs in
shared/ know no terminal; they tell an `on_progress` callback, which these objects are."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any, Self

from tqdm import tqdm

from shared.yclients.sync import SyncProgress


def _bar(**options: Any) -> tqdm:
    return tqdm(file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True, **options)


class _AboveTheBars(io.TextIOBase):
    """A log handler's stream while bars are drawn: each line goes above the bars (tqdm.write), not through them."""

    def write(self, s: str) -> int:
        tqdm.write(s, file=sys.stderr, end="")
        return len(s)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def _logs_above_the_bars() -> Iterator[None]:
    """Only the root's handlers' stream is swapped, so their level, format and secret filter stay as they are."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr and sys.stderr.isatty()
    ]
    for handler in handlers:
        handler.setStream(_AboveTheBars())
    try:
        yield
    finally:
        for handler in handlers:
            handler.setStream(sys.stderr)


class _Bars:
    """Closes its bar on leaving; meanwhile log lines are written above it."""

    bar: tqdm | None

    def __enter__(self) -> Self:
        self._stack = ExitStack()
        self._stack.enter_context(_logs_above_the_bars())
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
        self._stack.close()


class SyncBar(_Bars):
    """A paged sync's pages read (of those YClients' total_count implies, when it sent one) and its rows, in one
    bar. Drawn from the first page on: an entity read in one answer (staff, services) draws nothing."""

    def __init__(self, entity: str) -> None:
        self.entity = entity
        self.bar: tqdm | None = None

    def __call__(self, progress: SyncProgress) -> None:
        if self.bar is None:  # a resumed walk starts past page 1: those pages were read by an earlier run
            self.bar = _bar(desc=f"{self.entity} pages", unit="page", total=progress.pages, initial=progress.page - 1)
        if progress.pages is not None and self.bar.total != progress.pages:
            self.bar.total = progress.pages
        of = f"/{progress.total_rows:,}" if progress.total_rows is not None else ""
        self.bar.set_postfix_str(f"rows {progress.rows:,}{of}", refresh=False)
        self.bar.update(progress.page - self.bar.n)


class PhaseBar(_Bars):
    """A job's phases (shared/backups' BACKUP_PHASES, RESTORE_PHASES, DRILL_PHASES): the one running, and how
    many are done; `finish` fills it when the job ended well, also where it skipped a phase (no off-site copy)."""

    def __init__(self, job: str, phases: Sequence[str]) -> None:
        self.job, self.phases = job, tuple(phases)
        self.bar = _bar(
            desc=job,
            total=len(self.phases),
            unit="phase",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} phases [{elapsed}]",
        )

    def __call__(self, phase: str) -> None:
        self._show(phase, self.phases.index(phase) if phase in self.phases else None)

    def finish(self) -> None:
        """The job ended well: every phase done."""
        self._show("done", len(self.phases))

    def _show(self, phase: str, done: int | None) -> None:
        assert self.bar is not None
        self.bar.set_description_str(f"{self.job}: {phase}", refresh=False)
        if done is not None:
            self.bar.n = done
        self.bar.refresh()
