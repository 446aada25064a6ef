"""The inbound message payload: the contract with every producer, in any language (README has its schema).

One strict validation decides what may be stored, so nothing that passes can be refused by PostgreSQL later:
numbers are JSON integers (never booleans, floats or text), identifiers are bounded and free of NUL,
surrogates and control characters, and `sent_at` is an ISO 8601 string with an offset. Free text (the
message and a media description) is cleaned instead of refused, so the client still gets an answer: a NUL
is removed, a lone surrogate becomes U+FFFD, and `input_notes` says what was changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    model_validator,
)

from shared.core.storable import BIGINT_MAX, clean_text, text_problem
from shared.core.topology import TaskName
from shared.data.models import Phone

TASK_NAME = TaskName.RECEIVE_MESSAGE  # the task every producer sends this payload to
MAX_TEXT_CHARS = 16_384
MAX_CHAT_ID_CHARS = 100
MAX_SENT_AT_CHARS = 64

# WhatsApp ids as gateways send them: "<phone>[:device]@s.whatsapp.net" (Baileys) or "<phone>@c.us" (whatsapp-web.js).
PHONE_SERVERS = frozenset({"s.whatsapp.net", "c.us"})
REFUSED_SERVERS = {
    "g.us": "is a group chat; only one-to-one chats are answered",
    "lid": "is a WhatsApp LID, not a phone number; the gateway must send the phone JID",
    "broadcast": "is a broadcast or status chat",
    "newsletter": "is a WhatsApp channel",
}


def _identifier(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("contains control characters")
    return value


def _chat_phone(value: Any) -> Any:
    """A phone number from a number, a phone string or a WhatsApp JID; anything else is refused by name."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a phone number or a WhatsApp id (a string or an integer)")
    if isinstance(value, int):
        if value <= 0 or value.bit_length() > 64:
            raise ValueError("is not a phone number")
        return str(value)
    if len(value) > MAX_CHAT_ID_CHARS:
        raise ValueError(f"is longer than {MAX_CHAT_ID_CHARS} characters")
    value = _identifier(value.strip())
    if "@" not in value:
        return value
    user, _, server = value.rpartition("@")
    if server in REFUSED_SERVERS:
        raise ValueError(REFUSED_SERVERS[server])
    if server not in PHONE_SERVERS:
        raise ValueError("is a WhatsApp id of an unknown server")
    phone = user.split(":", 1)[0].split("_", 1)[0]  # drop the device and agent parts
    if not (phone.isascii() and phone.isdigit()):
        raise ValueError("is a WhatsApp id without a phone number")
    return "+" + phone  # a JID's number is international, without the plus


def _message_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= BIGINT_MAX:
        return str(value)
    if isinstance(value, str):
        return _identifier(value)
    return value  # the strict str check names the type


def _sent_at(value: Any) -> Any:
    """ISO 8601 text with an offset (or, from Python producers, an aware datetime)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        if len(value) > MAX_SENT_AT_CHARS:
            raise ValueError(f"is longer than {MAX_SENT_AT_CHARS} characters")
        _identifier(value)
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError("is not an ISO 8601 date and time") from None
    else:
        raise ValueError("must be an ISO 8601 string with a timezone offset, e.g. 2026-11-29T10:15:00+03:00")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a timezone offset")
    return parsed


class MediaDescription(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["image", "audio", "video", "document", "sticker", "location", "contact", "other"]
    description: Annotated[str, StringConstraints(strict=True, max_length=1000)] | None = None


class InboundPayload(BaseModel):
    """One chat message as the WhatsApp gateway received it."""

    model_config = ConfigDict(extra="forbid", title="InboundMessage", str_strip_whitespace=True)

    company_id: Annotated[int, Strict(), Field(gt=0, le=BIGINT_MAX, description="YClients company id of the salon")]
    chat_id: Annotated[
        Phone,
        BeforeValidator(_chat_phone),
        Field(description="the client's phone in any format, or a WhatsApp JID such as 79991234567@s.whatsapp.net"),
    ]
    gateway_message_id: Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=200),
        BeforeValidator(_message_id),
        Field(description="unique per company; a repeat is a re-delivery and must carry the same content"),
    ]
    text: Annotated[
        str,
        StringConstraints(strict=True, max_length=MAX_TEXT_CHARS),
        BeforeValidator(lambda value: "" if value is None else value),
        Field(description="the message text; null or empty when the message is media only"),
    ] = ""
    sent_at: Annotated[datetime, BeforeValidator(_sent_at), Field(description="ISO 8601 with offset")]
    media: MediaDescription | None = None

    _input_notes: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _clean_free_text(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> InboundPayload:
        notes: list[str] = []
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("text"), str):
                data["text"], changes = clean_text(data["text"])
                notes += [f"text: {change}" for change in changes]
            media = data.get("media")
            if isinstance(media, dict) and isinstance(media.get("description"), str):
                cleaned, changes = clean_text(media["description"])
                data["media"] = {**media, "description": cleaned}
                notes += [f"media.description: {change}" for change in changes]
        model = handler(data)
        model._input_notes = notes + model._input_notes
        return model

    @model_validator(mode="after")
    def _something_to_answer(self) -> InboundPayload:
        if not self.text and self.media is None:
            raise ValueError("a message needs text or media")
        return self

    @property
    def input_notes(self) -> list[str]:
        """What validation changed in the free text (kept with the stored message)."""
        return list(self._input_notes)


def payload_json_schema() -> dict[str, Any]:
    return InboundPayload.model_json_schema()
