"""One attempt counter for each piece of work. Where a row counts the attempts (a reply's outbox row, a
message, a webhook event), the task neither gives up before the row's cap nor tries past it; where none does,
the task's declared policy bounds the retries. Every delay is `backoff_delay`'s."""

from __future__ import annotations

import ast
import base64
import importlib
import inspect
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

import workers.yclients
from ops.standins.gateway import GatewayStandIn
from shared.core.failure import backoff_delay
from shared.core.locks import LockClass
from shared.core.settings import get_settings
from shared.core.topology import TASK_MODULES, Queue, TaskName
from shared.data.repositories.webhook_events import WebhookEventRepository
from shared.inbound.drain import RETRY_BASE_SECONDS, RETRY_CAP_SECONDS
from shared.inbound.store import chat_key, store_message
from shared.yclients.client import YClientsError
from tests.support.conversation import CHAT, message
from tests.support.failing_assistant import POISON
from tests.support.payloads import inbound_payload
from tests.support.processes import INBOUND_LISTS, running_worker, wait_for_idle, wait_until
from tests.support.seed import COMPANY
from workers.app import app
from workers.inbound import drain_chat_task
from workers.producer import enqueue_message
from workers.yclients import apply_webhook

ROOT = Path(__file__).resolve().parents[1]
for module in TASK_MODULES:
    importlib.import_module(module)


# ---- declarations ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TaskName))
def test_a_task_that_retries_declares_one_policy_that_fits_who_counts(name: TaskName) -> None:
    task = app.tasks[name]
    source = inspect.getsource(task.run)
    if "self.retry_when_due(" in source:
        assert task.max_retries is None, "its row counts the attempts: a limit on the task would contradict the row"
    if "self.retry_later(" in source:
        assert isinstance(task.max_retries, int), "no row counts these: the task bounds them"
        assert task.max_retries > 0


def _python_files() -> list[Path]:
    return [*(ROOT / "workers").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]


def test_tasks_retry_only_through_the_base_class() -> None:
    """A hand-written `self.retry(countdown=...)` would bring back a second policy (and a second counter)."""
    base = ROOT / "workers" / "base.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _python_files()
        if path != base
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "retry"
    ]
    assert offenders == []


def test_the_backoff_formula_is_written_once() -> None:
    """Any `2 ** <attempts>` outside `backoff_delay` is a second retry spacing."""
    home = ROOT / "shared" / "core" / "failure.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _python_files()
        if path != home
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and not isinstance(node.right, ast.Constant)
    ]
    assert offenders == []


# ---- a message: its row counts, its row gives up -------------------------------------------------------------
@pytest.fixture
def failing_assistant(answering_salon: psycopg.Connection, clean_redis: str) -> Iterator[redis.Redis]:
    """The salon answering in this process with an assistant that fails on POISON; yields the broker's Redis."""
    settings = get_settings()
    saved = settings.assistant, settings.inbound.max_attempts, settings.inbound.lock_timeout_ms
    settings.assistant = "tests.support.failing_assistant:FailingAssistant"
    try:
        yield redis.Redis.from_url(clean_redis)
    finally:
        settings.assistant, settings.inbound.max_attempts, settings.inbound.lock_timeout_ms = saved


def scheduled_drains(broker: redis.Redis) -> list[tuple[list[Any], float | None]]:
    """The chat drains published since the last look, taken off the queue: (arguments, due time or None)."""
    found = []
    while (raw := broker.rpop(Queue.INBOUND.value)) is not None:
        envelope = json.loads(raw)
        if envelope["headers"]["task"] != TaskName.DRAIN_CHAT:
            continue
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        eta = envelope["headers"].get("eta")
        found.append((args, datetime.fromisoformat(eta).timestamp() if eta else None))
    return found


def test_a_message_that_keeps_failing_is_tried_up_to_its_cap_then_given_up_by_its_row(
    failing_assistant: redis.Redis, answering_salon: psycopg.Connection
) -> None:
    """Each drain runs the one the previous drain scheduled, as the worker would; the cap is above the drain
    task's own retry limit, which must not end the message first."""
    cap = drain_chat_task.max_retries + 2
    get_settings().inbound.max_attempts = cap
    store_message(message(f"{POISON} сломай всё"))
    args: list[Any] = [COMPANY, CHAT]
    waits: list[float | None] = []
    for _ in range(cap + 2):
        started = datetime.now().timestamp()
        assert drain_chat_task.apply(args=args).state == "SUCCESS", "the task itself neither retried nor failed"
        drains = scheduled_drains(failing_assistant)
        if not drains:
            break
        [(args, due)] = drains
        waits.append(None if due is None else due - started)
    status, attempts = answering_salon.execute("SELECT status, attempts FROM messages").fetchone()
    assert (status, attempts) == ("failed", cap)
    sources = [row[0] for row in answering_salon.execute("SELECT source FROM dead_letters")]
    assert sources == ["inbound.answer"], "given up once, by the message's row"
    expected = [backoff_delay(attempt, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS) for attempt in range(1, cap + 1)]
    assert len(waits) == cap + 1
    for wait, delay in zip(waits[:cap], expected, strict=True):
        assert wait is not None
        assert delay <= wait < delay + 2, "each next drain when the message is due, by its own attempt count"
    assert waits[cap] is None, "after the dead letter, the chat's next drain at once"


