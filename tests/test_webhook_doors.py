"""YClients webhooks are safe per salon: each salon's own secret opens only its own door (never from the query
string), every refusal reads the same, a record's webhooks while its event waits make one task, a salon's reads
are limited and wait for the fleet's own CRM writes, stored events keep ids only and go after their retention.

Against the real health service (over HTTP) and the real database and Redis.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from shared.core.settings import RetentionSettings, Settings, load_settings
from shared.data.repositories.calendar import BookingRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.webhook_events import WebhookEventRepository, secret_hash
from shared.data.retention import apply_retention
from shared.health.server import make_server
from shared.yclients.webhooks import Applied, apply_event, drive_due_events, open_door
from tests.support.seed import COMPANY, booking
from workers.cli.webhooks import webhook_secret

OTHER = COMPANY + 1  # a second salon the fleet serves
READS_PER_MINUTE = 3
PHONE, NAME = "+79995554433", "Светлана Кузнецова"
REFUSED = {"error": "refused"}


@dataclass
class Doors:
    url: str  # http://127.0.0.1:<port>/yclients/webhook
    port: int
    settings: Settings
    enqueued: list[int] = field(default_factory=list)


def set_secret(settings: Settings, company: int, action: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What an operator runs: `fleet webhook-secret ACTION --company ID`; returns the secret it printed."""
    assert webhook_secret(argparse.Namespace(action=action, company=company), settings) == 0
    return capsys.readouterr().out.splitlines()[1]


@pytest.fixture
def doors(salon: psycopg.Connection, clean_redis: str) -> Iterator[Doors]:
    settings = load_settings(
        redis_url=clean_redis,
        yclients={"company_ids": [COMPANY, OTHER], "webhook_reads_per_minute": READS_PER_MINUTE},
    )
    enqueued: list[int] = []
    with make_server(settings, port=0, enqueue_webhook=enqueued.append).running() as server:
        port = server.server_address[1]
        yield Doors(f"http://127.0.0.1:{port}/yclients/webhook", port, settings, enqueued)


def event(company: int = COMPANY, resource_id: int = 501, status: str = "update", **data: object) -> bytes:
    body = {"company_id": company, "resource": "record", "resource_id": resource_id, "status": status, "data": data}
    return json.dumps(body, ensure_ascii=False).encode()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM yclients_webhook_events").fetchone()[0]


