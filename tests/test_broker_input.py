"""Every worker type survives what it cannot decode or must not run, keeps it with the reason, and goes on."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from celery import Celery

from ops.standins.gateway import GatewayStandIn
from shared.core.kombu_contract import PROTOCOL_1_REFUSAL
from shared.data.dead_letters import SPOOL_KEY
from tests.support.payloads import inbound_payload
from tests.support.processes import FleetProcess, running_workers, wait_until
from tests.support.raw_broker import envelope, push
from workers.app import app
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow

QUEUE_OF_TYPE = {"inbound": "inbound", "yclients": "yclients", "keys": "maintenance", "backups": "backups"}


@pytest.fixture
def every_worker(inbound_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, FleetProcess]]:
    """One worker of each type, started and stopped side by side, answering the seed salon."""
    with running_workers(QUEUE_OF_TYPE, inbound_env, tmp_path) as workers:
        yield workers


def _undecodable(queue: str) -> dict[str, bytes | str | dict | list]:
    marker = f"raw-{queue}"
    good = envelope(f"workers.{queue}.ping", queue=queue)
    return {
        "not json": f"not json at all {marker}-1",
        "not utf-8": b"\xff\xfe\x00" + f"{marker}-2".encode(),
        "json, not an envelope": {"hello": f"{marker}-3"},
        "json list": [f"{marker}-4", 1, 2],
        "no properties": {k: v for k, v in good.items() if k != "properties"} | {"marker": f"{marker}-5"},
        "body not base64": envelope(f"workers.{queue}.ping", queue=queue, task_id=f"{marker}-6", body=f"%% {marker}-6"),
        "no delivery tag": good | {"properties": {"body_encoding": "base64", "marker": f"{marker}-7"}},
        "delivery_info without routing": good | {"properties": good["properties"] | {"delivery_info": f"{marker}-8"}},
    }


def test_every_worker_type_survives_undecodable_messages_and_keeps_them(
    every_worker: dict[str, FleetProcess], gateway: GatewayStandIn, db: psycopg.Connection, clean_redis: str
) -> None:
    pushed = {}
    for worker_type, queue in QUEUE_OF_TYPE.items():
        for name, value in _undecodable(queue).items():
            push(clean_redis, queue, value)
            pushed[(worker_type, name)] = value

    enqueue_message(inbound_payload("Привет", chat="+79110000123"))
    wait_until(lambda: gateway.count() == 1, 30, "the inbound worker to answer a good message after the bad ones")
    for worker_type in ("yclients", "keys", "backups"):
        module = "health" if worker_type == "keys" else worker_type
        answer = app.send_task(f"workers.{worker_type}.ping").get(timeout=30)
        assert answer["worker_type"] == worker_type, module
    for worker_type, process in every_worker.items():
        assert process.proc.poll() is None, f"{worker_type} worker died:\n{process.output()}"
        assert "Unrecoverable error" not in process.output()

    app.send_task("workers.health.file_dead_letter_spool")
    wait_until(
        lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == len(pushed), 30, "every letter filed"
    )
    rows = db.execute("SELECT source, reason, error_type, payload::text, task_id FROM dead_letters").fetchall()
    for (worker_type, name), value in pushed.items():
        queue = QUEUE_OF_TYPE[worker_type]
        if isinstance(value, bytes):
            needle = base64.b64encode(value).decode()
        else:
            needle = f"raw-{queue}-" + str(list(_undecodable(queue)).index(name) + 1)
        # A body that happens to pass kombu's lenient base64 fails in Celery's decoder instead: kept there.
        found = [row for row in rows if (needle in row[3] and row[0] == f"broker.{queue}") or row[4] == needle]
        assert len(found) == 1, f"{worker_type}: {name} kept once"
        assert found[0][1].split(":")[0] in ("undecodable broker message", "message body cannot be decoded")
        assert found[0][2] == "UndecodableMessage"
    assert every_worker["keys"].proc.poll() is None


def test_a_task_of_another_worker_type_is_refused_and_kept_never_run(
    every_worker: dict[str, FleetProcess], db: psycopg.Connection, clean_redis: str
) -> None:
    drill = envelope("workers.backups.drill", queue="inbound", task_id="drill-on-inbound")
    push(clean_redis, "inbound", drill)
    canvas = envelope("celery.map", ["workers.inbound.sweep", [[]]], queue="inbound", task_id="celery-map-on-inbound")
    push(clean_redis, "inbound", canvas)
    sync_on_backups = envelope("workers.yclients.sync_entity", queue="backups", task_id="sync-on-backups")
    push(clean_redis, "backups", sync_on_backups)
    app.send_task("workers.inbound.ping").get(timeout=30)  # consumed after the three: FIFO per list
    app.send_task("workers.backups.ping").get(timeout=30)

    redis_client = redis.Redis.from_url(clean_redis)
    wait_until(lambda: redis_client.llen(SPOOL_KEY) >= 3, 10, "three refusals parked")
    app.send_task("workers.health.file_dead_letter_spool")
    wait_until(lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] >= 3, 30, "refusals filed")
    refused = dict(db.execute("SELECT task_id, reason FROM dead_letters WHERE error_type = 'RefusedTask'").fetchall())
    assert "'workers.backups.drill' is not accepted" in refused["drill-on-inbound"]
    assert "'celery.map' is not accepted" in refused["celery-map-on-inbound"]
    assert "'workers.yclients.sync_entity' is not accepted" in refused["sync-on-backups"]
    assert db.execute("SELECT count(*) FROM backups").fetchone()[0] == 0, "the drill never ran"
    node = every_worker["inbound"].node  # type: ignore[attr-defined]
    registered = app.control.inspect(destination=[node], timeout=2).registered()[node]
    assert sorted(registered) == [
        "workers.inbound.deliver_reply",
        "workers.inbound.drain_chat",
        "workers.inbound.ping",
        "workers.inbound.receive_message",
        "workers.inbound.report_process",
        "workers.inbound.send_reminders",
        "workers.inbound.sweep",
    ]


def test_a_message_in_celery_protocol_1_is_refused_by_name_and_kept_never_run(
    every_worker: dict[str, FleetProcess], gateway: GatewayStandIn, db: psycopg.Connection, clean_redis: str
) -> None:
    """A client set to Celery's protocol 1 (celery-node can be) names the task in the body, not in the headers:
    refused with a reason that says so, kept, and no traceback in the worker's log."""
    old = Celery("protocol-1-client", broker=clean_redis, set_as_current=False)
    old.conf.update(task_protocol=1, broker_transport_options={"priority_steps": [0]})
    with old.connection_for_write() as connection:
        message = inbound_payload("Привет", chat="+79110000124")
        old.send_task(
            "workers.inbound.receive_message",
            kwargs={"payload": message},
            task_id="protocol-1-receive",
            queue="inbound",
            connection=connection,
        )
        old.send_task("workers.backups.ping", task_id="protocol-1-ping", queue="backups", connection=connection)
    app.send_task("workers.inbound.ping").get(timeout=30)  # consumed after the refused one: FIFO per lane
    app.send_task("workers.backups.ping").get(timeout=30)

    redis_client = redis.Redis.from_url(clean_redis)
    wait_until(lambda: redis_client.llen(SPOOL_KEY) >= 2, 10, "both refusals parked")
    app.send_task("workers.health.file_dead_letter_spool")
    wait_until(lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] >= 2, 30, "refusals filed")
    rows = db.execute("SELECT task_id, source, error_type, reason FROM dead_letters ORDER BY task_id").fetchall()
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("protocol-1-ping", "broker.refused", "UnsupportedProtocol"),
        ("protocol-1-receive", "broker.refused", "UnsupportedProtocol"),
    ]
    assert all(row[3].startswith(PROTOCOL_1_REFUSAL) for row in rows), rows  # the filer adds "(spooled at …)"
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0, "the protocol 1 message never ran"
    assert gateway.count() == 0
    for worker_type in ("inbound", "backups"):
        output = every_worker[worker_type].output()
        assert "Traceback" not in output, f"{worker_type} logged a traceback:\n{output}"
        assert "KeyError" not in output


def test_remote_control_the_fleet_does_not_use_is_gone(every_worker: dict[str, FleetProcess]) -> None:
    node = every_worker["inbound"].node  # type: ignore[attr-defined]
    replies = app.control.broadcast(
        "add_consumer", arguments={"queue": "backups"}, destination=[node], reply=True, timeout=2
    )
    assert replies, "the worker answers the broadcast"
    assert replies[0][node] == {"error": "remote control 'add_consumer' is not served by fleet workers"}, replies
    conf = app.control.broadcast("conf", destination=[node], reply=True, timeout=2)  # Flower asks this one
    assert conf[0][node] == {"error": "remote control 'conf' is not served by fleet workers"}, conf
    queues = app.control.inspect(destination=[node], timeout=2).active_queues()[node]
    assert [queue["name"] for queue in queues] == ["inbound.ready"], "its own queue only (dealt out fairly)"
    assert app.control.ping(destination=[node], timeout=2), "the readiness ping still answers"
    assert "Traceback" not in every_worker["inbound"].output(), "a refused command is one line, not a traceback"
