"""The corpus of bad producer input against a real inbound worker: every case answered or kept with a reason.

Nothing is lost (each case is found where it should end), no case kills the worker, no chat is left with a
pending message, and a good message sent after the whole corpus is answered.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from ops.standins.gateway import GatewayStandIn
from shared.data.dead_letters import file_spooled
from shared.inbound.payload import TASK_NAME
from tests.support.bad_input import Case, build_corpus, raw_bytes
from tests.support.payloads import inbound_payload
from tests.support.processes import running_worker, wait_until
from tests.support.raw_broker import push
from workers.app import app
from workers.producer import enqueue_message

pytestmark = pytest.mark.slow


def _send(case: Case, redis_url: str) -> None:
    for _ in range(case.sends):
        if case.kind == "raw":
            push(redis_url, "inbound", raw_bytes(case))
        elif case.kind == "payload":
            app.send_task(
                TASK_NAME, kwargs={"payload": case.payload}, task_id=case.task_id, queue="inbound", **case.options
            )
        else:
            app.send_task(case.task, args=case.args, kwargs=case.kwargs, task_id=case.task_id, queue="inbound")


def _dead_letters(db: psycopg.Connection, case: Case) -> list[tuple[str, str]]:
    needle = case.needle or case.marker
    return db.execute(
        "SELECT source, reason FROM dead_letters WHERE task_id = %s OR strpos(payload::text, %s) > 0",
        (case.task_id, needle),
    ).fetchall()


def _chat_state(db: psycopg.Connection, chat: str) -> tuple[list[str], list[str]]:
    statuses = [row[0] for row in db.execute("SELECT status FROM messages WHERE chat_id = %s", (chat,))]
    replies = [row[0] for row in db.execute("SELECT status FROM outbox WHERE chat_id = %s", (chat,))]
    return statuses, replies


def _settled(db: psycopg.Connection, case: Case) -> bool:
    if case.outcome == "dead":
        return bool(_dead_letters(db, case))
    statuses, replies = _chat_state(db, case.chat)
    return bool(statuses) and set(statuses) <= {"answered", "merged"} and replies == ["done"]


def test_every_bad_input_ends_answered_or_dead_lettered_and_the_worker_goes_on(
    db: psycopg.Connection, inbound_env: dict[str, str], gateway: GatewayStandIn, clean_redis: str, tmp_path: Path
) -> None:
    corpus = build_corpus()
    assert len(corpus) >= 60
    with running_worker("inbound", inbound_env, tmp_path, concurrency=2) as worker:
        for case in corpus:
            _send(case, clean_redis)
        enqueue_message(inbound_payload("Здравствуйте", chat="+79110009999"))
        wait_until(lambda: gateway.to("+79110009999"), 60, f"the good message's reply\n{worker.output()[-3000:]}")

        deadline = time.monotonic() + 120
        open_cases = list(corpus)
        while open_cases and time.monotonic() < deadline:
            file_spooled()
            open_cases = [case for case in open_cases if not _settled(db, case)]
            time.sleep(0.5)
        output = worker.output()
        assert worker.proc.poll() is None, f"the worker died:\n{output[-5000:]}"
        assert "Unrecoverable error" not in output
        assert "WorkerLostError" not in output

    lost = [f"{case.marker} {case.name} (expected {case.outcome})" for case in open_cases]
    assert not lost, "cases that ended nowhere:\n" + "\n".join(lost)
    for case in corpus:
        statuses, _ = _chat_state(db, case.chat)
        if case.outcome == "dead":
            assert not statuses, f"{case.name}: dead-lettered, yet stored as a message of its chat"
            assert all(reason for _, reason in _dead_letters(db, case)), case.name
        else:
            assert len(statuses) == 1, f"{case.name}: stored once"
    assert db.execute("SELECT count(*) FROM messages WHERE status = 'pending'").fetchone()[0] == 0, "no chat stuck"
    assert gateway.repeats == 0
    answered = sum(case.outcome == "answered" for case in corpus)
    print(f"\ncorpus: {len(corpus)} cases, {answered} answered, {len(corpus) - answered} dead-lettered, lost 0")