def test_a_failing_burst_is_drained_again_one_message_at_a_time(failing_assistant: redis.Redis) -> None:
    store_message(message("Привет"))
    store_message(message(POISON))
    assert drain_chat_task.apply(args=[COMPANY, CHAT]).state == "SUCCESS"
    [(args, due)] = scheduled_drains(failing_assistant)
    assert args == [COMPANY, CHAT, True]
    assert due is not None


def test_a_drain_that_never_reaches_the_messages_is_retried_by_the_tasks_bounded_policy(
    failing_assistant: redis.Redis, answering_salon: psycopg.Connection
) -> None:
    """Another session holds the chat's lock: nothing is counted on the message, so the task's own
    `max_retries` bound the tries (an eager run retries at once), and the message stays for the sweep."""
    get_settings().inbound.lock_timeout_ms = 100
    store_message(message("Привет"))
    answering_salon.execute(
        "SELECT pg_advisory_lock(%s, hashtext(%s))", (int(LockClass.ANSWER_CHAT), chat_key(COMPANY, CHAT))
    )
    try:
        result = drain_chat_task.apply(args=[COMPANY, CHAT])
    finally:
        answering_salon.execute("SELECT pg_advisory_unlock_all()")
    assert result.state == "FAILURE"
    assert answering_salon.execute("SELECT status, attempts FROM messages").fetchone() == ("pending", 0)
    sources = [row[0] for row in answering_salon.execute("SELECT source FROM dead_letters")]
    assert sources == [f"task.{TaskName.DRAIN_CHAT}"]


# ---- a reply: its outbox row counts, its row gives up --------------------------------------------------------
@pytest.mark.slow
def test_a_reply_is_tried_exactly_as_often_as_its_row_allows_then_given_up(
    inbound_env: dict[str, str], gateway: GatewayStandIn, db: psycopg.Connection, tmp_path: Path
) -> None:
    """More attempts than deliver_reply's own retry limit once allowed (12): the row alone decides."""
    cap, refusals = 16, 1000
    gateway.fail_next(refusals)
    env = {**inbound_env, "FLEET_GATEWAY__MAX_ATTEMPTS": str(cap), "FLEET_GATEWAY__RETRY_BASE_SECONDS": "0.0001"}
    with running_worker("inbound", env, tmp_path) as worker:
        enqueue_message(inbound_payload("Привет"))
        wait_until(lambda: db.execute("SELECT status FROM outbox").fetchone() == ("failed",), 60, "the reply given up")
        wait_until(lambda: db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] > 0, 10, "its dead letter")
        # Every task the worker received has ended and nothing waits: a try the row did not ask for would show.
        wait_for_idle([worker], env["REDIS_URL"], INBOUND_LISTS, at_least=cap)
    assert db.execute("SELECT attempts FROM outbox").fetchone()[0] == cap
    assert refusals - gateway.failures_left == cap, "one request to the gateway per counted attempt"
    sources = [row[0] for row in db.execute("SELECT source FROM dead_letters")]
    assert sources == ["inbound.deliver"], "given up once, by the row; the task never gave up on its own"


# ---- a webhook event: its row counts, its row gives up -------------------------------------------------------
class UnavailableYClients:
    """Answers every read like YClients in an outage (or, `retryable` False, like a refusal no retry mends)."""

    def __init__(self, *, retryable: bool = True) -> None:
        self.retryable, self.calls = retryable, 0

    def one(self, path: str) -> None:
        self.calls += 1
        status = 503 if self.retryable else 403
        raise YClientsError(f"{status} from YClients", status=status, retryable=self.retryable)


@pytest.fixture
def webhook_event(salon: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> int:
    """A stored event about a client, its retries spaced closely enough for an eager run to find it due."""
    settings = get_settings().yclients
    monkeypatch.setattr(settings, "webhook_max_attempts", 4)
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 0.0001)
    event_id = WebhookEventRepository().store(COMPANY, "client", 7, "update")
    assert event_id is not None
    return event_id


def test_a_webhook_event_is_tried_exactly_as_often_as_its_row_allows_then_given_up(
    webhook_event: int, salon: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each retry is the one the row asked for (an eager run retries at once, so the waits are tiny): the task
    keeps no count of its own."""
    client = UnavailableYClients()
    monkeypatch.setattr(workers.yclients, "yclients_client", lambda: client)
    result = apply_webhook.apply(args=[webhook_event])
    assert result.state == "FAILURE"
    status, attempts, error = salon.execute(
        "SELECT status, attempts, last_error FROM yclients_webhook_events"
    ).fetchone()
    assert (status, attempts) == ("failed", 4)
    assert error == "YClientsError: 503 from YClients"
    assert client.calls == 4, "one request to YClients per counted attempt"
    sources = [row[0] for row in salon.execute("SELECT source FROM dead_letters")]
    assert sources == [f"task.{TaskName.APPLY_WEBHOOK}"], "given up once, by the row"


def test_a_webhook_event_no_retry_can_mend_is_given_up_at_its_first_attempt(
    webhook_event: int, salon: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = UnavailableYClients(retryable=False)
    monkeypatch.setattr(workers.yclients, "yclients_client", lambda: client)
    assert apply_webhook.apply(args=[webhook_event]).state == "FAILURE"
    assert salon.execute("SELECT status, attempts FROM yclients_webhook_events").fetchone() == ("failed", 1)
    assert client.calls == 1
    assert apply_webhook.apply(args=[webhook_event]).get() == "skipped", "a given-up event is not tried again"
