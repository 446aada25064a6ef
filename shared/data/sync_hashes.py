"""Hashes of synced rows, so a periodic sync skips what has not changed before it pays for validation.

What is hashed: the row exactly as the sync's mapping hands it to `save` (YClients' values converted, links to
local rows resolved, before validation), not YClients' raw JSON. Whatever the sync would write is covered, the
derived parts too: a service whose category arrives later, a record whose client gets a local id, hash
differently and are written again.

Why a stored hash is trusted: only the sync's merge sets one, together with the values it hashed. Every other
UPDATE of a hashed row clears it (trigger of migration 0015), so a row the fleet changed itself (a booking
moved, a row marked deleted because it vanished upstream, an operator's fix) is never skipped: the next sync
writes it back. A row deleted locally has no hash left to match; a row that was rejected was never stored.

The hash: blake2b of the row's canonical JSON (pydantic-core, in one native call), 8 bytes stored as a bigint.
Keyed by the table, `HASH_VERSION` and the model's JSON schema: a change to the model's rules (or a bumped
version, for a change to a validator's code) makes every stored hash stale, so rows are validated again. Eight
bytes: a changed row goes unnoticed with probability 2**-64; a bigint, unlike bytes, is safe in every place a
`SELECT *` row is serialised to JSON, and is cheap to send and compare.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from functools import cache
from hashlib import blake2b
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

HASH_VERSION = 1  # bump when a validator's code changes what it accepts or how it normalises
COLUMN = "sync_hash"


@cache
def hash_key(table: str, model: type[BaseModel] | None) -> bytes:
    """The table's hash key: stored hashes stop matching when the model's rules change."""
    schema = json.dumps(model.model_json_schema(), sort_keys=True) if model is not None else ""
    return blake2b(f"{table}:{HASH_VERSION}:{schema}".encode(), digest_size=32).digest()


@cache
def _keyed(key: bytes) -> Any:
    """The keyed hash before any data: copying it costs less than keying a new one (blake2b hashes the key as a
    block of its own), a tenth of a page's hashing."""
    return blake2b(digest_size=8, key=key)


def _digest(data: bytes, start: Any) -> bytes:
    hashing = start.copy()
    hashing.update(data)
    return hashing.digest()


def row_hashes(rows: Sequence[dict[str, Any]], key: bytes) -> list[int | None]:
    """One signed 64-bit hash per row; None for a row with a value JSON cannot hold (never skipped)."""
    start = _keyed(key)
    try:  # one pass in C calls for the common page; row by row only when a row will not serialise
        digests = b"".join([_digest(to_json(row), start) for row in rows])
    except (PydanticSerializationError, ValueError, TypeError):
        return [_row_hash(row, key) for row in rows]
    packed = array("q", digests)
    if sys.byteorder == "big":
        packed.byteswap()  # the same hash on any machine: little-endian, as `_row_hash` reads it
    return packed.tolist()


def _row_hash(row: dict[str, Any], key: bytes) -> int | None:
    try:
        digest = _digest(to_json(row), _keyed(key))
    except (PydanticSerializationError, ValueError, TypeError):
        return None
    return int.from_bytes(digest, "little", signed=True)
