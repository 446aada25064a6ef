"""How the sync saves what it fetched: each row converted on its own (a bad row is counted, kept aside with
its reason, and never stops its page), then upserted in batches on YClients ids, with the run's counters."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.core.db import current_connection, detached, transaction
from shared.core.pool import get_pool
from shared.data import sync_hashes
from shared.data.errors import ConflictError, DataLayerError, ForeignKeyError, TransientError
from shared.data.repository import Repository, Row
from shared.data.upsert_sql import CopyUpsert
from shared.yclients import rows as convert

log = logging.getLogger(__name__)

REJECTIONS_KEPT = 50
OVERLAP_CHUNK = 10_000  # rows a large page is checked and merged by (YClients' pages hold 200: a bulk load's size)


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
    chunk_rows: int = OVERLAP_CHUNK,
) -> list[Row]:
    """Validate and upsert a page; rows the model or the database refuse are reported, the rest saved.

    Without `returning`, the page goes through COPY and one merge (the fast path for clients and records), and
    on a table that keeps sync hashes, rows whose stored hash matches are skipped first, unvalidated
    (shared/data/sync_hashes.py). A page larger than `chunk_rows` is checked a chunk at a time while the
    chunk before it merges (`_save_overlapped`). With `returning` every row is validated and
    written: its caller needs them all back, and the few rows of those paths (categories, schedules, a page's
    clients) cost little.
    """
    if not returning and len(rows) > chunk_rows and _may_overlap():
        valid = _save_overlapped(repo, rows, c, conflict, chunk_rows)
    else:
        valid, _ = _checked(repo, rows, c, conflict, skipping=not returning)
        if not valid:
            return []
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
    saved_rows = _save_one_by_one(repo, valid, c, conflict)
    return saved_rows if returning else []


def _save_one_by_one(repo: Repository, valid: list[Row], c: RunCounters, conflict: tuple[str, ...] | None) -> list[Row]:
    """The rows of a batch the database refused, each on its own: the spoiling row is reported, the rest saved."""
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
    return saved_rows


def _may_overlap() -> bool:
    """With a second connection for the checks' reads, and outside a caller's transaction: read on a connection
    of their own, the checks would not see what that transaction changed (a row it edited would look synced)."""
    return current_connection() is None and get_pool().max_size >= 2


def _save_overlapped(
    repo: Repository, rows: list[Row], c: RunCounters, conflict: tuple[str, ...] | None, chunk_rows: int
) -> list[Row]:
    """A large page in chunks, each checked (`_checked`) while PostgreSQL merges the one before it, all merged
    in one transaction: checking a row costs the worker about as much as merging it costs the server, and one
    after the other the two added up. The checks' reads borrow a connection of their own, and the next chunk
    is hashed while the server looks up this one's stored hashes. Returns [] once the page is written, else
    its valid rows for `_save_one_by_one` (the database refused the batch).

    The page's result is the one-piece save's: a key the page gives more than once is never skipped, and its
    rows are merged last, together, so the last valid one wins and the row is written (and counted) once.
    """
    starts = _chunk_starts(len(rows), chunk_rows)
    ends = [*starts[1:], len(rows)]
    hashing = sync_hashes.COLUMN in repo.columns
    once: list[bool] = []  # of each row of the page: its key is given once
    digests: dict[int, list[int | None]] = {}
    checked: list[list[Row]] = []  # each chunk's rows to write, in page order
    merges: list[CopyUpsert] = []  # the next checked chunk's merge of its rows given once, ready to run
    repeated: list[Row] = []  # rows whose key the page gives again, in page order: merged last

    def hash_chunk(chunk: int) -> None:
        digests[chunk] = sync_hashes.row_hashes(
            rows[starts[chunk] : ends[chunk]], sync_hashes.hash_key(repo.table, repo.model)
        )

    def meanwhile(chunk: int) -> None:
        """What the next checks need, made while the server looks up this chunk's stored hashes."""
        if chunk == 0:
            once.extend(repo.keys_given_once(rows, conflict=conflict))
        if hashing and chunk + 1 < len(starts):
            hash_chunk(chunk + 1)

    def check(chunk: int) -> None:
        with detached():
            valid, places = _checked(
                repo,
                rows[starts[chunk] : ends[chunk]],
                c,
                conflict,
                offset=starts[chunk],
                hashes=digests.pop(chunk, None),
                meanwhile=functools.partial(meanwhile, chunk),
                once=once,
            )
            checked.append(valid)
            repeated.extend(row for row, place in zip(valid, places, strict=True) if not once[place])
            alone = [row for row, place in zip(valid, places, strict=True) if once[place]]
            merges.append(repo.prepare_copy_upsert(alone, conflict=conflict, validated=True))

    if hashing:
        hash_chunk(0)
    changed = 0
    try:
        check(0)
        with transaction() as tx:
            for chunk in range(len(starts)):
                following = functools.partial(check, chunk + 1) if chunk + 1 < len(starts) else None
                changed += merges.pop(0).run(tx, following)  # its COPY data let go once sent: one chunk's held
            changed += repo.copy_upsert(repeated, conflict=conflict, validated=True, conn=tx)
    except TransientError:
        raise
    except DataLayerError:
        for chunk in range(len(checked), len(starts)):
            check(chunk)
        return [row for part in checked for row in part]
    c.upserted += changed
    return []


