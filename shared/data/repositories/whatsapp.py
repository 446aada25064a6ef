"""The gateway's WhatsApp tables: the fleet reads them and prunes keys, it never rewrites a value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from shared.core.db import Connection, run
from shared.data.repository import Repository, Row


@dataclass(frozen=True)
class Deletable:
    """Which keys of one type may go: expired ones (`idle_days` None) or those idle for `idle_days`, never the
    protected ids."""

    key_type: str
    idle_days: int | None
    protected: tuple[str, ...] = ()

    def condition(self) -> tuple[sql.Composable, tuple[Any, ...]]:
        if self.idle_days is None:
            condition = sql.SQL("key_type = %s AND expires_at < now()")
            params: tuple[Any, ...] = (self.key_type,)
        else:
            condition = sql.SQL("key_type = %s AND updated_at < now() - make_interval(days => %s)")
            params = (self.key_type, self.idle_days)
        if self.protected:
            condition = condition + sql.SQL(" AND key_id <> ALL(%s)")
            params = (*params, list(self.protected))
        return condition, params


class WhatsAppAuthRepository(Repository):
    table = "whatsapp_auth"
    columns = frozenset({"company_id", "creds", "created_at", "updated_at"})
    key = ("company_id",)

    def for_company(self, company_id: str, *, conn: Connection | None = None) -> Row | None:
        return self.find_one({"company_id": company_id}, conn=conn)


class WhatsAppKeysRepository(Repository):
    table = "whatsapp_keys"
    columns = frozenset({"company_id", "key_type", "key_id", "value", "created_at", "updated_at", "expires_at"})
    key = ("company_id", "key_type", "key_id")
    json_columns = frozenset({"value"})

    def count_deletable(self, rule: Deletable) -> dict[str, int]:
        """Per company, how many keys the rule would delete."""
        condition, params = rule.condition()
        query = sql.SQL("SELECT company_id, count(*) AS n FROM whatsapp_keys WHERE {} GROUP BY company_id")
        rows = run(query.format(condition), params, table=self.table, operation="select")
        return {row["company_id"]: row["n"] for row in rows}

    def session_stats(self) -> dict[str, dict[str, Any]]:
        """Per company with an auth row or keys: key counts by type, expired keys, hours since the last write."""
        rows = run(
            """
            WITH companies AS (
                SELECT company_id FROM whatsapp_auth UNION SELECT DISTINCT company_id FROM whatsapp_keys
            ), counts AS (
                SELECT company_id, key_type, count(*) AS n, count(*) FILTER (WHERE expires_at < now()) AS expired,
                       max(updated_at) AS last_update
                  FROM whatsapp_keys GROUP BY company_id, key_type
            )
            SELECT c.company_id,
                   EXISTS (SELECT 1 FROM whatsapp_auth a WHERE a.company_id = c.company_id) AS has_auth,
                   coalesce(jsonb_object_agg(k.key_type, k.n) FILTER (WHERE k.key_type IS NOT NULL), '{}') AS by_type,
                   coalesce(sum(k.n), 0)::bigint AS total,
                   coalesce(sum(k.expired), 0)::bigint AS expired,
                   extract(epoch FROM now() - max(k.last_update)) / 3600 AS hours_since_update
              FROM companies c LEFT JOIN counts k USING (company_id)
             GROUP BY c.company_id
            """,
            table=self.table,
            operation="select",
        )
        return {
            row["company_id"]: {
                "has_auth": row["has_auth"],
                "by_type": row["by_type"],
                "total": int(row["total"]),
                "expired": int(row["expired"]),
                "hours_since_update": None if row["hours_since_update"] is None else float(row["hours_since_update"]),
            }
            for row in rows
        }
