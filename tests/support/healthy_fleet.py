"""A fleet whose every part reports healthy, with one client and one dead letter holding personal data: the
starting point of the health and alert tests, which then break one part and check what operators see."""

from __future__ import annotations

import json

import psycopg

from shared.data.repositories.people import ClientRepository
from shared.yclients.sync import ENTITIES
from tests.support.seed import COMPANY

PHONE, NAME, TEXT = "+79115550101", "Зинаида Тестова", "секретный текст сообщения"


def make_healthy(db: psycopg.Connection) -> None:
    db.execute("INSERT INTO health_checks (check_name, subject, status) VALUES ('heartbeat', 'keys@test', 'healthy')")
    db.execute(
        "INSERT INTO backups (status, finished_at, size_bytes, sha256, path) VALUES"
        " ('verified', now() - interval '2 hours', 123456, repeat('a', 64), '/backups/fleet.dump')"
    )
    for entity in ENTITIES:
        db.execute(
            "INSERT INTO sync_runs (company_id, entity, status, finished_at) VALUES (%s, %s, 'succeeded', now())",
            (COMPANY, entity),
        )
    db.execute(
        "INSERT INTO health_checks (check_name, subject, status) VALUES"
        f" ('whatsapp_session', 'company_{COMPANY}', 'healthy')"
    )
    ClientRepository().insert({"company_id": COMPANY, "phone": PHONE, "name": NAME})
    db.execute(
        "INSERT INTO dead_letters (source, reason, payload) VALUES ('inbound.receive', 'invalid payload: x', %s)",
        (json.dumps({"chat_id": PHONE, "text": TEXT}),),
    )
