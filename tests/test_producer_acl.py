"""The `fleet-producer` Redis user (ops/redis/producer.acl): it enqueues inbound messages and can do nothing else.

A producer's credentials leave the fleet's hands (the WhatsApp gateway holds them), so they must not reach
the other queues, kombu's and the fleet's own keys, remote control or the server's administration. The rules
are applied, as the file has them, to a redis-server of the test's own: the shared server's users stay as
they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError

import workers.producer
from shared.core.kombu_contract import unacked_keys
from shared.core.settings import load_settings
from shared.inbound.payload import TASK_NAME
from tests.support.payloads import inbound_payload
from tests.support.raw_broker import envelope, push
from tests.support.redis_server import OwnRedis
from workers.config import build_celery_config

ACL_FILE = Path(__file__).resolve().parent.parent / "ops" / "redis" / "producer.acl"
USER = "fleet-producer"
PASSWORD = "producer-pass-1"


def acl_rules() -> list[str]:
    """The rules of ops/redis/producer.acl: its one line that is not a comment."""
    lines = [line for line in ACL_FILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1, "producer.acl holds exactly one line of rules"
    return lines[0].split()


def password_hash(password: str) -> str:
    """What ACL SETUSER takes as `#<hash>`, so the password itself never reaches a command line."""
    return hashlib.sha256(password.encode()).hexdigest()


def refusals(admin: redis.Redis) -> list[dict[str, str]]:
    """ACL LOG: every command, key or channel the server refused since the last reset."""
    return [{key: str(entry[key]) for key in ("reason", "object", "username")} for entry in admin.acl_log()]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("producer-acl-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(own_redis: OwnRedis) -> Iterator[redis.Redis]:
    """The server's default user, with the producer user freshly created from the file and nothing stored."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    client.flushall()
    client.execute_command("ACL", "DELUSER", USER)
    client.execute_command("ACL", "SETUSER", USER, "reset", *acl_rules(), f"#{password_hash(PASSWORD)}")
    client.acl_log_reset()
    yield client
    client.close()


def producer_url(server: OwnRedis, password: str = PASSWORD) -> str:
    return f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"


