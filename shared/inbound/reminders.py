"""Reminders before visits, for bookings from any source: each one written to the reply outbox once, with the
dialog set to read the client's answer (1 or "буду" confirms, in YClients too; 2 or "не смогу" asks before
cancelling)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shared.assistant import notices
from shared.assistant.tools import SalonTools
from shared.core.db import transaction
from shared.core.locks import LockClass, transaction_lock
from shared.core.settings import Settings
from shared.data.repositories.catalogue import CompanyRepository
from shared.data.repositories.people import ClientRepository
from shared.data.repositories.reminders import ReminderRepository
from shared.inbound.outbox import write_notice
from shared.inbound.store import chat_key

log = logging.getLogger(__name__)


def send_due_reminders(settings: Settings, now: datetime | None = None) -> list[int]:
    """Write every due reminder to the outbox; returns the new outbox rows, for delivery."""
    now = now or datetime.now(UTC)
    inbound = settings.inbound
    written: list[int] = []
    reminders = ReminderRepository()
    for due in reminders.due(inbound.reminder_evening_time, inbound.reminder_hours_before, now):
        booking_id, kind, chat = due["id"], due["kind"], due["chat_id"]
        with transaction() as conn:
            # Under the chat's answering lock: the dialog state set here is not overwritten by a drain in flight.
            transaction_lock(LockClass.ANSWER_CHAT, chat_key(due["company_id"], chat), table="messages", conn=conn)
            if not reminders.claim(booking_id, kind, conn=conn):
                continue  # another run sent it meanwhile
            company = CompanyRepository().get({"id": due["company_id"]}, conn=conn)
            client = ClientRepository().get({"id": due["client_id"]}, conn=conn)
            reply = notices.reminder(SalonTools(company, client, now, chat_id=chat), due, kind)
            key = f"reminder:{booking_id}:{kind}"
            outbox_id = write_notice(
                due["company_id"], chat, key, reply.text, conn=conn, dialog=(reply.state, reply.data)
            )
            reminders.attach_reply(booking_id, kind, outbox_id, conn=conn)
        written.append(outbox_id)
    if written:
        log.info("%s reminders written", len(written))
    return written
