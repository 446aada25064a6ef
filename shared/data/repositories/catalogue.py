"""The salon's catalogue: companies, service categories, services and staff (all keyed by YClients ids)."""

from __future__ import annotations

from collections.abc import Callable

from shared.core.db import Connection, queue
from shared.data.errors import NotFoundError
from shared.data.models import CompanyIn, ServiceCategoryIn, ServiceIn, StaffIn
from shared.data.repository import Repository, Row

_TIMESTAMPS = {"synced_at", "deleted_at", "created_at", "updated_at"}
_SYNCED = _TIMESTAMPS | {"sync_hash"}  # tables the sync writes by COPY and merge keep a hash of what it wrote


class CompanyRepository(Repository):
    table = "companies"
    columns = frozenset({"id", "title", "city", "timezone_name", "address", "phone", "is_active"} | _SYNCED)
    model = CompanyIn

    def get_later(self, company_id: int, *, conn: Connection) -> Callable[[], Row]:
        """The salon's row, read when the returned function is called (see `shared.core.db.queue`); the reading
        raises `NotFoundError` as `get` does."""
        rows = queue(
            "SELECT * FROM companies WHERE id = %s", (company_id,), table=self.table, operation="select", conn=conn
        )

        def row() -> Row:
            found = rows()
            if not found:
                raise NotFoundError(f"no companies row has id {company_id}", table=self.table, operation="select")
            return found[0]

        return row


class ServiceCategoryRepository(Repository):
    table = "service_categories"
    columns = frozenset({"company_id", "id", "title", "weight"} | _TIMESTAMPS)
    key = ("company_id", "id")
    model = ServiceCategoryIn


class ServiceRepository(Repository):
    table = "services"
    columns = frozenset(
        {
            "company_id",
            "id",
            "category_id",
            "title",
            "price_min",
            "price_max",
            "duration_seconds",
            "comment",
            "weight",
            "active",
        }
        | _SYNCED
    )
    key = ("company_id", "id")
    model = ServiceIn

    def active(self, company_id: int, *, conn: Connection | None = None) -> list[Row]:
        return self.find_many(
            {"company_id": company_id, "active": True, "deleted_at__is_null": True},
            order_by=["weight", "title"],
            conn=conn,
        )

    def by_category(self, company_id: int, category_id: int, *, conn: Connection | None = None) -> list[Row]:
        return self.find_many(
            {"company_id": company_id, "category_id": category_id, "active": True, "deleted_at__is_null": True},
            order_by=["weight", "title"],
            conn=conn,
        )


class StaffRepository(Repository):
    table = "staff"
    columns = frozenset(
        {"company_id", "id", "name", "specialization", "position_title", "avatar_url", "fired", "hidden", "service_ids"}
        | _SYNCED
    )
    key = ("company_id", "id")
    model = StaffIn

    def bookable(self, company_id: int, *, conn: Connection | None = None) -> list[Row]:
        """Staff a client can book: not fired, not hidden, not deleted upstream."""
        return self.find_many(
            {"company_id": company_id, "fired": False, "hidden": False, "deleted_at__is_null": True},
            order_by=["name"],
            conn=conn,
        )

    def bookable_later(self, company_id: int, *, conn: Connection) -> Callable[[], list[Row]]:
        """`bookable`, read when the returned function is called (see `shared.core.db.queue`)."""
        return queue(
            "SELECT * FROM staff WHERE company_id = %s AND fired = false AND hidden = false AND deleted_at IS NULL"
            " ORDER BY name",
            (company_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
