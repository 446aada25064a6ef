"""The kombu contract: what the fleet's broker extension (workers/broker.py) and the lanes router rely on in
kombu's Redis transport and Celery's consumer, checked against the installed versions and a real Redis.

A kombu or Celery upgrade that renames or reshapes something the extension touches, changes the Redis keys
or the unacked record, or changes the envelope fails here, by name, before any worker runs on it.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.worker.consumer import Consumer
from kombu import Connection, Exchange, Producer
from kombu import Queue as KombuQueue
from kombu.asynchronous import Hub
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

import workers.broker
from shared.core.kombu_contract import (
    PRIORITY_SEPARATOR,
    Envelope,
    celery_protocol,
    protocol_1_task_id,
    queue_key,
    unacked_keys,
)
from shared.core.settings import WorkerType, get_settings
from shared.core.topology import QUEUE_OF_WORKER, TaskName
from shared.data.dead_letters import SPOOL_KEY
from workers.app import app
from workers.broker import (
    ACK_CARRY_SECONDS,
    CLAIM,
    PARK,
    QuarantiningChannel,
    QuarantiningTransport,
    RefusalTolerantQoS,
)
from workers.config import transport_options

QUEUE = "contract"
BROKER = Path(workers.broker.__file__)

# Every private name of kombu or Celery that workers/broker.py reads or overrides, with its signature
# (None: an attribute, checked on a live channel below).
PRIVATE: dict[str, tuple[type, str | None]] = {
    "_brpop_start": (kombu_redis.Channel, "(self, timeout=None)"),
    "_brpop_read": (kombu_redis.Channel, "(self, **options)"),
    "_get": (kombu_redis.Channel, "(self, queue)"),
    "_q_for_pri": (kombu_redis.Channel, "(self, queue, pri)"),
    "_queue_cycle": (kombu_redis.Channel, None),
    "_in_poll": (kombu_redis.Channel, None),
    "_closing": (kombu_redis.Channel, None),
    "_create_client": (kombu_redis.Channel, "(self, asynchronous=False)"),
    "_disconnect_pools": (kombu_redis.Channel, "(self)"),
    "_deliver": (virtual.Transport, "(self, message, queue)"),
    "_callbacks": (virtual.Transport, None),
    "_flush_events": (Consumer, "(self)"),
}
# Public names of the same internals (not kombu's documented API), with their signatures.
INTERNAL: list[tuple[type, str, str]] = [
    (kombu_redis.Channel, "basic_consume", "(self, queue, *args, **kwargs)"),
    (virtual.Channel, "basic_consume", "(self, queue, no_ack, callback, consumer_tag, **kwargs)"),
    (kombu_redis.Channel, "conn_or_acquire", "(self, client=None)"),
    (kombu_redis.QoS, "append", "(self, message, delivery_tag)"),
    (kombu_redis.QoS, "ack", "(self, delivery_tag)"),
    (kombu_redis.QoS, "reject", "(self, delivery_tag, requeue=False)"),
    (virtual.QoS, "ack", "(self, delivery_tag)"),
    (virtual.QoS, "append", "(self, message, delivery_tag)"),
    (virtual.Channel, "basic_publish", "(self, message, exchange, routing_key, **kwargs)"),
    (kombu_redis.QoS, "restore_by_tag", "(self, tag, client=None, leftmost=False)"),
    (kombu_redis.QoS, "restore_visible", "(self, start=0, num=10, interval=10)"),
    (kombu_redis.MultiChannelPoller, "_register_BRPOP", "(self, channel)"),
    (kombu_redis.Channel, "close", "(self)"),
    (kombu_redis.Transport, "register_with_event_loop", "(self, connection, loop)"),
    (Consumer, "create_task_handler", "(self, promise=<class 'vine.promises.promise'>)"),
    (Consumer, "on_decode_error", "(self, message, exc)"),
    (Consumer, "on_unknown_message", "(self, body, message)"),
    (Consumer, "on_unknown_task", "(self, body, message, exc)"),
    (Consumer, "on_invalid_task", "(self, body, message, exc)"),
    (Consumer, "on_send_event_buffered", "(self)"),
]
# The extension's own names (private ones, and the public ones it adds to kombu's classes): none may shadow one
# of kombu's or Celery's by accident.
OWN = {
    "_peeking", "_no_ack_queues", "_prechecked", "_claim", "_park", "_read", "_checked", "_reply", "_take",
    "_give_back", "_protocol_1", "_keep", "_resume_at", "_waiting", "_owed", "_settle", "refused_writes",
    "writes_refused", "writes_accepted", "_claimed_tag", "_events_flush_due", "_flush_batched_events", "_plain_client",
    "_claimed", "carry_ack", "remove_records", "record_removal", "event_loop", "_acks_due", "_ack_timer_armed",
    "_acks_overdue", "_send_due_acks", "_carried_acks",
}  # fmt: skip


def _private_names_in_broker() -> set[str]:
    tree = ast.parse(BROKER.read_text(encoding="utf-8"))
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    module_level = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")} - module_level


@pytest.fixture
def redis_url(clean_redis: str) -> str:
    return clean_redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _options(**extra: Any) -> dict[str, Any]:
    return {**transport_options(get_settings(), WorkerType.YCLIENTS), **extra}


@pytest.fixture
def kombu_connection(redis_url: str) -> Iterator[Connection]:
    """kombu's own Redis transport (workers.app serves redis:// with the fleet's), the fleet's options."""
    with Connection(redis_url, transport=kombu_redis.Transport, transport_options=_options()) as connection:
        yield connection


