"""The worker's side of the broker: a message it cannot decode or must not run is kept, never fatal.

Kombu's Redis transport decodes each popped message in the worker's event loop; a value that is not JSON,
or JSON that is not a kombu envelope, raises there and ends the whole worker with "Unrecoverable error"
(celery issue 4308). The channel below decodes each message itself first and parks what fails in the
dead-letter spool (`shared.data.dead_letters.SPOOL_KEY`) with the reason, then goes on consuming.

The consumer then refuses, and keeps, every decoded message it must not run: a task of another worker type or
one of Celery's canvas built-ins (`task_allowed`), an ETA further ahead than the queue's visibility timeout
(Redis would deliver it again while it waits), and messages Celery itself cannot read or has no task for.

Kombu pops with BRPOP and only then records the message as unacked: a main process killed between the two
(SIGKILL, the OOM killer) loses the message. The channel pops instead with one atomic BLMOVE into an in-flight
list of its own (`fleet:inflight:<queue>:<consumer>`), and removes the entry once kombu has recorded it. A
consumer keeps an "alive" key fresh; any consumer requeues the in-flight entries of one whose key expired.
A message can then be delivered twice (never lost): every task is idempotent.

Both classes reach into kombu and Celery internals (`_brpop_read`, `_get`, `_callbacks`, the consumer's
`on_*` hooks); the versions they were written against are pinned in pyproject.toml and the broker tests
exercise every path.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from celery.worker.consumer import Consumer
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads

from shared.core.settings import get_settings
from shared.core.topology import hide_private_arguments, published_to
from shared.data.dead_letters import dead_letter_row, spool

log = logging.getLogger(__name__)

RawDeliver = Callable[[dict[str, Any]], Any]
KEPT_END = 50_000  # bytes kept from each end of an oversized queue entry
INFLIGHT = "fleet:inflight:"
ALIVE = "fleet:inflight-alive:"
INFLIGHT_KEYS = "fleet:inflight-keys"  # every consumer's in-flight list, so no one scans the keyspace


def inflight_key(queue: str, consumer: str) -> str:
    return f"{INFLIGHT}{queue}:{consumer}"


def requeue_orphans(client: Any, own_consumer: str | None = None) -> int:
    """Move the in-flight entries of consumers presumed dead back to the consuming end of their queue."""
    moved = 0
    for raw_key in client.smembers(INFLIGHT_KEYS):
        key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
        queue, _, consumer = key.removeprefix(INFLIGHT).partition(":")
        if consumer == own_consumer or client.exists(ALIVE + consumer):
            continue
        while client.lmove(key, queue, "RIGHT", "RIGHT") is not None:
            moved += 1
        client.srem(INFLIGHT_KEYS, key)
    if moved:
        log.warning("requeued %s messages popped by consumers that died before registering them", moved)
    return moved


def park(source: str, reason: str, payload: Any, *, error_type: str, task_id: Any = None) -> None:
    """Keep a refused broker message in the spool; never raises (the event loop must go on)."""
    try:
        row = dead_letter_row(source, reason, payload, error_type=error_type, task_id=task_id)
        spool(row)
    except Exception:  # the last line of defence: log it, and keep consuming
        log.exception("could not park a refused broker message from %s", source)


def _park_undecodable(queue: str, exc: Exception, raw: Any) -> None:
    park(
        f"broker.{published_to(queue)}",
        f"undecodable broker message: {type(exc).__name__}: {str(exc)[:300]}",
        {"queue": queue, "raw": raw},
        error_type="UndecodableMessage",
    )


class QuarantiningChannel(kombu_redis.Channel):
    """A Redis channel that parks undecodable messages instead of raising into the event loop, and pops
    through an in-flight list so that a killed consumer loses nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumer_id = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._moving_from: str | None = None
        self._alive_until = 0.0
        self._next_orphan_scan = 0.0
        self._registered: set[str] = set()

    def _stay_alive(self, target: str) -> None:
        """Register the in-flight list about to be used; refresh this consumer's alive key (every third of its
        lifetime) and now and then requeue orphans."""
        ttl = get_settings().broker_inflight_ttl_seconds
        now = time.monotonic()
        if target in self._registered and now < self._alive_until - 2 * ttl / 3:
            return
        with self.conn_or_acquire() as client:
            client.set(ALIVE + self.consumer_id, "1", px=int(ttl * 1000))
            client.sadd(INFLIGHT_KEYS, target)
            self._registered.add(target)
            self._alive_until = now + ttl
            if now >= self._next_orphan_scan:
                self._next_orphan_scan = now + ttl / 2
                requeue_orphans(client, self.consumer_id)

    def _brpop_start(self, timeout: float | None = None) -> None:
        timeout = self.brpop_timeout if timeout is None else timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, priority) for priority in self.priority_steps for queue in queues]
        if len(keys) != 1 or self.global_keyprefix:
            self._moving_from = None  # several lists: kombu's own BRPOP keeps their order
            super()._brpop_start(timeout)
            return
        target = inflight_key(queues[0], self.consumer_id)
        self._stay_alive(target)
        self._moving_from = queues[0]
        self._in_poll = self.client.connection
        self.client.connection.send_command("BLMOVE", keys[0], target, "RIGHT", "LEFT", timeout or 0)

    def _decode(self, raw: bytes, queue: str) -> dict[str, Any] | None:
        limit = get_settings().broker_max_message_bytes
        if len(raw) > limit:
            # kombu writes the headers (task id and name) after the body: keep both ends of the entry.
            park(
                f"broker.{published_to(queue)}",
                f"broker message of {len(raw)} bytes is over the {limit}-byte limit; not decoded",
                {"queue": queue, "bytes": len(raw), "raw_head": raw[:KEPT_END], "raw_tail": raw[-KEPT_END:]},
                error_type="OversizedMessage",
            )
            return None
        try:
            return loads(raw.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001  (any decoding failure is this message's, not the worker's)
            _park_undecodable(queue, exc, raw)
            return None

    def _checked(self, envelope: Any, queue: str) -> bool:
        try:
            self._check_envelope(envelope)
        except Exception as exc:  # noqa: BLE001  (a broken envelope is this message's fault, not the worker's)
            _park_undecodable(queue, exc, envelope)
            return False
        return True

    def _check_envelope(self, envelope: Any) -> None:
        """Build the kombu message once, as the consumer will: whatever would fail there fails here."""
        if not isinstance(envelope, dict):
            raise TypeError(f"a kombu envelope is a JSON object, not {type(envelope).__name__}")
        message = self.Message(envelope, channel=self)
        if not isinstance(message.delivery_tag, str):
            raise TypeError("properties.delivery_tag is not a string")
        delivery = envelope["properties"].get("delivery_info")
        if not isinstance(delivery, dict) or not all(
            isinstance(delivery.get(k), str) for k in ("exchange", "routing_key")
        ):
            # kombu's unacked index needs both to restore the message after a worker is lost
            raise TypeError("properties.delivery_info needs exchange and routing_key strings")

    def _brpop_read(self, **options: Any) -> bool:
        if self._moving_from is not None:
            return self._blmove_read(self._moving_from, **options)
        try:
            key, raw = self._reply("BRPOP", **options)
            queue = kombu_redis.bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            envelope = self._decode(raw, queue)
            if envelope is not None:
                self.connection._deliver(envelope, queue)
            return True
        finally:
            self._in_poll = None

    def _reply(self, command: str, **options: Any) -> Any:
        """The blocking pop's answer; `Empty` when it timed out. A lost connection is dropped so the next poll
        reconnects (an entry already moved in flight waits in its list)."""
        try:
            reply = self.client.parse_response(self.client.connection, command, **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        if reply is None or reply == []:  # timed out; an empty entry (b"") is a message, parked as undecodable
            raise kombu_redis.Empty()
        return reply

    def _blmove_read(self, queue: str, **options: Any) -> bool:
        target = inflight_key(queue, self.consumer_id)
        try:
            raw = self._reply("BLMOVE", **options)
            self._queue_cycle.rotate(queue)
            envelope = self._decode(raw, queue)
            try:
                if envelope is not None:
                    self.connection._deliver(envelope, queue)  # kombu records it as unacked here
            except BaseException:
                with self.conn_or_acquire() as client:  # not delivered: back to the front of its queue
                    client.lmove(target, queue, "LEFT", "RIGHT")
                raise
            with self.conn_or_acquire() as client:
                client.lrem(target, 1, raw)
            return True
        finally:
            self._in_poll = None

    def _get(self, queue: str) -> dict[str, Any]:
        with self.conn_or_acquire() as client:
            for priority in self.priority_steps:
                while raw := client.rpop(self._q_for_pri(queue, priority)):
                    envelope = self._decode(raw, queue)
                    if envelope is not None and self._checked(envelope, queue):
                        return envelope
            raise kombu_redis.Empty()

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """Every delivery (queue or broadcast) passes the envelope check before kombu builds its message."""
        tag = super().basic_consume(queue, *args, **kwargs)
        deliver: RawDeliver = self.connection._callbacks[queue]

        def checked(envelope: dict[str, Any]) -> Any:
            return deliver(envelope) if self._checked(envelope, queue) else None

        self.connection._callbacks[queue] = checked
        return tag


class QuarantiningTransport(kombu_redis.Transport):
    Channel = QuarantiningChannel


def use_quarantining_transport() -> None:
    """Serve redis:// and rediss:// broker URLs with the transport above (kombu keeps its URL and TLS handling)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:QuarantiningTransport"


def _message_record(message: Any, body: Any = None) -> dict[str, Any]:
    return {
        "queue": (getattr(message, "delivery_info", None) or {}).get("routing_key"),
        "headers": getattr(message, "headers", None),
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "body": body if body is not None else getattr(message, "body", None),
    }


def _task_id(message: Any) -> Any:
    headers = getattr(message, "headers", None)
    return headers.get("id") if isinstance(headers, dict) else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _within_limits(timelimit: Any, conf: Any) -> bool:
    """A message may shorten its (hard, soft) time limits, never lengthen them past the worker type's."""
    if not isinstance(timelimit, list | tuple) or len(timelimit) != 2:
        return False
    ceilings = (conf.task_time_limit, conf.task_soft_time_limit)
    for value, ceiling in zip(timelimit, ceilings, strict=True):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= (ceiling or value):
            return False
    return True


class GuardedConsumer(Consumer):
    """Celery's consumer, keeping every message it refuses and refusing what this worker must not run."""

    def refusal(self, message: Any) -> tuple[str, str] | None:
        """(error type, reason) when this worker must not run the message; None lets Celery go on."""
        headers = message.headers
        if not isinstance(headers, dict) or "task" not in headers:
            return None  # Celery's own paths decide, and the hooks below keep what they refuse
        name = headers["task"]
        if not isinstance(name, str) or name not in self.app.tasks:
            return "RefusedTask", f"task {str(name)[:200]!r} is not accepted by this worker type"
        if not isinstance(headers.get("id"), str):
            return "InvalidTaskMessage", "the task id header is missing or not a string"
        now = datetime.now(UTC)
        for header in ("eta", "expires"):
            if headers.get(header) is not None and _parse_time(headers[header]) is None:
                return "InvalidTaskMessage", f"the {header} header is not an ISO 8601 time"
        timelimit = headers.get("timelimit")
        if timelimit is not None and not _within_limits(timelimit, self.app.conf):
            return "RefusedTask", "the timelimit header asks for more than this worker type's time limits"
        eta = _parse_time(headers.get("eta"))
        limit = self.app.conf.broker_transport_options.get("visibility_timeout", 3600)
        if eta is not None and (eta - now).total_seconds() > limit:
            return "RefusedTask", f"eta {eta.isoformat()} is more than the visibility timeout ({limit} s) ahead"
        expires = _parse_time(headers.get("expires"))
        if expires is not None and expires < now and getattr(self.app.tasks[name], "dead_letter_on_failure", False):
            return "Expired", f"expired at {expires.isoformat()} before it was received"
        return None

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def guarded(message: Any) -> Any:
            try:
                refused = self.refusal(message)
                if refused is None:
                    # Producers in other languages set their own reprs (or none, and Celery would repr the args).
                    hide_private_arguments(message.headers, message.headers["task"])
                    # The task decides whether its result is kept: Celery's send_task marks every message
                    # "ignore_result: false", which stored each inbound message's result in Redis for an hour.
                    message.headers["ignore_result"] = self.app.tasks[message.headers["task"]].ignore_result
                    return handle(message)
            except Exception as exc:  # one message's fault must not end the event loop
                log.exception("a task message could not be handled")
                refused = "InvalidTaskMessage", f"message could not be handled: {type(exc).__name__}: {str(exc)[:300]}"
            error_type, reason = refused
            self._keep("broker.refused", reason, message, None, error_type)
            try:
                message.reject_log_error(log, self.connection_errors)
            except Exception:  # noqa: BLE001  (already acknowledged or rejected by the failed handler)
                log.warning("refused message was already settled")
            return None

        return guarded

    def _keep(self, source: str, reason: str, message: Any, body: Any, error_type: str) -> None:
        park(source, reason, _message_record(message, body), error_type=error_type, task_id=_task_id(message))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        reason = f"message body cannot be decoded: {type(exc).__name__}: {str(exc)[:300]}"
        self._keep("broker.decode", reason, message, None, "UndecodableMessage")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._keep("broker.unknown", "message is not a Celery task message", message, body, "UnknownMessage")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        reason = f"task is not accepted by this worker type: {str(exc)[:200]}"
        self._keep("broker.refused", reason, message, body, "RefusedTask")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        reason = f"invalid task message: {type(exc).__name__}: {str(exc)[:300]}"
        self._keep("broker.invalid", reason, message, body, "InvalidTaskMessage")
        super().on_invalid_task(body, message, exc)
