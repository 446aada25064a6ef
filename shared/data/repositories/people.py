"""Clients: one per YClients id, or per canonical phone for clients first met in a chat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.core.db import Connection, queue, run
from shared.data.errors import ValidationFailedError
from shared.data.models import ClientIn
from shared.data.phones import InvalidPhoneError, normalize_phone
from shared.data.repository import Repository, Row

BY_PHONE = (
    "SELECT * FROM clients WHERE company_id = %s AND phone = %s AND deleted_at IS NULL"
    " ORDER BY (yclients_id IS NULL), updated_at DESC LIMIT 1"
)


class ClientRepository(Repository):
    table = "clients"
    columns = frozenset(
        {
            "id",
            "company_id",
            "yclients_id",
            "name",
            "phone",
            "email",
            "discount",
            "first_visit_at",
            "last_visit_at",
            "sold_amount",
            "visits_count",
            "synced_at",
            "sync_hash",
            "deleted_at",
            "created_at",
            "updated_at",
        }
    )
    key = ("company_id", "yclients_id")
    model = ClientIn

    def _phone(self, phone: str | int) -> str:
        try:
            return normalize_phone(phone)
        except InvalidPhoneError as exc:
            raise ValidationFailedError("client", [("phone", str(exc))], table=self.table, operation="select") from None

    def find_by_phone(self, company_id: int, phone: str | int, *, conn: Connection | None = None) -> Row | None:
        """The client with this phone in any format; the YClients-known one first, then the newest."""
        rows = run(BY_PHONE, (company_id, self._phone(phone)), table=self.table, operation="select", conn=conn)
        return rows[0] if rows else None

    def find_by_phone_later(self, company_id: int, phone: str | int, *, conn: Connection) -> Callable[[], Row | None]:
        """`find_by_phone`, read when the returned function is called (on a `pipelined` connection, together
        with the statements queued before it)."""
        rows = queue(BY_PHONE, (company_id, self._phone(phone)), table=self.table, operation="select", conn=conn)
        return lambda: next(iter(rows()), None)

    def search_by_name(
        self, company_id: int, text: str, *, limit: int = 20, conn: Connection | None = None
    ) -> list[Row]:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").strip() + "%"
        return self.find_many(
            {"company_id": company_id, "name__ilike": pattern, "deleted_at__is_null": True},
            order_by=["name"],
            limit=limit,
            conn=conn,
        )

    def find_or_create_by_phone(
        self, company_id: int, phone: str | int, name: str | None = None, *, conn: Connection | None = None
    ) -> Row:
        """The client for a chat; created once even when two workers ask at the same moment."""
        existing = self.find_by_phone(company_id, phone, conn=conn)
        if existing is not None:
            return existing
        return self.create_by_phone(company_id, phone, name, conn=conn)

    def create_by_phone(
        self, company_id: int, phone: str | int, name: str | None = None, *, conn: Connection | None = None
    ) -> Row:
        """The chat's client, created (or, when another worker created it a moment ago, that one): for a caller
        that has just looked it up and found none."""
        values: dict[str, Any] = self.validate({"company_id": company_id, "phone": phone, "name": name})
        rows = run(
            "INSERT INTO clients (company_id, phone, name) VALUES (%(company_id)s, %(phone)s, %(name)s)"
            " ON CONFLICT (company_id, phone) WHERE yclients_id IS NULL AND deleted_at IS NULL"
            " DO UPDATE SET name = COALESCE(clients.name, EXCLUDED.name) RETURNING *",
            {"name": None, **values},
            table=self.table,
            operation="upsert",
            conn=conn,
        )
        return rows[0]