@pytest.fixture
def producer(own_redis: OwnRedis, admin: redis.Redis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(producer_url(own_redis))
    yield client
    client.close()


@pytest.fixture
def producer_app(own_redis: OwnRedis, admin: redis.Redis) -> Iterator[Celery]:
    """A Celery app configured as the fleet's own (results, events and all), connected as the producer user."""
    app = Celery("gateway")
    app.conf.update(build_celery_config(load_settings(redis_url=producer_url(own_redis))))
    yield app
    app.close()


def logs_in(server: OwnRedis, password: str) -> bool:
    client = redis.Redis.from_url(producer_url(server, password))
    try:
        return client.ping()
    except redis.exceptions.AuthenticationError:
        return False
    finally:
        client.close()


def intake(admin: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in admin.lrange("inbound", 0, -1)]


def test_enqueue_message_as_the_producer_user_lands_in_the_intake(
    admin: redis.Redis, producer_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers.producer, "app", producer_app)
    first = workers.producer.enqueue_message(inbound_payload("Хочу записаться"))
    second = workers.producer.enqueue_message(inbound_payload("и ещё вопрос"))

    assert [(m["headers"]["task"], m["headers"]["id"]) for m in reversed(intake(admin))] == [
        (TASK_NAME, first),
        (TASK_NAME, second),
    ]
    assert admin.keys("*") == ["inbound"]  # no binding, result or other key written on the way
    # Nothing was refused quietly either (a result subscription, say, fails without an exception).
    assert refusals(admin) == []


def test_a_raw_lpush_of_an_envelope_to_the_intake_succeeds(own_redis: OwnRedis, admin: redis.Redis) -> None:
    message = envelope(TASK_NAME, kwargs={"payload": inbound_payload()}, queue="inbound")
    push(producer_url(own_redis), "inbound", message)  # what celery-node and gocelery send

    assert intake(admin) == [message]
    assert refusals(admin) == []


UNACKED = unacked_keys("inbound")
REFUSED: dict[str, tuple[Any, ...]] = {
    "LPUSH yclients": ("LPUSH", "yclients", "x"),
    "LPUSH backups": ("LPUSH", "backups", "x"),
    "LPUSH maintenance": ("LPUSH", "maintenance", "x"),
    "LPUSH inbound.ready": ("LPUSH", "inbound.ready", "x"),
    "LPUSH a salon's lane": ("LPUSH", "fleet:lane:962302", "x"),
    "LPUSH the dead-letter spool": ("LPUSH", "fleet:dead_letters:spool", "x"),
    "LPUSH the unacked index": ("LPUSH", UNACKED.index, "x"),
    "PUBLISH remote control": ("PUBLISH", "/0.celery.pidbox", "x"),
    "FLUSHDB": ("FLUSHDB",),
    "FLUSHALL": ("FLUSHALL",),
    "DEL inbound": ("DEL", "inbound"),
    "KEYS *": ("KEYS", "*"),
    "SCAN": ("SCAN", "0"),
    "CONFIG GET": ("CONFIG", "GET", "*"),
    "LRANGE inbound (read other salons' messages)": ("LRANGE", "inbound", "0", "-1"),
    "RPOP inbound": ("RPOP", "inbound"),
    "LLEN inbound": ("LLEN", "inbound"),
    "SMEMBERS a kombu binding": ("SMEMBERS", "_kombu.binding.maintenance"),
    "SADD a kombu binding": ("SADD", "_kombu.binding.maintenance", "x\x06\x16\x06\x16yclients"),
    "HSET kombu's unacked hash": ("HSET", UNACKED.hash, "tag", "x"),
    "EVAL": ("EVAL", "return redis.call('FLUSHDB')", "0"),
    "SELECT another db": ("SELECT", "1"),
    "ACL SETUSER (raise its own rights)": ("ACL", "SETUSER", USER, "+@all", "~*"),
    "CLIENT KILL": ("CLIENT", "KILL", "TYPE", "normal"),
    "SHUTDOWN": ("SHUTDOWN", "NOSAVE"),
}


@pytest.mark.parametrize("command", REFUSED.values(), ids=REFUSED.keys())
def test_the_producer_user_is_refused_everything_else(
    command: tuple[Any, ...], admin: redis.Redis, producer: redis.Redis
) -> None:
    admin.lpush("inbound", "queued")
    with pytest.raises(redis.exceptions.NoPermissionError):
        producer.execute_command(*command)

    assert admin.lrange("inbound", 0, -1) == ["queued"]
    assert admin.keys("*") == ["inbound"]
    assert [entry["username"] for entry in refusals(admin)] == [USER]


def test_remote_control_as_the_producer_user_is_refused(admin: redis.Redis, producer_app: Celery) -> None:
    """`celery control shutdown` from an app holding the producer's URL: Redis refuses the pidbox channel."""
    with pytest.raises(OperationalError) as refused:
        producer_app.control.broadcast("shutdown")

    assert isinstance(refused.value.__cause__, redis.exceptions.NoPermissionError)
    assert {(entry["reason"], entry["object"]) for entry in refusals(admin)} == {("channel", "/0.celery.pidbox")}


def test_rotating_the_password_keeps_both_valid_until_the_old_one_is_removed(
    own_redis: OwnRedis, admin: redis.Redis
) -> None:
    """The rotation docs/deployment.md describes: add the new hash, move producers over, remove the old one."""
    new = "producer-pass-2"
    admin.execute_command("ACL", "SETUSER", USER, f"#{password_hash(new)}")
    assert logs_in(own_redis, PASSWORD)
    assert logs_in(own_redis, new)

    admin.execute_command("ACL", "SETUSER", USER, f"!{password_hash(PASSWORD)}")
    assert not logs_in(own_redis, PASSWORD)
    assert logs_in(own_redis, new)

    # Re-applying the file (after an upgrade that changes it) keeps the password, and only its rules hold.
    admin.execute_command("ACL", "SETUSER", USER, "+@all", "~*")
    admin.execute_command("ACL", "SETUSER", USER, *acl_rules())
    assert logs_in(own_redis, new)
    producer = redis.Redis.from_url(producer_url(own_redis, new))
    with pytest.raises(redis.exceptions.NoPermissionError):
        producer.lpush("yclients", "x")
    producer.close()
