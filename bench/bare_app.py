"""The baseline for bench/inbound.py: a bare Celery task doing the same writes, without the fleet's layers.

No validation, no per-chat lock, no assistant, no delivery: one connection per process, three statements.
"""

from __future__ import annotations

import os

import psycopg
from celery import Celery
from celery.signals import worker_process_init

app = Celery("bench_bare", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="bench_bare",
    accept_content=["json"],
)
_conn: psycopg.Connection | None = None


@worker_process_init.connect
def _connect(**_: object) -> None:
    global _conn
    _conn = psycopg.connect(os.environ["DATABASE_URL"])


@app.task(name="bench.bare.store_and_reply")
def store_and_reply(payload: dict) -> None:
    assert _conn is not None
    with _conn.transaction():
        row = _conn.execute(
            "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, sent_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (
                payload["company_id"],
                payload["chat_id"],
                payload["gateway_message_id"],
                payload["seq"],
                payload["text"],
                payload["sent_at"],
            ),
        ).fetchone()
        outbox = _conn.execute(
            "INSERT INTO outbox (company_id, chat_id, idempotency_key, body, message_ids)"
            " VALUES (%s, %s, %s, %s, ARRAY[%s]::bigint[]) RETURNING id",
            (payload["company_id"], payload["chat_id"], f"bare:{row[0]}", "ok", row[0]),
        ).fetchone()
        _conn.execute(
            "UPDATE messages SET status = 'answered', answered_at = now(), outbox_id = %s WHERE id = %s",
            (outbox[0], row[0]),
        )
