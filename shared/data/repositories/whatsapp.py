"""The gateway's WhatsApp tables: the fleet reads them and prunes keys, it never rewrites a value."""

from __future__ import annotations

from shared.core.db import Connection
from shared.data.repository import Repository, Row


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