def test_a_salons_secret_opens_its_own_door_only(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    mine, theirs = set_secret(doors.settings, COMPANY, "set", capsys), set_secret(doors.settings, OTHER, "set", capsys)
    assert mine != theirs
    assert len(mine) >= 40
    hashes = [row[0] for row in salon.execute("SELECT secret_hash FROM yclients_webhook_secrets")]
    assert sorted(hashes) == sorted([secret_hash(mine), secret_hash(theirs)]), "stored hashed, never as they are"

    assert post(f"{doors.url}/{COMPANY}/{mine}", event(resource_id=1)) == (202, {"accepted": True})
    assert post(doors.url, event(resource_id=2), {"X-Fleet-Webhook-Secret": mine}) == (202, {"accepted": True})
    assert post(f"{doors.url}/{COMPANY}", event(resource_id=3), {"X-Fleet-Webhook-Secret": mine})[0] == 202
    assert post(f"{doors.url}/{OTHER}/{theirs}", event(OTHER, resource_id=4))[0] == 202
    assert len(doors.enqueued) == 4

    assert post(f"{doors.url}/{OTHER}/{mine}", event(OTHER, resource_id=5)) == (403, REFUSED), "another salon's door"
    assert post(doors.url, event(OTHER, resource_id=6), {"X-Fleet-Webhook-Secret": mine}) == (403, REFUSED), (
        "an event of another salon through my door"
    )
    assert post(f"{doors.url}/{COMPANY}/{theirs}", event(resource_id=7)) == (403, REFUSED)
    assert stored(salon) == 4
    assert len(doors.enqueued) == 4


def test_a_secret_in_the_query_string_is_refused_even_the_right_one(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = set_secret(doors.settings, COMPANY, "set", capsys)
    assert post(f"{doors.url}?secret={secret}", event()) == (403, REFUSED)
    assert post(f"{doors.url}/{COMPANY}?secret={secret}", event()) == (403, REFUSED)
    assert post(f"{doors.url}/{COMPANY}/{secret}?secret={secret}", event()) == (403, REFUSED)
    assert stored(salon) == 0
    assert doors.enqueued == []


def test_every_refusal_reads_the_same_and_only_the_log_says_why(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = set_secret(doors.settings, COMPANY, "set", capsys)
    revoked = set_secret(doors.settings, OTHER, "set", capsys)
    webhook_secret(argparse.Namespace(action="revoke", company=OTHER), doors.settings)
    caplog.set_level(logging.INFO)
    answers = {
        "wrong secret": post(f"{doors.url}/{COMPANY}/{'x' * 43}", event()),
        "unknown salon": post(f"{doors.url}/777001/{secret}", event(777001)),
        "salon not served, its own secret": post(doors.url, event(777001), {"X-Fleet-Webhook-Secret": secret}),
        "no secret": post(doors.url, event()),
        "no secret, salon in path": post(f"{doors.url}/{COMPANY}", event()),
        "revoked secret": post(f"{doors.url}/{OTHER}/{revoked}", event(OTHER)),
        "not a webhook path": post(f"{doors.url}/{COMPANY}/{secret}/more", event()),
        "two different secrets": post(f"{doors.url}/{COMPANY}/{secret}", event(), {"X-Fleet-Webhook-Secret": "y" * 43}),
    }
    assert all(answer == (403, REFUSED) for answer in answers.values()), answers
    bad_body = post(f"{doors.url}/{COMPANY}/{secret}", b"[1, 2]")
    assert bad_body == (400, REFUSED), "a bad body: its own status code, the same text"
    assert stored(salon) == 0
    logged = caplog.text
    assert "webhook refused" in logged
    assert secret not in logged, "the detail is logged, never a secret"
    assert revoked not in logged


def test_the_secret_is_checked_before_any_of_the_body_is_read(doors: Doors, salon: psycopg.Connection) -> None:
    head = (
        f"POST /yclients/webhook/{COMPANY}/{'z' * 43} HTTP/1.1\r\nHost: fleet\r\nContent-Length: {200 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", doors.port), timeout=10) as sock:
        sock.sendall(head.encode())  # and not a byte of the body
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert b"connection: close" in answer.lower()


def test_webhooks_for_one_record_while_its_event_waits_make_one_task(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{doors.url}/{COMPANY}/{set_secret(doors.settings, COMPANY, 'set', capsys)}"
    assert post(url, event(resource_id=901, status="create"))[0] == 202
    assert post(url, event(resource_id=901, status="update", comment="changed"))[0] == 200, "folded in"
    assert post(url, event(resource_id=901, status="update", comment="again"))[0] == 200
    assert len(doors.enqueued) == 1, "one task for the record, whatever the bodies"
    assert salon.execute("SELECT action, repeats FROM yclients_webhook_events").fetchall() == [("update", 2)]

    events = WebhookEventRepository()
    claimed = events.claim(doors.enqueued[0], 60)
    assert claimed is not None
    assert post(url, event(resource_id=901))[0] == 202, "read already started: a later change is a new event"
    assert len(doors.enqueued) == 2
    events.finish(claimed["id"])
    assert post(url, event(resource_id=901))[0] == 200, "folded into the new waiting event"
    assert len(doors.enqueued) == 2


def test_a_salons_reads_are_limited_and_the_rest_wait_for_the_sweep(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = f"{doors.url}/{COMPANY}/{set_secret(doors.settings, COMPANY, 'set', capsys)}"
    calm = f"{doors.url}/{OTHER}/{set_secret(doors.settings, OTHER, 'set', capsys)}"
    for record in range(1, 8):
        assert post(busy, event(resource_id=record)) == (202, {"accepted": True}), "accepted and stored all the same"
    assert post(calm, event(OTHER, resource_id=1))[0] == 202
    assert stored(salon) == 8
    companies = dict(salon.execute("SELECT id, company_id FROM yclients_webhook_events").fetchall())
    sent = [companies[event_id] for event_id in doors.enqueued]
    assert sent.count(COMPANY) == READS_PER_MINUTE, "the busy salon's reads stop at its limit"
    assert sent.count(OTHER) == 1, "another salon is not held up"

    salon.execute("UPDATE yclients_webhook_events SET next_attempt_at = now() - interval '2 minutes'")
    resent: list[int] = []
    assert drive_due_events(doors.settings, resent.append) == (1, 7), "the sweep keeps the limit too"
    assert [companies[event_id] for event_id in resent] == [OTHER]


class GoneRecords:
    """YClients answering every record read with 404 (the targeted sync marks it deleted)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def one(self, path: str) -> None:
        self.calls.append(path)


def test_a_records_read_waits_while_a_crm_write_of_it_is_pending(salon: psycopg.Connection) -> None:
    settings = load_settings(yclients={"company_ids": [COMPANY]}).yclients
    booking_id = BookingRepository().create(booking(yclients_id=4401, source="assistant"))["id"]
    operation = CrmOperationRepository().add(COMPANY, booking_id, "reschedule", chat_id=None)
    events = WebhookEventRepository()
    event_id = events.store(COMPANY, "record", 4401, "update")
    assert event_id is not None
    client = GoneRecords()

    waited = apply_event(event_id, client, settings)  # type: ignore[arg-type]
    assert waited.outcome is Applied.WAITING
    assert client.calls == [], "no read ahead of the fleet's own write"
    attempts, due_in = salon.execute(
        "SELECT attempts, extract(epoch FROM next_attempt_at - now()) FROM yclients_webhook_events"
    ).fetchone()
    assert attempts == 0, "waiting counts no attempt"
    assert due_in > settings.webhook_crm_wait_seconds - 5

    CrmOperationRepository().finish(operation, outcome="moved")
    salon.execute("UPDATE yclients_webhook_events SET next_attempt_at = now()")
    assert apply_event(event_id, client, settings).outcome is Applied.DONE  # type: ignore[arg-type]
    assert client.calls == [f"record/{COMPANY}/4401"]


def test_the_stored_event_keeps_ids_only_no_phone_or_name(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{doors.url}/{COMPANY}/{set_secret(doors.settings, COMPANY, 'set', capsys)}"
    assert post(url, event(resource_id=77, client={"name": NAME, "phone": PHONE}))[0] == 202
    rejected = {"company_id": COMPANY, "resource": "record", "status": "update", "data": {"name": NAME, "phone": PHONE}}
    assert post(url, json.dumps(rejected, ensure_ascii=False).encode())[0] == 400
    rows = json.dumps(
        salon.execute("SELECT row_to_json(e) FROM yclients_webhook_events e").fetchall()
        + salon.execute("SELECT row_to_json(d) FROM dead_letters d").fetchall(),
        ensure_ascii=False,
    )
    assert '"resource_id": 77' in rows
    for personal in (PHONE, PHONE[1:], NAME, NAME.split()[0]):
        assert personal not in rows


def test_retention_removes_old_handled_events_and_never_a_waiting_one(salon: psycopg.Connection) -> None:
    events = WebhookEventRepository()
    ids = [events.store(COMPANY, "record", record, "update") for record in (1, 2, 3, 4)]
    assert None not in ids
    old_done, old_failed, new_done, old_pending = ids
    events.finish(old_done)
    events.give_up(old_failed, "YClientsError: 403")
    events.finish(new_done)
    salon.execute(
        "UPDATE yclients_webhook_events SET received_at = now() - interval '30 days',"
        " finished_at = CASE WHEN id = %s THEN now() - interval '1 day' ELSE finished_at - interval '20 days' END",
        (new_done,),
    )
    deleted = apply_retention(RetentionSettings(webhook_events_days=14))
    assert deleted["yclients_webhook_events"] == 2
    left = sorted(row[0] for row in salon.execute("SELECT id FROM yclients_webhook_events"))
    assert left == sorted([new_done, old_pending])


def test_a_rotated_secret_keeps_the_old_one_for_its_grace_and_revoke_closes_the_door(
    doors: Doors, salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    first = set_secret(doors.settings, COMPANY, "set", capsys)
    second = set_secret(doors.settings, COMPANY, "rotate", capsys)
    assert post(f"{doors.url}/{COMPANY}/{first}", event(resource_id=1))[0] == 202, "the old one, in its grace"
    assert post(f"{doors.url}/{COMPANY}/{second}", event(resource_id=2))[0] == 202
    third = set_secret(doors.settings, COMPANY, "set", capsys)
    for gone in (first, second):
        assert post(f"{doors.url}/{COMPANY}/{gone}", event(resource_id=3)) == (403, REFUSED), "set ends the others"
    assert post(f"{doors.url}/{COMPANY}/{third}", event(resource_id=3))[0] == 202
    webhook_secret(argparse.Namespace(action="revoke", company=COMPANY), doors.settings)
    assert post(f"{doors.url}/{COMPANY}/{third}", event(resource_id=4)) == (403, REFUSED)


def test_the_fleet_wide_secret_serves_only_salons_without_their_own_and_never_in_production(
    salon: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy = "an-old-fleet-wide-webhook-secret"
    settings = load_settings(yclients={"company_ids": [COMPANY, OTHER], "webhook_secret": legacy})
    assert open_door(settings, legacy, OTHER) is not None, "outside production, during the migration"
    set_secret(settings, OTHER, "set", capsys)
    assert open_door(settings, legacy, OTHER) is None, "a salon with its own secret is closed to the old one"
    assert open_door(settings, legacy, 777001) is None, "never a salon the fleet does not serve"
    production = settings.model_copy(update={"environment": "production"})
    assert open_door(production, legacy, COMPANY) is None