def _chunk_starts(total: int, chunk_rows: int) -> list[int]:
    """Chunks doubling from a sixteenth of `chunk_rows` up to it: checking a chunk takes about half the time the
    server takes to merge it, so each check ends as the merge of the chunk before (half its size) does, and the
    server waits only for the small first one."""
    starts, size, at = [], max(chunk_rows // 16, 1), 0
    while at < total:
        starts.append(at)
        at += size
        size = min(size * 2, chunk_rows)
    return starts


def _checked(
    repo: Repository,
    rows: list[Row],
    c: RunCounters,
    conflict: tuple[str, ...] | None,
    *,
    skipping: bool = True,
    offset: int = 0,
    hashes: list[int | None] | None = None,
    meanwhile: Callable[[], None] | None = None,
    once: Sequence[bool] | None = None,
) -> tuple[list[Row], list[int]]:
    """The rows to write, validated, each with its hash, and their places in the page: a row whose stored hash
    matches is skipped (where `skipping` and the table keeps hashes), a row the model refuses is reported at
    its place (`offset` is the first row's). `hashes` are the rows' own when already made; `meanwhile` is
    done while the server looks up the stored ones (at once where nothing is looked up). For a chunk of a
    page, `once` says of each of the page's rows whether it may be skipped (filled in by `meanwhile`)."""
    positions: Sequence[int] = range(offset, offset + len(rows))
    if skipping and sync_hashes.COLUMN in repo.columns:
        if hashes is None:
            hashes = sync_hashes.row_hashes(rows, sync_hashes.hash_key(repo.table, repo.model))
        same = repo.unchanged(rows, hashes, conflict=conflict, meanwhile=meanwhile)
        if same and once is not None:
            same = {index for index in same if once[offset + index]}
        c.unchanged += len(same)
        if same:
            kept = [index for index in range(len(rows)) if index not in same]
            rows, positions, hashes = [rows[i] for i in kept], [positions[i] for i in kept], [hashes[i] for i in kept]
    else:
        hashes = None
        if meanwhile is not None:
            meanwhile()
    valid, rejected = repo.validate_many(rows)
    refused = {index for index, _ in rejected}
    for index, errors in rejected:
        reference = rows[index].get("id") or rows[index].get("yclients_id")
        c.reject(positions[index], "; ".join(f"{name}: {problem}" for name, problem in errors), reference)
    if hashes is not None and valid:
        _attach_hashes(valid, refused, hashes)
    return valid, [place for index, place in enumerate(positions) if index not in refused]


def _attach_hashes(valid: list[Row], refused: set[int], hashes: list[int | None]) -> None:
    """Each valid row gets its input's hash (`validate_many` keeps the input order, minus the refused)."""
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
