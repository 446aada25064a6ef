"""How the sync saves what it fetched: each row converted on its own (a bad row is counted, kept aside with
its reason, and never stops its page), then upserted in batches on YClients ids, with the run's counters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.core.db import transaction
from shared.data import sync_hashes
from shared.data.errors import ConflictError, DataLayerError, ForeignKeyError, TransientError
from shared.data.repository import Rejection, Repository, Row
from shared.yclients import rows as convert

log = logging.getLogger(__name__)

REJECTIONS_KEPT = 50


@dataclass
class RunCounters:
    pages: int = 0
    fetched: int = 0
    upserted: int = 0
    unchanged: int = 0  # skipped before validation: the stored row's hash says it is what the sync would write
    marked_deleted: int = 0
    rejected: int = 0
    pending: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    deletion: str | None = None
    held: list[tuple[Any, str]] = field(default_factory=list)  # (raw row, reason), kept at the page's end

    def reject(self, index: int, reason: str, reference: Any = None, raw: Any = None) -> None:
        self.rejected += 1
        if len(self.rejections) < REJECTIONS_KEPT:
            self.rejections.append({"row": index, "id": _short(reference), "reason": reason})
        self.held.append((raw if raw is not None else {"id": reference}, reason))


def _short(reference: Any) -> Any:
    """The row's id as the journal can hold it: a bigint, a short string, or a note that it was unusable."""
    if reference is None or (
        isinstance(reference, int) and not isinstance(reference, bool) and reference.bit_length() <= 63
    ):
        return reference
    if isinstance(reference, str):
        return reference[:40]
    return "<unusable>"


def convert_rows(
    raw_rows: Iterable[Any], conv: Callable[[dict[str, Any]], Row], c: RunCounters, offset: int
) -> list[Row]:
    out: list[Row] = []
    for index, raw in enumerate(raw_rows, offset):
        converted = convert_one(raw, conv, c, index)
        if converted is not None:
            out.append(converted)
    return out


def convert_one(raw: Any, conv: Callable[[dict[str, Any]], Row], c: RunCounters, index: int) -> Row | None:
    """One row, on its own: whatever is wrong with it is that row's rejection, never its page's failure."""
    if not isinstance(raw, dict):
        c.reject(index, "row is not an object", None, raw)
        return None
    try:
        return conv(raw)
    except convert.RowError as exc:
        c.reject(index, str(exc), raw.get("id"), raw)
    except Exception as exc:  # noqa: BLE001  (any value the converters did not foresee rejects its row only)
        c.reject(index, f"unusable value ({type(exc).__name__})", raw.get("id"), raw)
    return None


def save(
    repo: Repository,
    rows: list[Row],
    c: RunCounters,
    *,
    conflict: tuple[str, ...] | None = None,
    returning: bool = False,
) -> list[Row]:
    """Validate and upsert a page; rows the model or the database refuse are reported, the rest saved.

    Without `returning`, the page goes through COPY and one merge (the fast path for clients and records), and
    on a table that keeps sync hashes, rows whose stored hash matches are skipped first, unvalidated
    (shared/data/sync_hashes.py). With `returning` every row is validated and written: its caller needs
    them all back, and the few rows of those paths (categories, schedules, a page's clients) cost little.
    """
    positions: Sequence[int] = range(len(rows))
    hashes: list[int | None] | None = None
    if not returning and sync_hashes.COLUMN in repo.columns:
        rows, positions, hashes = _changed_rows(repo, rows, c, conflict)
    valid, rejected = repo.validate_many(rows)
    for index, errors in rejected:
        reference = rows[index].get("id") or rows[index].get("yclients_id")
        c.reject(positions[index], "; ".join(f"{name}: {problem}" for name, problem in errors), reference)
    if not valid:
        return []
    if hashes is not None:
        _attach_hashes(valid, rejected, hashes)
    try:
        with transaction():
            if returning:
                saved = repo.bulk_upsert(valid, conflict=conflict, validated=True)
                c.upserted += saved.changed
                return list(saved)
            c.upserted += repo.copy_upsert(valid, conflict=conflict, validated=True)
            return []
    except TransientError:
        raise
    except DataLayerError:
        pass  # one row spoils the batch: save them one by one to find it
    saved_rows: list[Row] = []
    for row in valid:
        reference = row.get("yclients_id") or row.get("id")
        try:
            with transaction():
                result = repo.bulk_upsert([row], conflict=conflict, validated=True)
            c.upserted += result.changed
            saved_rows.extend(result)
        except TransientError:
            raise
        except ConflictError as exc:
            c.reject(-1, f"conflicts with a stored row ({exc.constraint})", reference, plain(row))
        except ForeignKeyError as exc:
            c.reject(-1, f"refers to a row that is not synced ({exc.constraint})", reference, plain(row))
        except DataLayerError as exc:
            what = getattr(exc, "constraint", None) or getattr(exc, "sqlstate", None) or type(exc).__name__
            c.reject(-1, f"refused by the database ({what})", reference, plain(row))
    return saved_rows if returning else []


def _changed_rows(
    repo: Repository, rows: list[Row], c: RunCounters, conflict: tuple[str, ...] | None
) -> tuple[list[Row], Sequence[int], list[int | None]]:
    """The rows whose content differs from what the sync last wrote, their indexes in `rows`, and their hashes."""
    hashes = sync_hashes.row_hashes(rows, sync_hashes.hash_key(repo.table, repo.model))
    same = repo.unchanged(rows, hashes, conflict=conflict)
    c.unchanged += len(same)
    if not same:
        return rows, range(len(rows)), hashes
    kept = [index for index in range(len(rows)) if index not in same]
    return [rows[index] for index in kept], kept, [hashes[index] for index in kept]


def _attach_hashes(valid: list[Row], rejected: list[Rejection], hashes: list[int | None]) -> None:
    """Each valid row gets its input's hash (`validate_many` keeps the input order, minus the rejected)."""
    refused = {index for index, _ in rejected}
    kept = [digest for index, digest in enumerate(hashes) if index not in refused] if refused else hashes
    for row, digest in zip(valid, kept, strict=True):
        row[sync_hashes.COLUMN] = digest


def plain(row: Row) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not key.startswith("_") and key != sync_hashes.COLUMN}


def raw_ids(raw_rows: Iterable[Any], field: str = "id") -> list[int]:
    """Ids present upstream, including rows we rejected: a bad row has not disappeared."""
    ids = []
    for raw in raw_rows:
        if isinstance(raw, dict):
            try:
                ids.append(convert.as_int(raw, field))
            except convert.RowError:
                continue
    return ids


def phone_or_none(value: Any) -> str | None:
    try:
        return convert.as_phone(value)
    except convert.RowError:
        return None
