"""The seed salon: a small, readable company with its services and staff, written through the repositories,
and chat messages to it as a gateway sends them. Tests and benchmarks seed the same salon."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.data.repositories.catalogue import (
    CompanyRepository,
    ServiceCategoryRepository,
    ServiceRepository,
    StaffRepository,
)

COMPANY = 962302


def seed_salon(company_id: int = COMPANY) -> None:
    CompanyRepository().upsert({"id": company_id, "title": "Лиса", "city": "Москва"})
    ServiceCategoryRepository().upsert({"company_id": company_id, "id": 10, "title": "Стрижки"})
    ServiceCategoryRepository().upsert({"company_id": company_id, "id": 20, "title": "Маникюр"})
    ServiceRepository().bulk_upsert(
        [
            {
                "company_id": company_id,
                "id": 101,
                "category_id": 10,
                "title": "Женская стрижка",
                "price_min": Decimal("1500"),
                "price_max": Decimal("2500"),
                "duration_seconds": 3600,
            },
            {
                "company_id": company_id,
                "id": 102,
                "category_id": 10,
                "title": "Мужская стрижка",
                "price_min": Decimal("900"),
                "duration_seconds": 1800,
            },
            {
                "company_id": company_id,
                "id": 201,
                "category_id": 20,
                "title": "Маникюр с покрытием",
                "price_min": Decimal("2000"),
                "duration_seconds": 5400,
            },
            {"company_id": company_id, "id": 202, "category_id": 20, "title": "Архивная услуга", "active": False},
        ]
    )
    StaffRepository().bulk_upsert(
        [
            {"company_id": company_id, "id": 1, "name": "Анна", "service_ids": [101, 102]},
            {"company_id": company_id, "id": 2, "name": "Мария", "service_ids": [201]},
            {"company_id": company_id, "id": 3, "name": "Уволенная", "fired": True},
        ]
    )


def chat_message(company: int, chat: str, n: int, text: str = "Сколько стоит стрижка?") -> dict[str, object]:
    """The n-th inbound payload of a chat, as a gateway sends it: a unique message id, sent n ms from now
    (so the chat's messages keep the order they were made in)."""
    return {
        "company_id": company,
        "chat_id": chat,
        "gateway_message_id": f"wamid.{company}.{chat}.{n}.{time.time()}",
        "text": text,
        "sent_at": (datetime.now(UTC) + timedelta(milliseconds=n)).isoformat(),
    }
