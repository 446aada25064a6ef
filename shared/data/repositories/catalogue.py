"""The salon's catalogue: companies, service categories, services and staff (all keyed by YClients ids)."""

from __future__ import annotations

from shared.core.db import Connection
from shared.data.models import CompanyIn, ServiceCategoryIn, ServiceIn, StaffIn
from shared.data.repository import Repository, Row

_TIMESTAMPS = {"synced_at", "deleted_at", "created_at", "updated_at"}
_SYNCED = _TIMESTAMPS | {"sync_hash"}  # tables the sync writes by COPY and merge keep a hash of what it wrote


class CompanyRepository(Repository):
    table = "companies"
    columns = frozenset({"id", "title", "city", "timezone_name", "address", "phone", "is_active"} | _SYNCED)
    model = CompanyIn


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
