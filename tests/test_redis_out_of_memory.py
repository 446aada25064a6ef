"""Redis out of memory does not stop the fleet: a real inbound worker on a Redis of the test's own, filled to its
maxmemory (noeviction, as `fleet check` requires) by something else, stays up, says so once, and answers again
by itself once memory is freed; producers refuse meanwhile in one clear line, and the health report says why.

Before the fix the worker's main process ended within a second of the broker filling up, with "Unrecoverable
error: OutOfMemoryError" raised from the consumer's blocking peek (BLMOVE, which Redis refuses over its
maxmemory) into kombu's event loop, and nothing answered again until someone restarted it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Producer

from ops.standins.gateway import GatewayStandIn
from shared.core.kombu_contract import unacked_keys
from shared.core.settings import Settings, load_settings
from shared.core.topology import Queue
from shared.health.checks import check_queues
from tests.support.payloads import inbound_payload
from tests.support.processes import ROOT, FleetProcess, wait_until
from tests.support.redis_server import OwnRedis
from workers.config import build_celery_config

pytestmark = pytest.mark.slow

MAXMEMORY = 20 * 2**20
REFUSED = "Redis refuses writes: Redis is out of memory (maxmemory reached, noeviction); "
RESUMED = "Redis accepts writes again"

# `enqueue_message` as a Python producer calls it, in a process of its own pointed at the test's Redis.
PRODUCER = """
import json, sys
from workers.producer import BrokerError, enqueue_message
try:
    print("enqueued", enqueue_message(json.loads(sys.argv[1])))
except BrokerError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(75)
"""


class Filler:
    """Something else filling the broker: 1 MB values until Redis refuses one, then 4 MB more in one script (a
    script that has begun writing may finish past maxmemory). Redis then stays over its limit, as it does when
    something keeps writing, instead of at the edge, where a client buffer freed lets a small write through."""

    PREFIX = "filler:"

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def fill(self) -> None:
        for number in range(1000):
            try:
                self.client.set(f"{self.PREFIX}{number}", b"x" * 2**20)
            except redis.exceptions.OutOfMemoryError:
                break
        self.client.eval(
            "for n = 1, 4 do redis.call('SET', KEYS[1] .. n, string.rep('x', 1048576)) end", 1, self.PREFIX + "over:"
        )
        assert self.used() > MAXMEMORY

    def used(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def empty(self) -> None:
        self.client.delete(*self.client.keys(self.PREFIX + "*"))
        self.client.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    redis.Redis.from_url(server.url).config_set("maxmemory", MAXMEMORY)  # noeviction: OwnRedis starts with it
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def control(broker: OwnRedis) -> Iterator[Celery]:
    """Remote control over the test's Redis, as Flower or `fleet ping` use it."""
    app = Celery("control")
    app.conf.update(build_celery_config(load_settings(redis_url=broker.url)))
    app.conf.result_backend = None
    yield app
    app.close()


class Asker:
    """A remote-control question on its way when Redis fills up (Flower's or `fleet ping`'s, asked a moment
    before): its answer queue was bound before, the question is published after (a publish needs no memory)."""

    def __init__(self, control: Celery, connection: Connection) -> None:
        self.channel = connection.default_channel
        self.mailbox = control.control.mailbox(connection)
        self.mailbox.reply_queue(self.channel).declare()

    def ask(self, node: str) -> None:
        question = {
            "method": "ping",
            "arguments": {},
            "destination": [node],
            "pattern": None,
            "matcher": None,
            "ticket": "asked-before-redis-filled-up",
            "reply_to": {"exchange": self.mailbox.reply_exchange.name, "routing_key": self.mailbox.oid},
        }
        Producer(self.channel).publish(
            question,
            exchange=self.mailbox.exchange,
            declare=[self.mailbox.exchange],
            headers={"clock": 1, "expires": time.time() + 5},
            serializer="json",
        )


def produce(env: dict[str, str], payload: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRODUCER, json.dumps(payload)], env=env, cwd=ROOT, capture_output=True, text=True
    )


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


