"""`fleet dead-letters` run as an operator runs it (a subprocess with the fleet's environment): letters listed with
every filter and counted by reason, the spool visible beside the table, one letter shown whole, discards that need
a note, dry runs that change nothing, and replays that go back through the fleet's own path exactly once.

The end-to-end tests cause a real fault in a real inbound worker (the gateway refusing every send, an assistant
that fails on a message), mend it, replay the letter and see the client answered; a second replay changes
nothing, checked after the workers are idle.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from ops.standins.gateway import GatewayStandIn
from shared.core.kombu_contract import queue_key
from shared.core.settings import RetentionSettings
from shared.core.topology import Queue, TaskName
from shared.data.dead_letters import SPOOL_KEY, dead_letter_row, file_spooled, record_dead_letter, spool
from shared.data.retention import apply_retention
from tests.support.failing_assistant import POISON
from tests.support.payloads import inbound_payload
from tests.support.processes import INBOUND_LISTS, ROOT, running_worker, wait_for_idle, wait_until
from tests.support.seed import COMPANY
from workers.cli import main
from workers.producer import enqueue_message

CHAT = "+79110004455"
OPERATOR = os.environ.get("SUDO_USER") or getpass.getuser()


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`fleet dead-letters ARGS`, as an operator runs it on the server."""
    command = [sys.executable, "-m", "workers.cli", "dead-letters", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def listed(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The ids (or spool:N) of the letters a `list` printed, in its order."""
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("\n\n", 1)[0].splitlines()[1:]  # the header first, the counts after a blank line
    return [line.split()[0] for line in table]


def by_reason(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    counts = result.stdout.split("by reason:\n", 1)[1].splitlines()
    return {line.split(None, 1)[1]: int(line.split(None, 1)[0]) for line in counts if line.strip()}


def letter_state(db: psycopg.Connection, letter_id: int) -> tuple:
    """(replayed, discarded, history) of a letter."""
    return db.execute(
        "SELECT replayed_at IS NOT NULL, discarded_at IS NOT NULL, history FROM dead_letters WHERE id = %s",
        (letter_id,),
    ).fetchone()


def queued(redis_url: str, queue: Queue) -> int:
    return redis.Redis.from_url(redis_url).llen(queue_key(queue))


def failed_reply(db: psycopg.Connection, key: str, status: str = "failed", chat: str = CHAT) -> int:
    return db.execute(
        "INSERT INTO outbox (company_id, chat_id, idempotency_key, body, message_ids, status, attempts, last_error)"
        " VALUES (%s, %s, %s, 'Здравствуйте!', '{}', %s, 8, 'gateway answered 503') RETURNING id",
        (COMPANY, chat, key, status),
    ).fetchone()[0]


def delivery_letter(outbox_id: int) -> int:
    letter = record_dead_letter(
        "inbound.deliver",
        f"reply not delivered after 8 attempts: gateway answered 503 (outbox {outbox_id})",
        {"outbox_id": outbox_id, "chat_id": CHAT, "body": "Здравствуйте!"},
        error_type="GatewayError",
        company_id=COMPANY,
        reference=f"outbox:{outbox_id}",
    )
    assert letter is not None
    return letter


def given_up_booking(db: psycopg.Connection, outcome: str | None = None) -> int:
    """A chat booking whose CRM create was given up (its time freed), or, with `outcome`, one concluded so."""
    start = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)
    client = db.execute(
        "INSERT INTO clients (company_id, name, phone) VALUES (%s, 'Ирина', '+79110003344') RETURNING id", (COMPANY,)
    ).fetchone()[0]
    booking = db.execute(
        "INSERT INTO bookings (company_id, client_id, staff_id, starts_at, ends_at, source, crm_state, status)"
        " VALUES (%s, %s, 1, %s, %s, 'assistant', 'failed', 'cancelled') RETURNING id",
        (COMPANY, client, start, start + timedelta(hours=1)),
    ).fetchone()[0]
    return db.execute(
        "INSERT INTO crm_operations (company_id, booking_id, kind, status, attempts, last_error, outcome)"
        " VALUES (%s, %s, 'create', %s, 8, 'YClients was down all night', %s) RETURNING id",
        (COMPANY, booking, "done" if outcome else "failed", outcome),
    ).fetchone()[0]


def crm_letter(operation_id: int) -> int:
    letter = record_dead_letter(
        "yclients.push",
        f"create not confirmed after 8 attempts: YClients was down (operation {operation_id})",
        {"operation_id": operation_id, "kind": "create", "booking_id": 1},
        error_type="CrmFailed",
        company_id=COMPANY,
        reference=f"crm_operation:{operation_id}",
    )
    assert letter is not None
    return letter


# ---- list, show, discard ---------------------------------------------------------------------------------------


def test_list_filters_counts_by_reason_and_shows_the_spool(
    salon: psycopg.Connection, fleet_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    unserved_1 = record_dead_letter("inbound.receive", "company 1 is not served", {"x": 1}, company_id=1)
    unserved_2 = record_dead_letter("inbound.receive", "company 2 is not served", {"x": 2}, company_id=2)
    task = record_dead_letter("task.workers.inbound.drain_chat", "task failed: RuntimeError: boom", {"args": []})
    crm = record_dead_letter("yclients.push", "Create Not Confirmed after 8 attempts", {}, company_id=COMPANY)
    old = record_dead_letter("yclients.webhook", "bad signature", {"ids": [1]}, company_id=COMPANY)
    salon.execute("UPDATE dead_letters SET created_at = now() - interval '3 days' WHERE id = %s", (old,))
    assert spool(dead_letter_row("broker.inbound", "undecodable message: 'xyz'", {"raw": "xyz"}))
    assert fleet_env["REDIS_URL"] == os.environ["REDIS_URL"]

    everything = fleet(fleet_env, "list")
    assert listed(everything) == ["spool:1", str(crm), str(task), str(unserved_2), str(unserved_1), str(old)]
    assert "spooled" in everything.stdout.splitlines()[1]
    assert by_reason(everything) == {
        "company N is not served": 2,
        "task failed: RuntimeError: boom": 1,
        "Create Not Confirmed after N attempts": 1,
        "bad signature": 1,
        "undecodable message: '…'": 1,
    }
    assert "6 letter(s) match (1 in the spool" in everything.stdout
    limited = fleet(fleet_env, "list", "--source", "inbound.receive", "--limit", "1")
    assert listed(limited) == [str(unserved_2)]
    assert by_reason(limited) == {"company N is not served": 2}, "the counts are of every match, not of those shown"

    def here(*args: str) -> list[str]:
        """The same command in this process: one process per filter would cost a second each."""
        code = main(["dead-letters", "list", *args])
        out, err = capsys.readouterr()
        return listed(subprocess.CompletedProcess(args, code, out, err))

    assert here("--source", "inbound.receive") == [str(unserved_2), str(unserved_1)]
    assert here("--source", "task.*") == [str(task)]
    assert here("--source", "broker.inbound") == ["spool:1"]
    assert here("--reason", "NOT CONFIRMED") == [str(crm)]
    assert here("--reason", "xyz") == ["spool:1"]
    assert here("--company", str(COMPANY)) == [str(crm), str(old)]
    assert here("--since", "1d") == ["spool:1", str(crm), str(task), str(unserved_2), str(unserved_1)]
    assert here("--until", "2d") == [str(old)]
    assert str(old) not in here("--since", datetime.now(UTC).date().isoformat())
    assert here("--source", "inbound.*", "--company", "2", "--since", "1h") == [str(unserved_2)]
    assert main(["dead-letters", "list", "--since", "yesterday-ish"]) == 2

    # The maintenance worker files the spool: the letter then has an id, and the spool is empty.
    assert file_spooled() == 1
    filed = here("--source", "broker.inbound")
    assert len(filed) == 1
    assert filed[0].isdigit()


def test_a_spooled_letter_is_shown_and_cannot_be_replayed_until_it_is_filed(
    salon: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    assert spool(dead_letter_row("inbound.receive", "could not be stored: database away", inbound_payload("Привет")))
    shown = fleet(fleet_env, "show", "spool:1")
    assert shown.returncode == 0, shown.stderr
    assert "in the Redis spool" in shown.stdout
    assert '"text": "Привет"' in shown.stdout
    replayed = fleet(fleet_env, "replay", "spool:1")
    assert replayed.returncode == 1
    assert "still in the Redis spool" in replayed.stdout
    assert redis.Redis.from_url(fleet_env["REDIS_URL"]).llen(SPOOL_KEY) == 1
    assert fleet(fleet_env, "show", "spool:2").returncode == 1


def test_show_prints_the_payload_reason_and_history(salon: psycopg.Connection, fleet_env: dict[str, str]) -> None:
    letter = record_dead_letter(
        "yclients.webhook",
        "webhook refused: unknown resource 'bookings'",
        {"resource": "bookings", "resource_id": 77},
        error_type="InvalidWebhook",
        company_id=COMPANY,
        reference="webhook:77",
    )
    assert letter is not None
    assert fleet(fleet_env, "replay", str(letter)).returncode == 1  # refused: recorded in the history
    assert fleet(fleet_env, "discard", str(letter), "--note", "the salon's own test webhook").returncode == 0

    shown = fleet(fleet_env, "show", str(letter))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    payload = out.split("payload:\n", 1)[1].split("history:", 1)[0]
    assert json.loads(payload) == {"resource": "bookings", "resource_id": 77}
    assert "webhook refused: unknown resource 'bookings'" in out
    assert "InvalidWebhook" in out
    assert "webhook:77" in out
    assert "state:       discarded" in out
    history = out.split("history:\n", 1)[1].splitlines()
    assert len(history) == 2
    assert "replay" in history[0]
    assert "refused" in history[0]
    assert f"by {OPERATOR}" in history[0]
    assert "discard" in history[1]
    assert "note: the salon's own test webhook" in history[1]
    assert fleet(fleet_env, "show", "999999").returncode == 1


def test_discard_needs_a_note_and_keeps_the_letter_with_it(
    salon: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    letter = record_dead_letter("producer.cli", "invalid inbound message: line: not JSON", None, reference="a:1")
    assert letter is not None

    missing = fleet(fleet_env, "discard", str(letter))
    assert missing.returncode != 0
    assert "--note" in missing.stderr
    blank = fleet(fleet_env, "discard", str(letter), "--note", "   ")
    assert blank.returncode != 0
    assert letter_state(salon, letter) == (False, False, [])

    done = fleet(fleet_env, "discard", str(letter), "--note", "a test line from the producer's developer")
    assert done.returncode == 0, done.stderr
    replayed, discarded, history = letter_state(salon, letter)
    assert (replayed, discarded) == (False, True)
    assert [(event["action"], event["outcome"], event["by"], event["note"]) for event in history] == [
        ("discard", "discarded", OPERATOR, "a test line from the producer's developer")
    ]
    assert datetime.fromisoformat(history[0]["at"]) > datetime.now(UTC) - timedelta(minutes=5)
    again = fleet(fleet_env, "discard", str(letter), "--note", "twice")
    assert "discarded already" in again.stdout
    assert len(letter_state(salon, letter)[2]) == 1
    assert listed(fleet(fleet_env, "list", "--state", "discarded")) == [str(letter)]
    assert listed(fleet(fleet_env, "list", "--state", "open")) == []
    # Nothing is deleted by a discard; retention deletes old letters whatever their state, as before.
    salon.execute("UPDATE dead_letters SET created_at = now() - interval '100 days' WHERE id = %s", (letter,))
    deleted = apply_retention(RetentionSettings(messages_days=90, dead_letters_days=90, sync_runs_days=180))
    assert deleted["dead_letters"] == 1


# ---- replay without workers: what is handed back, and what is refused --------------------------------------------


def test_a_dry_run_prints_what_and_how_and_changes_nothing(
    salon: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    reply = delivery_letter(failed_reply(salon, "reply:dry"))
    crm = crm_letter(given_up_booking(salon))
    message = record_dead_letter("inbound.receive", "could not store after 10 retries", inbound_payload("Привет"))
    before = salon.execute("SELECT * FROM dead_letters ORDER BY id").fetchall()
    client = redis.Redis.from_url(fleet_env["REDIS_URL"])
    keys = set(client.keys())

    result = fleet(fleet_env, "replay", "--dry-run", "--since", "1h")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{reply:>8}  inbound.deliver" in out
    assert "would replay: reopen reply" in out
    assert "would replay: reopen CRM operation" in out
    assert "would replay: enqueue gateway message" in out
    assert f"{message:>8}" in out
    assert f"{crm:>8}" in out
    assert "would replay 3 (dry run: nothing changed)" in out

    assert salon.execute("SELECT * FROM dead_letters ORDER BY id").fetchall() == before
    assert salon.execute("SELECT status FROM outbox").fetchone() == ("failed",)
    assert salon.execute("SELECT status FROM crm_operations").fetchone() == ("failed",)
    assert salon.execute("SELECT status FROM bookings").fetchone() == ("cancelled",)
    assert set(client.keys()) == keys, "no task was sent"


def test_a_producer_message_is_enqueued_again_once(salon: psycopg.Connection, fleet_env: dict[str, str]) -> None:
    payload = inbound_payload("Хочу записаться", chat=CHAT)
    letter = record_dead_letter(
        "inbound.receive",
        "could not store after 10 retries: TransientError",
        payload,
        error_type="TransientError",
        company_id=COMPANY,
        reference=payload["gateway_message_id"],
    )
    assert letter is not None
    first = fleet(fleet_env, "replay", str(letter))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{letter:>8}  inbound.receive" in first.stdout
    assert "replayed: gateway message" in first.stdout
    assert queued(fleet_env["REDIS_URL"], Queue.INBOUND) == 1, "one message in the intake, as a producer sends it"

    second = fleet(fleet_env, "replay", str(letter))
    assert second.returncode == 0
    assert "replayed already" in second.stdout
    assert queued(fleet_env["REDIS_URL"], Queue.INBOUND) == 1, "the second replay sent nothing"
    replayed, discarded, history = letter_state(salon, letter)
    assert (replayed, discarded) == (True, False)
    assert [(event["action"], event["outcome"], event["by"]) for event in history] == [("replay", "replayed", OPERATOR)]
    assert listed(fleet(fleet_env, "list", "--state", "replayed")) == [str(letter)]


def test_a_failed_task_is_sent_again_with_its_arguments(salon: psycopg.Connection, fleet_env: dict[str, str]) -> None:
    letter = record_dead_letter(
        f"task.{TaskName.DRAIN_CHAT.value}",
        "task failed: OperationalError: the database went away",
        {"args": [COMPANY, CHAT], "kwargs": {"isolate": True}},
        error_type="OperationalError",
    )
    result = fleet(fleet_env, "replay", str(letter))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"replayed: {TaskName.DRAIN_CHAT.value} sent as task" in result.stdout
    [raw] = redis.Redis.from_url(fleet_env["REDIS_URL"]).lrange(queue_key(Queue.INBOUND), 0, -1)
    sent = json.loads(raw)
    assert sent["headers"]["task"] == TaskName.DRAIN_CHAT.value
    assert sent["headers"]["argsrepr"] == "<hidden: personal data>", "an inbound task's arguments stay hidden"
    assert "replayed already" in fleet(fleet_env, "replay", str(letter)).stdout
    assert queued(fleet_env["REDIS_URL"], Queue.INBOUND) == 1


def test_a_given_up_crm_operation_is_reopened_and_sent_to_the_yclients_worker(
    salon: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    operation = given_up_booking(salon)
    letter = crm_letter(operation)
    result = fleet(fleet_env, "replay", "--source", "yclients.push")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"CRM operation {operation} (create) reopened" in result.stdout
    assert salon.execute("SELECT status, attempts FROM crm_operations").fetchone() == ("pending", 0)
    assert salon.execute("SELECT status, crm_state FROM bookings").fetchone() == ("confirmed", "pending")
    assert queued(fleet_env["REDIS_URL"], Queue.YCLIENTS) == 1
    task = json.loads(redis.Redis.from_url(fleet_env["REDIS_URL"]).lindex(queue_key(Queue.YCLIENTS), 0))
    assert task["headers"]["task"] == TaskName.PUSH_BOOKING.value

    # Replayed: a filter picks open letters only, and an id says so; --again finds the operation on its way.
    assert "no letters matched" in fleet(fleet_env, "replay", "--source", "yclients.push").stdout
    again = fleet(fleet_env, "replay", "--again", str(letter))
    assert again.returncode == 0
    assert f"nothing to do: CRM operation {operation} is pending again" in again.stdout
    assert queued(fleet_env["REDIS_URL"], Queue.YCLIENTS) == 1
    outcomes = [event["outcome"] for event in letter_state(salon, letter)[2]]
    assert outcomes == ["replayed", "nothing to do"]


def test_letters_that_cannot_be_replayed_say_why_and_stay_open(
    salon: psycopg.Connection, fleet_env: dict[str, str]
) -> None:
    refused_op = crm_letter(given_up_booking(salon, outcome="refused: the time is taken"))
    earlier = failed_reply(salon, "reply:1")
    failed_reply(salon, "reply:2", status="done")  # the chat got a later reply since
    stale = delivery_letter(earlier)
    webhook = record_dead_letter("yclients.webhook", "unknown resource", {"ids": [1]}, company_id=COMPANY)
    broker = record_dead_letter("broker.inbound", "undecodable message", {"raw": "{"})
    canvas = record_dead_letter("task.celery.chord_unlock", "refused", {"args": [], "kwargs": {}})
    invalid = record_dead_letter("inbound.receive", "invalid payload", {**inbound_payload(), "chat_id": "12"})
    unserved = record_dead_letter("inbound.receive", "company 5 is not served", {**inbound_payload(), "company_id": 5})
    letters = [refused_op, stale, webhook, broker, canvas, invalid, unserved]

    result = fleet(fleet_env, "replay", *map(str, letters))
    assert result.returncode == 1
    lines = {int(line.split()[0]): line for line in result.stdout.splitlines() if line.split()[0].isdigit()}
    assert "YClients refused operation" in lines[refused_op]
    assert "a later reply reached this chat since" in lines[stale]
    assert "fleet sync records" in lines[webhook]
    assert "the broker refused the message itself" in lines[broker]
    assert "celery.chord_unlock is not a fleet task" in lines[canvas]
    assert "the message is still invalid: chat_id" in lines[invalid]
    assert "company 5 is not served" in lines[unserved]
    assert all("cannot be replayed" in line for line in lines.values())
    for letter in letters:
        replayed, discarded, history = letter_state(salon, letter)
        assert (replayed, discarded) == (False, False)
        assert [event["outcome"] for event in history] == ["refused"]
    assert salon.execute("SELECT status FROM outbox WHERE id = %s", (earlier,)).fetchone() == ("failed",)
    assert "open (refused)" in fleet(fleet_env, "list", "--source", "broker.inbound").stdout


# ---- end to end: a real fault, mended, and the letter replayed ----------------------------------------------------


@pytest.mark.slow
def test_a_reply_the_gateway_refused_is_delivered_after_a_replay_and_only_once(
    inbound_env: dict[str, str], gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    env = {**inbound_env, "FLEET_GATEWAY__MAX_ATTEMPTS": "2"}
    gateway.fail_next(1_000_000)  # the gateway is down: every send is refused with 503
    with running_worker("inbound", env, tmp_path, concurrency=2) as worker:
        enqueue_message(inbound_payload("Привет", chat=CHAT))
        wait_until(
            lambda: db.execute("SELECT count(*) FROM dead_letters WHERE source = 'inbound.deliver'").fetchone()[0],
            30,
            f"the reply dead-lettered\n{worker.output()[-3000:]}",
        )
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS)
        assert gateway.count() == 0
        letter = db.execute("SELECT id FROM dead_letters WHERE source = 'inbound.deliver'").fetchone()[0]
        assert listed(fleet(env, "list", "--source", "inbound.deliver", "--state", "open")) == [str(letter)]

        gateway.fail_next(0)  # mended
        first = fleet(env, "replay", str(letter))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "pending again; its delivery sent as task" in first.stdout
        wait_until(lambda: gateway.count() == 1, 30, f"the reply after the replay\n{worker.output()[-3000:]}")
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS)

        second = fleet(env, "replay", str(letter))
        assert second.returncode == 0
        assert "replayed already" in second.stdout
        again = fleet(env, "replay", "--again", str(letter))
        assert again.returncode == 0
        assert "nothing to do: reply" in again.stdout
        assert "delivered already" in again.stdout
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS)
    assert gateway.count() == 1
    assert gateway.repeats == 0
    assert gateway.to(CHAT)[0].message.startswith("Здравствуйте")
    assert db.execute("SELECT status FROM outbox").fetchone() == ("done",)
    replayed, discarded, history = letter_state(db, letter)
    assert (replayed, discarded) == (True, False)
    assert [event["outcome"] for event in history] == ["replayed", "nothing to do"]


@pytest.mark.slow
def test_a_message_whose_answering_failed_is_answered_after_a_replay_and_only_once(
    inbound_env: dict[str, str], gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    broken = {
        **inbound_env,
        "FLEET_ASSISTANT": "tests.support.failing_assistant:FailingAssistant",
        "FLEET_INBOUND__MAX_ATTEMPTS": "2",
    }
    with running_worker("inbound", broken, tmp_path, concurrency=2) as worker:
        enqueue_message(inbound_payload(f"{POISON} Привет", chat=CHAT))
        wait_until(
            lambda: db.execute("SELECT count(*) FROM dead_letters WHERE source = 'inbound.answer'").fetchone()[0],
            60,
            f"the message dead-lettered\n{worker.output()[-3000:]}",
        )
        wait_for_idle([worker], broken["REDIS_URL"], INBOUND_LISTS)
    assert gateway.count() == 0
    letter = db.execute("SELECT id FROM dead_letters WHERE source = 'inbound.answer'").fetchone()[0]
    assert db.execute("SELECT status FROM messages").fetchone() == ("failed",)

    dry = fleet(inbound_env, "replay", "--dry-run", "--source", "inbound.answer")
    assert "would replay: reopen message" in dry.stdout
    assert db.execute("SELECT status FROM messages").fetchone() == ("failed",)

    with running_worker("inbound", inbound_env, tmp_path, concurrency=2) as worker:  # mended: the assistant fixed
        first = fleet(inbound_env, "replay", "--source", "inbound.answer")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "pending again; its chat's drain sent as task" in first.stdout
        wait_until(lambda: gateway.count() == 1, 30, f"the answer after the replay\n{worker.output()[-3000:]}")
        wait_for_idle([worker], inbound_env["REDIS_URL"], INBOUND_LISTS)

        second = fleet(inbound_env, "replay", str(letter))
        assert "replayed already" in second.stdout
        again = fleet(inbound_env, "replay", "--again", str(letter))
        assert "nothing to do: message" in again.stdout
        assert "answered already" in again.stdout
        wait_for_idle([worker], inbound_env["REDIS_URL"], INBOUND_LISTS)
    assert gateway.count() == 1
    assert gateway.repeats == 0
    assert db.execute("SELECT status FROM messages").fetchone() == ("answered",)
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    assert [event["outcome"] for event in letter_state(db, letter)[2]] == ["replayed", "nothing to do"]