@pytest.fixture
def fleet_connection(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport=QuarantiningTransport, transport_options=_options()) as connection:
        yield connection


def _publish(connection: Connection, body: dict[str, Any], **options: Any) -> None:
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    Producer(connection.channel()).publish(body, routing_key=QUEUE, declare=[queue], serializer="json", **options)


# ---- the names the extension touches ------------------------------------------------------------------------


def test_every_private_name_the_extension_touches_is_in_this_contract() -> None:
    unlisted = _private_names_in_broker() - set(PRIVATE) - OWN
    assert not unlisted, f"workers/broker.py touches private names this contract does not check: {unlisted}"


def test_each_private_name_exists_with_the_signature_the_extension_was_written_against() -> None:
    for name, (owner, signature) in PRIVATE.items():
        if signature is not None:  # attributes are set per instance: the live test below has them
            assert hasattr(owner, name), f"{owner.__name__}.{name} is gone"
            assert str(inspect.signature(getattr(owner, name))) == signature, f"{owner.__name__}.{name} changed"
    for owner, name, signature in INTERNAL:
        assert str(inspect.signature(getattr(owner, name))) == signature, f"{owner.__name__}.{name} changed"


def test_none_of_the_extensions_own_names_shadows_kombu_or_celery() -> None:
    owners = (kombu_redis.Channel, virtual.Channel, virtual.Transport, kombu_redis.Transport, Consumer)
    for name in OWN:
        for owner in (*owners, kombu_redis.QoS, virtual.QoS):
            assert not hasattr(owner, name), f"{owner.__name__}.{name} now exists: the extension would override it"


def test_the_live_channel_wires_the_poller_to_the_overridden_methods(fleet_connection: Connection) -> None:
    channel = fleet_connection.default_channel
    assert isinstance(channel, QuarantiningChannel)
    assert channel.handlers["BRPOP"] == channel._brpop_read, "the poller no longer reads through _brpop_read"
    assert isinstance(channel.qos, RefusalTolerantQoS), "kombu no longer builds the channel's QoS from its class"
    assert callable(channel._queue_cycle.consume)
    assert callable(channel._queue_cycle.rotate)
    assert channel._in_poll in (False, None)
    assert channel._closing is False, "kombu no longer marks a closing channel"
    assert isinstance(fleet_connection.transport._callbacks, dict)
    assert channel.sep == PRIORITY_SEPARATOR
    assert TRANSPORT_ALIASES["redis"] == "workers.broker:QuarantiningTransport", "the fleet serves redis:// itself"


