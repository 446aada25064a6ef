"""The baseline for bench/inbound.py: one bare Celery task doing what the fleet does for one message, without the
fleet's layers.

The same SQL statements the fleet's inbound path sends for a message (store under the chat's lock, the answer
lock and attempt count, the reads the assistant makes, the reply, the dialog state, the statuses, the delivery
lease and the mark), in the same transactions, and the same POST to the gateway, from one task on one
connection per process. No payload validation, no repository layer, no metrics, no assistant (the reply is
fixed), no retries, no dead letters: the floor of this work on this machine.
"""

from __future__ import annotations

import os

import httpx
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
_http: httpx.Client | None = None


@worker_process_init.connect
def _connect(**_: object) -> None:
    global _conn, _http
    _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    _http = httpx.Client(timeout=10)


@app.task(name="bench.bare.store_and_reply")
def store_and_reply(payload: dict) -> None:
    assert _conn is not None
    assert _http is not None
    conn, company, chat = _conn, payload["company_id"], payload["chat_id"]
    key = f"{company}:{chat}"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(1, hashtext(%s))", (key,))
        conn.execute(
            "INSERT INTO messages (company_id, chat_id, gateway_message_id, chat_seq, body, media, sent_at)"
            " SELECT %(company)s, %(chat)s, %(id)s, coalesce(max(chat_seq), 0) + 1, %(text)s, NULL, %(sent_at)s"
            " FROM messages WHERE company_id = %(company)s AND chat_id = %(chat)s"
            " HAVING EXISTS (SELECT 1 FROM companies WHERE id = %(company)s AND deleted_at IS NULL)"
            " ON CONFLICT (company_id, gateway_message_id) DO NOTHING RETURNING id",
            {"company": company, "chat": chat, "id": payload["gateway_message_id"], "text": payload["text"],
             "sent_at": payload["sent_at"]},
        )  # fmt: skip
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = 10000")
        conn.execute("SELECT pg_advisory_lock(2, hashtext(%s))", (key,))
        pending = conn.execute(
            "SELECT id, chat_seq, now() FROM messages WHERE company_id = %s AND chat_id = %s AND status = 'pending'"
            " ORDER BY sent_at, chat_seq",
            (company, chat),
        ).fetchall()
        ids = [row[0] for row in pending]
        conn.execute("UPDATE messages SET attempts = attempts + 1 WHERE id = ANY(%s)", (ids,))
    try:
        with conn.transaction():
            conn.execute("SELECT * FROM companies WHERE id = %s LIMIT 2", (company,)).fetchall()
            client = conn.execute(
                "SELECT id FROM clients WHERE company_id = %s AND phone = %s AND deleted_at IS NULL"
                " ORDER BY (yclients_id IS NULL), updated_at DESC LIMIT 1",
                (company, chat),
            ).fetchone()
            if client is None:
                client = conn.execute(
                    "INSERT INTO clients (company_id, phone) VALUES (%s, %s) RETURNING id", (company, chat)
                ).fetchone()
            conn.execute(
                "SELECT * FROM dialog_contexts WHERE company_id = %s AND chat_id = %s LIMIT 2", (company, chat)
            ).fetchall()
            conn.execute("SELECT id, body, media FROM messages WHERE id = ANY(%s)", (ids,)).fetchall()
            conn.execute(
                "SELECT * FROM staff WHERE company_id = %s AND NOT fired AND NOT hidden AND deleted_at IS NULL"
                " ORDER BY name",
                (company,),
            ).fetchall()
            idempotency_key = f"reply:{company}:{ids[0]}-{ids[-1]}"
            outbox_id = conn.execute(
                "INSERT INTO outbox (company_id, chat_id, idempotency_key, body, message_ids)"
                " VALUES (%s, %s, %s, 'ok', %s) RETURNING id",
                (company, chat, idempotency_key, ids),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO dialog_contexts (company_id, chat_id, client_id, state, data, answered_seq)"
                " VALUES (%s, %s, %s, 'idle', '{}', %s) ON CONFLICT (company_id, chat_id)"
                " DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data, answered_seq = EXCLUDED.answered_seq",
                (company, chat, client[0], max(row[1] for row in pending)),
            )
            conn.execute(
                "UPDATE messages SET status = 'answered', answered_at = now(), outbox_id = %s WHERE id = ANY(%s)",
                (outbox_id, ids),
            )
    finally:
        conn.execute("SELECT pg_advisory_unlock(2, hashtext(%s))", (key,))
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = now() + interval '30 seconds'"
        " WHERE id = %s AND status = 'pending' RETURNING *",
        (outbox_id,),
    ).fetchone()
    gateway_id = f"{company}:{idempotency_key}"  # the salon's session sends it, as the fleet's gateway client asks
    response = _http.post(
        os.environ["BENCH_GATEWAY_URL"],
        json={"company_id": company, "phone": chat, "message": "ok", "id": gateway_id},
        headers={"Idempotency-Key": gateway_id},
    )
    response.raise_for_status()
    conn.execute(
        "WITH done AS (UPDATE outbox SET status = 'done', finished_at = now() WHERE id = %s RETURNING id, company_id,"
        " chat_id) SELECT o.id FROM outbox o JOIN done ON o.company_id = done.company_id AND o.chat_id = done.chat_id"
        " WHERE o.status = 'pending' AND o.id > done.id ORDER BY o.id LIMIT 1",
        (outbox_id,),
    ).fetchall()