def test_the_inbound_worker_rides_out_redis_out_of_memory(
    inbound_env: dict[str, str],
    broker: OwnRedis,
    control: Celery,
    gateway: GatewayStandIn,
    settings: Settings,
    tmp_path: Path,
) -> None:
    stalled = tmp_path / "stalled"  # the slow assistant stalls once, when this is missing, and writes it
    stalled.touch()
    env = {
        **inbound_env,
        "REDIS_URL": broker.url,
        "FLEET_ASSISTANT": "tests.support.slow_assistant:SlowAssistant",
        "SLOW_ASSISTANT_MARKER": str(stalled),
        "SLOW_ASSISTANT_SECONDS": "5",
    }
    admin = redis.Redis.from_url(broker.url)
    remote = control.connection_for_write()  # one connection, as a dashboard keeps: its reply queue declared once
    worker = FleetProcess(
        ["worker", "inbound", "--concurrency", "1", "--name", "inbound@oom", "--loglevel", "INFO"],
        env,
        tmp_path / "inbound.log",
    )
    try:
        wait_until(lambda: "ready." in worker.output() or worker.proc.poll() is not None, 30, "the inbound worker")
        assert worker.proc.poll() is None, worker.output()
        pid = worker.pid

        # Baseline: a message is answered, and remote control answers.
        assert produce(env, inbound_payload("Привет", chat="+79110000201")).returncode == 0
        wait_until(lambda: gateway.count() == 1, 30, "the first message to be answered")
        assert control.control.ping(destination=["inbound@oom"], timeout=2, connection=remote)
        assert check_queues(settings, admin).problems == []
        asker = Asker(control, remote)

        # A message being answered when Redis fills up: answered, and its acknowledgement goes through.
        stalled.unlink()
        assert produce(env, inbound_payload("Хочу записаться", chat="+79110000206")).returncode == 0
        wait_until(stalled.exists, 30, "the answer to be under way")
        filler = Filler(broker.url)
        filler.fill()
        oom_at = time.monotonic()
        published = admin.info("commandstats")["cmdstat_publish"]["calls"]
        unacked = unacked_keys(Queue.INBOUND.value).hash  # kombu's record of the messages the worker holds
        wait_until(
            lambda: (gateway.count() == 2 and admin.hlen(unacked) == 0) or worker.proc.poll() is not None,
            30,
            "the message under way to be answered and acknowledged",
        )
        assert worker.proc.poll() is None, f"the worker died when Redis filled up:\n{worker.output()}"

        # Producers refuse, in one line that names the cause.
        refused = produce(env, inbound_payload("Алло?", chat="+79110000202"))
        assert refused.returncode == 75, refused.stdout + refused.stderr
        assert refused.stdout.strip() == (
            "BrokerRefusedError: the broker refused the message: Redis is out of memory (maxmemory reached,"
            " noeviction); nothing was enqueued"
        )
        cli = fleet(env, "enqueue", "--company", "962302", "--chat", "+79110000203", "--text", "Есть кто?")
        assert cli.returncode == 75
        assert "Traceback" not in cli.stdout + cli.stderr
        assert cli.stderr.strip().splitlines() == [
            "fleet enqueue: the broker refused the message: Redis is out of memory (maxmemory reached, noeviction);"
            " nothing was enqueued"
        ]
        lines = tmp_path / "messages.jsonl"
        lines.write_text("".join(json.dumps(inbound_payload(text, chat="+79110000204")) + "\n" for text in "12"))
        from_file = fleet(env, "enqueue", "--file", str(lines))
        assert from_file.returncode == 75
        assert "Traceback" not in from_file.stdout + from_file.stderr
        assert from_file.stderr.strip().splitlines() == [
            "fleet enqueue: stopped at line 1: the broker refused the message: Redis is out of memory (maxmemory"
            " reached, noeviction); nothing was enqueued (before it: 0 enqueued, 0 rejected)"
        ]

        # The health report says Redis refuses writes, and why, in figures.
        during = check_queues(settings, admin)
        assert during.status == "unhealthy"
        assert any(
            problem.startswith("Redis refuses writes: out of memory (used ")
            and "of maxmemory 20.0 MB, policy noeviction)" in problem
            for problem in during.problems
        ), during.problems

        # A remote-control question that reaches the worker now: its answer is refused, which must not end it.
        asker.ask("inbound@oom")
        wait_until(lambda: "a remote-control answer was dropped" in worker.output(), 10, "the answer to be dropped")

        # The worker stays up, saying so once per loop, not once per try.
        time.sleep(max(0.0, 12 - (time.monotonic() - oom_at)))
        assert worker.proc.poll() is None, f"the worker died under OOM:\n{worker.output()}"
        assert filler.used() > MAXMEMORY, "the test's Redis was over its maxmemory all along"
        output = worker.output()
        assert "Unrecoverable error" not in output
        said = Counter(line.split(REFUSED)[1] for line in output.splitlines() if REFUSED in line)
        assert said, output
        assert set(said.values()) == {1}, said  # each loop once, however many tries
        assert any(what.startswith("the worker's consumer") for what in said), said
        assert any(what.startswith("the lanes router") for what in said), said
        assert RESUMED not in output
        # Celery's events and heartbeats are PUBLISHes, which Redis takes whatever its memory.
        publish = admin.info("commandstats")["cmdstat_publish"]
        assert publish["calls"] > published
        assert publish["rejected_calls"] == 0

        filler.empty()

        # Memory freed: the same worker (no restart) answers again, by itself.
        assert produce(env, inbound_payload("Я снова тут", chat="+79110000205")).returncode == 0
        wait_until(lambda: gateway.count() == 3, 30, "a message sent after memory was freed to be answered")
        assert worker.pid == pid
        assert worker.proc.poll() is None
        after = check_queues(settings, admin)
        assert after.problems == [], after.problems
        assert after.details["redis_writes"] == "accepted"
        output = worker.output()
        assert output.count(RESUMED) >= 1
        assert "Traceback" not in output, output
        assert [delivery.phone for delivery in gateway.deliveries] == ["+79110000201", "+79110000206", "+79110000205"]
        wait_until(lambda: admin.hlen(unacked) == 0, 10, "every message acknowledged")
    finally:
        worker.stop()
        remote.close()
        admin.close()
