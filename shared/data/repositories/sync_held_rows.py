"""Rows the sync holds aside instead of failing on them: refused rows with their reason and raw value
(`sync_rejected_rows`), and records waiting for a staff member the salon's next staff sync will bring
(`sync_pending_records`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from psycopg.types.json import Jsonb

from shared.core.db import run
from shared.core.storable import JsonSafe
from shared.data.repository import Repository


def row_key(raw: Any) -> str:
    """The row's YClients id where it has a usable one, else a digest of what was sent."""
    if isinstance(raw, dict):
        ident = raw.get("id")
        if isinstance(ident, int | str) and not isinstance(ident, bool) and 0 < len(str(ident)) <= 40:
            return f"id:{ident}"
    digest = hashlib.sha1(json.dumps(JsonSafe().convert(raw), sort_keys=True).encode(), usedforsecurity=False)
    return f"sha1:{digest.hexdigest()}"


class SyncRejectedRowRepository(Repository):
    table = "sync_rejected_rows"
    columns = frozenset({"company_id", "entity", "row_key", "reason", "raw", "run_id", "first_seen_at", "last_seen_at"})
    key = ("company_id", "entity", "row_key")
    json_columns = frozenset({"raw"})

    def keep(self, company_id: int, entity: str, run_id: int | None, rejected: list[tuple[Any, str]]) -> None:
        """One row per (company, entity, row): the latest reason and raw value, and when it was first refused."""
        if not rejected:
            return
        latest = {row_key(raw): (reason, raw) for raw, reason in rejected}
        run(
            "INSERT INTO sync_rejected_rows (company_id, entity, row_key, reason, raw, run_id)"
            " SELECT %s, %s, key, reason, raw, %s"
            " FROM unnest(%s::text[], %s::text[], %s::jsonb[]) AS r(key, reason, raw)"
            " ON CONFLICT (company_id, entity, row_key) DO UPDATE SET reason = excluded.reason, raw = excluded.raw,"
            " run_id = excluded.run_id, last_seen_at = now()",
            (
                company_id,
                entity,
                run_id,
                list(latest),
                [reason[:2000] for reason, _ in latest.values()],
                [Jsonb(JsonSafe(max_string=10_000).convert(raw)) for _, raw in latest.values()],
            ),
            table=self.table,
            operation="upsert",
        )

    def clear(self, company_id: int, entity: str, ids: list[Any]) -> None:
        """Rows (by YClients id) that converted this time are no longer refused."""
        keys = [f"id:{ident}" for ident in ids]
        if keys:
            self.delete({"company_id": company_id, "entity": entity, "row_key__in": keys})


class SyncPendingRecordRepository(Repository):
    table = "sync_pending_records"
    columns = frozenset({"company_id", "yclients_id", "reason", "raw", "first_seen_at", "last_tried_at", "tries"})
    key = ("company_id", "yclients_id")
    json_columns = frozenset({"raw"})

    def hold(self, company_id: int, pending: list[tuple[int, str, Any]]) -> None:
        """Records (YClients id, reason, raw) to try again later; a record held before counts one more try."""
        if not pending:
            return
        ids, reasons, raws = zip(*pending, strict=True)
        run(
            "INSERT INTO sync_pending_records (company_id, yclients_id, reason, raw)"
            " SELECT %s, id, reason, raw FROM unnest(%s::bigint[], %s::text[], %s::jsonb[]) AS r(id, reason, raw)"
            " ON CONFLICT (company_id, yclients_id) DO UPDATE SET reason = excluded.reason, raw = excluded.raw,"
            " last_tried_at = now(), tries = sync_pending_records.tries + 1",
            (company_id, list(ids), list(reasons), [Jsonb(JsonSafe().convert(raw)) for raw in raws]),
            table=self.table,
            operation="upsert",
        )

    def waiting(self, company_id: int) -> list[Any]:
        """The raw records a company's sync holds, in YClients id order."""
        return [row["raw"] for row in self.find_many({"company_id": company_id}, order_by=["yclients_id"])]

    def release(self, company_id: int, yclients_ids: list[int]) -> None:
        """Records saved at last are no longer held."""
        if yclients_ids:
            self.delete({"company_id": company_id, "yclients_id__in": yclients_ids})
