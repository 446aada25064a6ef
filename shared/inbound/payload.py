"""The inbound message payload: the contract with every producer, in any language (README has its schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from shared.models import Phone

TASK_NAME = "workers.inbound.receive_message"
MAX_TEXT_CHARS = 16_384


def _as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("sent_at must include a timezone offset")
    return value


class MediaDescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image", "audio", "video", "document", "sticker", "location", "contact", "other"]
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None


class InboundPayload(BaseModel):
    """One chat message as the WhatsApp gateway received it."""

    model_config = ConfigDict(extra="forbid", title="InboundMessage", str_strip_whitespace=True)

    company_id: Annotated[int, Field(gt=0, lt=2**63, description="YClients company id of the salon")]
    chat_id: Annotated[Phone, BeforeValidator(_as_text), Field(description="the client's phone, any format")]
    gateway_message_id: Annotated[
        str, StringConstraints(min_length=1, max_length=200), Field(description="unique per company; dedupes")
    ]
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] = ""
    sent_at: Annotated[datetime, AfterValidator(_aware), Field(description="ISO 8601 with offset")]
    media: MediaDescription | None = None

    @model_validator(mode="after")
    def _something_to_answer(self) -> InboundPayload:
        if not self.text and self.media is None:
            raise ValueError("a message needs text or media")
        return self


def payload_json_schema() -> dict[str, Any]:
    return InboundPayload.model_json_schema()
