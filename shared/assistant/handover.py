"""A chat handed to a person: the client asked for the salon's administrator (or complained), so automatic
answers stop in that chat for `FLEET_INBOUND__HANDOVER_MINUTES`, the operators' alert channel tells the salon,
and the client is told. Messages meanwhile are kept (status `held`) for the administrator to read. The chat
comes back to the assistant when the time is up, or at once with `fleet handover end`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.alerts.delivery import raise_alert
from shared.assistant import Reply
from shared.assistant.notices import salon_name
from shared.assistant.tools import SalonTools
from shared.core.db import transaction
from shared.core.settings import get_settings
from shared.data.phones import masked_phone
from shared.data.repositories.conversations import DialogContextRepository

STATE = "handover"


def hand_over(tools: SalonTools, now: datetime, reason: str) -> Reply:
    minutes = get_settings().inbound.handover_minutes
    until = now + timedelta(minutes=minutes)
    chat = tools.chat_id or ""
    title = salon_name(tools.company)
    raise_alert(
        f"handover:{tools.company_id}:{chat}:{now.isoformat()}",
        "handover",
        f"Салон {title} ({tools.company_id}): клиент {masked_phone(chat)} {reason}. Автоответы в этом чате"
        f" выключены до {tools.local(until):%d.%m %H:%M}. Номер и переписка: fleet handover list --company"
        f" {tools.company_id}; вернуть чат помощнику: fleet handover end --company {tools.company_id} --chat <номер>",
    )
    text = (
        "Передаю ваш вопрос администратору салона: он ответит вам здесь, в этом чате, как только сможет."
        f" До {tools.local(until):%H:%M} я не буду отвечать автоматически, чтобы не мешать."
    )
    return Reply(text, STATE, {"until": until.isoformat()})


def handed_over(state: str, data: dict[str, Any], now: datetime) -> bool:
    """The chat is with a person now (its automatic answers are paused)."""
    if state != STATE or not data.get("until"):
        return False
    try:
        return datetime.fromisoformat(data["until"]) > now
    except (TypeError, ValueError):
        return False


def tell_salon_late(tools: SalonTools, now: datetime, booking: dict[str, Any] | None) -> None:
    """ "Опаздываю на 10 минут": the salon hears it through the operators' channel, keyed once per message."""
    chat = tools.chat_id or ""
    title = salon_name(tools.company)
    visit = f" (запись на {tools.local(booking['starts_at']):%d.%m %H:%M})" if booking else ""
    raise_alert(
        f"late:{tools.company_id}:{chat}:{now.isoformat()}",
        "late",
        f"Салон {title} ({tools.company_id}): клиент {masked_phone(chat)} предупреждает, что опаздывает{visit}.",
    )


def chats_with_people(company_id: int | None = None) -> list[dict[str, Any]]:
    """Chats whose automatic answers are paused, newest first (for `fleet handover list`)."""
    filters: dict[str, Any] = {"state": STATE}
    if company_id is not None:
        filters["company_id"] = company_id
    return DialogContextRepository().find_many(filters, order_by=["-updated_at"])


def hand_back(company_id: int, chat_id: str) -> bool:
    """The assistant answers the chat again (`fleet handover end`); False when it was not handed over."""
    with transaction():
        row = DialogContextRepository().load(company_id, chat_id)
        if row is None or row["state"] != STATE:
            return False
        DialogContextRepository().set_state(company_id, chat_id, "idle", {})
    return True
