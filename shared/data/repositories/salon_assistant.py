"""`salon_assistant`: each salon's own words and information for the assistant (set with `fleet salon set`)."""

from __future__ import annotations

from shared.core.db import Connection
from shared.data.models import SalonAssistantIn
from shared.data.repository import Repository, Row


class SalonAssistantRepository(Repository):
    table = "salon_assistant"
    columns = frozenset({"company_id", "information", "service_words", "master_words", "created_at", "updated_at"})
    key = ("company_id",)
    model = SalonAssistantIn
    json_columns = frozenset({"information", "service_words", "master_words"})

    def of(self, company_id: int, *, conn: Connection | None = None) -> Row:
        """The salon's settings; empty ones where none were set."""
        row = self.find_one({"company_id": company_id}, conn=conn)
        return row or {"company_id": company_id, "information": {}, "service_words": {}, "master_words": {}}