def test_commands_outside_the_poll_share_one_client_until_kombu_replaces_its_pool(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    """Claims and acks go through one client, not a new one each; after kombu drops its pools (a lost
    connection) the next command gets a client on the new pool, and it reaches Redis."""
    channel = fleet_connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
        assert again is first
    channel._disconnect_pools()
    with channel.conn_or_acquire() as after:
        assert after is not first
        assert after.connection_pool is channel.pool
        after.set("contract:after-reconnect", "1")
    assert client.get("contract:after-reconnect") == b"1"


def test_celery_consumes_tasks_with_acknowledgements(fleet_connection: Connection) -> None:
    """The extension records a taken message as unacked only for consumers that acknowledge, as Celery's does."""
    consumer = app.amqp.TaskConsumer(fleet_connection.default_channel)
    assert not consumer.no_ack


# ---- the keys -----------------------------------------------------------------------------------------------


def test_the_fleets_transport_options_name_kombus_keys_as_the_contract_does(kombu_connection: Connection) -> None:
    for worker_type in WorkerType:
        options = transport_options(get_settings(), worker_type)
        keys = unacked_keys(QUEUE_OF_WORKER[worker_type].value)
        assert (options["unacked_key"], options["unacked_index_key"], options["unacked_mutex_key"]) == (
            keys.hash,
            keys.index,
            keys.mutex,
        )
        assert options["priority_steps"] == [0], "one list per queue: the atomic take needs it"
    for option in ("unacked_key", "unacked_index_key", "unacked_mutex_key", "visibility_timeout", "priority_steps"):
        assert option in kombu_redis.Channel.from_transport_options, f"kombu no longer reads {option}"
    channel = kombu_connection.default_channel
    assert (channel.unacked_key, channel.unacked_index_key) == (unacked_keys("yclients").hash, "unacked_index:yclients")


def test_a_message_waits_in_the_list_the_contract_names_and_priorities_use_the_separator(
    kombu_connection: Connection, client: redis.Redis, redis_url: str
) -> None:
    _publish(kombu_connection, {"n": 1})
    assert client.llen(queue_key(QUEUE)) == 1
    with Connection(redis_url, transport=kombu_redis.Transport) as default:
        _publish(default, {"n": 2}, priority=9)  # kombu's default priority steps
    assert client.llen(f"{queue_key(QUEUE)}{PRIORITY_SEPARATOR}9") == 1


# ---- the envelope -------------------------------------------------------------------------------------------


def test_a_celery_message_reads_as_the_contract_expects(client: redis.Redis, clean_redis: str) -> None:
    app.send_task(TaskName.DRAIN_CHAT, (962302, "+79110000001"), {"isolate": True}, task_id="contract-1")
    raw = client.lindex(queue_key("inbound"), -1)
    envelope = Envelope.parse(raw)
    assert envelope.task == TaskName.DRAIN_CHAT
    assert envelope.task_id == "contract-1"
    assert envelope.call() == ([962302, "+79110000001"], {"isolate": True})
    delivery = envelope.delivery()
    assert (delivery.exchange, delivery.routing_key) == ("", "inbound")
    assert delivery.tag == envelope.fields["properties"]["delivery_tag"]
    assert envelope.fields["content-type"] == "application/json"
    assert celery_protocol(envelope.headers, json.loads(envelope.body())) == 2


def test_celery_protocol_1_is_told_apart_as_celery_does(redis_url: str, client: redis.Redis) -> None:
    old = Celery("protocol1", broker=redis_url, set_as_current=False)
    old.conf.update(task_protocol=1, broker_transport_options={"priority_steps": [0]})
    with old.connection_for_write() as connection:
        old.send_task(TaskName.RECEIVE_MESSAGE, kwargs={"payload": {}}, queue=QUEUE, connection=connection)
    envelope = Envelope.parse(client.lindex(queue_key(QUEUE), -1))
    body = json.loads(envelope.body())
    assert "task" not in envelope.headers
    assert body["task"] == TaskName.RECEIVE_MESSAGE
    assert celery_protocol(envelope.headers, body) == 1
    assert protocol_1_task_id(body) == body["id"]


# ---- the unacked record and its restore ----------------------------------------------------------------------


def _take_with_kombu(connection: Connection) -> Any:
    """What kombu's own consumer does: pop, then record as unacked (no ack)."""
    taken: list[Any] = []
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with connection.Consumer(queue, callbacks=[lambda body, message: taken.append(message)], accept=["json"]):
        connection.drain_events(timeout=5)
    return taken[0]


def test_kombu_records_a_taken_message_as_the_contract_writes_it(
    kombu_connection: Connection, client: redis.Redis
) -> None:
    _publish(kombu_connection, {"n": 1})
    envelope = Envelope.parse(client.lindex(queue_key(QUEUE), -1))
    message = _take_with_kombu(kombu_connection)
    keys = unacked_keys("yclients")
    tag = envelope.delivery().tag
    assert message.delivery_tag == tag
    assert json.loads(client.hget(keys.hash, tag)) == json.loads(envelope.unacked_record(envelope.delivery()))
    assert client.zscore(keys.index, tag) == pytest.approx(time.time(), abs=30)


def test_kombu_restores_what_the_extensions_atomic_take_recorded(
    kombu_connection: Connection, client: redis.Redis, redis_url: str
) -> None:
    """A consumer killed right after its take: the message is in no list, only in kombu's unacked hash, and
    kombu's own visibility-timeout restore brings it back."""
    _publish(kombu_connection, {"n": 1})
    raw = client.lindex(queue_key(QUEUE), -1)
    envelope = Envelope.parse(raw)
    delivery = envelope.delivery()
    keys = unacked_keys("yclients")
    record = envelope.unacked_record(delivery)
    taken = client.eval(CLAIM, 3, queue_key(QUEUE), keys.hash, keys.index, raw, delivery.tag, record, time.time() - 5)
    assert taken == 1
    assert client.llen(queue_key(QUEUE)) == 0
    with Connection(redis_url, transport=kombu_redis.Transport, transport_options=_options(visibility_timeout=1)) as c:
        c.default_channel.qos.restore_visible()
    assert client.hlen(keys.hash) == 0
    restored = Envelope.parse(client.lindex(queue_key(QUEUE), -1))
    assert restored.headers["redelivered"] is True
    assert restored.delivery().tag == delivery.tag


def test_the_extensions_channel_takes_each_message_with_its_unacked_record(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    _publish(fleet_connection, {"n": 1})
    keys = unacked_keys("yclients")
    seen: list[tuple[int, int]] = []

    def on_message(body: Any, message: Any) -> None:
        seen.append((client.llen(queue_key(QUEUE)), client.hlen(keys.hash)))
        message.ack()

    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(queue, callbacks=[on_message], accept=["json"]):
        fleet_connection.drain_events(timeout=5)
    assert seen == [(0, 1)], "taken from the list and recorded as unacked before the consumer saw it"
    assert client.hlen(keys.hash) == 0
    assert client.zcard(keys.index) == 0


def test_in_the_event_loop_an_ack_rides_on_the_next_peek_or_leaves_by_timer_within_a_moment(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    """In Celery's event loop an acknowledged message's record is removed by the next peek's write, not a round
    trip of its own; the connection's replies stay in step (the next message is taken and recorded as before),
    and an acknowledgement no peek carries is written by a timer within `ACK_CARRY_SECONDS`."""
    hub = Hub()
    fleet_connection.transport.event_loop = hub
    for n in range(2):
        _publish(fleet_connection, {"n": n})
    keys = unacked_keys("yclients")
    held: list[Any] = []
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(queue, callbacks=[lambda body, message: held.append(message)], accept=["json"]):
        fleet_connection.drain_events(timeout=5)
        first = held[0]
        first.ack()
        assert client.hexists(keys.hash, first.delivery_tag), "written alone, not carried"
        fleet_connection.drain_events(timeout=5)
        second = held[1]
        assert [message.payload for message in held] == [{"n": 0}, {"n": 1}]
        assert not client.hexists(keys.hash, first.delivery_tag), "the peek that took the second did not carry it"
        assert client.zscore(keys.index, first.delivery_tag) is None
        assert client.hexists(keys.hash, second.delivery_tag), "the second message taken without its record"
        second.ack()
        assert client.hexists(keys.hash, second.delivery_tag)
        time.sleep(ACK_CARRY_SECONDS * 2)
        hub.fire_timers()
        assert client.hlen(keys.hash) == 0, "the timer did not write the acknowledgement no peek carried"
        assert client.zcard(keys.index) == 0


def test_outside_an_event_loop_an_ack_is_written_at_once(fleet_connection: Connection, client: redis.Redis) -> None:
    _publish(fleet_connection, {"n": 1})
    held: list[Any] = []
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(queue, callbacks=[lambda body, message: held.append(message)], accept=["json"]):
        fleet_connection.drain_events(timeout=5)
        held[0].ack()
        assert client.hlen(unacked_keys("yclients").hash) == 0


def test_a_take_after_the_script_cache_was_emptied_loads_its_script_again(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    """The claim is sent by hash on the peek's connection; a SCRIPT FLUSH since the channel started (an operator,
    a restarted Redis) makes it load the script again, and the message is taken with its record."""
    _publish(fleet_connection, {"n": 1})
    fleet_connection.default_channel  # noqa: B018  (the channel registers its scripts when made)
    client.script_flush()
    seen: list[int] = []
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(
        queue, callbacks=[lambda body, message: seen.append(client.hlen(unacked_keys("yclients").hash))]
    ):
        fleet_connection.drain_events(timeout=5)
    assert seen == [1]
    assert client.llen(queue_key(QUEUE)) == 0


def test_a_taken_message_goes_back_to_the_queue_it_was_taken_from_not_where_its_envelope_says(
    fleet_connection: Connection, client: redis.Redis, redis_url: str
) -> None:
    """A producer may write any routing key into its envelope; a worker that dies holding the message must not
    hand it, through kombu's restore, to another worker type's queue."""
    _publish(fleet_connection, {"n": 1})
    fields = json.loads(client.rpop(queue_key(QUEUE)))
    fields["properties"]["delivery_info"] = {"exchange": "", "routing_key": "backups"}
    client.rpush(queue_key(QUEUE), json.dumps(fields))
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    held: list[Any] = []
    with fleet_connection.Consumer(queue, callbacks=[lambda body, message: held.append(message)], accept=["json"]):
        fleet_connection.drain_events(timeout=5)  # taken, never acknowledged: as by a worker that then died
    assert len(held) == 1
    with Connection(redis_url, transport=kombu_redis.Transport, transport_options=_options(visibility_timeout=1)) as c:
        time.sleep(1.1)
        c.default_channel.qos.restore_visible()
    assert client.llen("backups") == 0, "restored into the queue the envelope named"
    assert client.llen(queue_key(QUEUE)) == 1, "restored into the queue it was taken from"


def test_a_consumer_without_acknowledgements_takes_with_kombus_own_pop(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    _publish(fleet_connection, {"n": 1})
    bodies: list[Any] = []
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(queue, callbacks=[lambda body, message: bodies.append(body)], no_ack=True):
        fleet_connection.drain_events(timeout=5)
    assert bodies == [{"n": 1}]
    assert client.hlen(unacked_keys("yclients").hash) == 0, "nothing recorded for a consumer that never acks"


def test_an_entry_kombu_cannot_deliver_leaves_the_queue_for_the_spool_in_one_step(
    fleet_connection: Connection, client: redis.Redis
) -> None:
    client.lpush(queue_key(QUEUE), b"\xff not json")
    queue = KombuQueue(QUEUE, Exchange(""), routing_key=QUEUE)
    with fleet_connection.Consumer(queue, callbacks=[lambda body, message: pytest.fail("delivered")]):
        fleet_connection.drain_events(timeout=5)
    assert client.llen(queue_key(QUEUE)) == 0
    letter = json.loads(client.lindex(SPOOL_KEY, 0))
    assert (letter["source"], letter["error_type"]) == (f"broker.{QUEUE}", "UndecodableMessage")
    assert letter["reason"].startswith("undecodable broker message: UnicodeDecodeError")


def test_the_extensions_lua_steps_name_every_key_they_touch() -> None:
    """Keys come from KEYS only (Redis Cluster routes a script by them): none is concatenated inside Lua."""
    for script in (CLAIM, PARK):
        assert ".." not in script
        calls = re.findall(r"redis\.call\('\w+', ([^,)]+)", script)
        assert calls
        assert all(key.startswith("KEYS[") for key in calls), calls
