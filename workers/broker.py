"""The worker's side of the broker: a message it cannot decode or must not run is kept, never fatal, and a
message taken from a queue is never lost between the pop and its record.

Kombu's Redis transport decodes each popped message in the worker's event loop; a value that is not JSON,
or JSON that is not a kombu envelope, raises there and ends the whole worker with "Unrecoverable error"
(celery issue 4308). The channel below reads each entry itself first and parks what fails in the
dead-letter spool (`shared.data.dead_letters.SPOOL_KEY`) with the reason, then goes on consuming.

Kombu pops with BRPOP and only then records the message in its unacked hash: a main process killed between
the two (SIGKILL, the OOM killer) loses the message. The channel waits instead with a blocking peek
(`BLMOVE queue queue RIGHT RIGHT` moves nothing) and then, in one Lua step, takes the entry it read and writes
kombu's own unacked record of it (the hash and the index the visibility-timeout restore scans). A message
taken from a queue is therefore always in kombu's unacked hash until it is acknowledged: kombu's restore is
its one recovery path (docs/decisions/0001-broker-recovery.md); kombu's own `QoS.append` then keeps it in memory
only (writing the same record again was a round trip a message for nothing). In Celery's event loop an
acknowledgement's removal of the record rides on the next peek's write (`carry_ack`), and the claim is sent on
the peek's own connection: two round trips a message in all. An entry that cannot be delivered leaves the
queue for the spool in one step the same way.

The consumer then refuses, and keeps, every decoded message it must not run: a task of another worker type or
one of Celery's canvas built-ins (`task_allowed`), a message in Celery's protocol 1, an ETA further ahead than
the queue's visibility timeout (Redis would deliver it again while it waits), and messages Celery itself
cannot read or has no task for.

A Redis that refuses writes (out of memory under noeviction, a read-only replica, unable to persist) ended the
worker too: the refusal is a `ResponseError`, which Celery does not recover from. The channel waits it out
instead (shared/core/refused_writes.py): no message is taken meanwhile, the next peek waits on the server,
acknowledgements do without the transaction Redis then refuses, and the worker goes on by itself.

Both classes reach into kombu and Celery internals (`_brpop_start`, `_brpop_read`, `_get`, `_callbacks`,
`_deliver`, the consumer's `on_*` hooks); `shared/core/kombu_contract.py` holds what they assume about the
envelope and the keys, and `tests/test_kombu_contract.py` checks all of it against the installed versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from celery.worker.consumer import Consumer
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

from shared.core.kombu_contract import (
    PROTOCOL_1_REFUSAL,
    Envelope,
    celery_protocol,
    protocol_1_task_id,
    queue_key,
)
from shared.core.refused_writes import RefusedWrites, refusal_cause
from shared.core.settings import get_settings
from shared.core.topology import hide_private_arguments, published_to
from shared.data.dead_letters import SPOOL_KEY, dead_letter_row, spool
from shared.inbound.lanes import READY
from workers.lanes import ready_taken

log = logging.getLogger(__name__)

RawDeliver = Callable[[dict[str, Any]], Any]


def _restore_to_own_queue(fields: dict[str, Any], queue: str) -> None:
    """kombu records a taken message, and its restore puts it back, by the envelope's own exchange and routing
    key: a producer could name another worker type's queue there, and a message it pushed into the intake would
    come back, after a crash, where it was never allowed. The fleet writes where it was taken from instead (the
    intake for the ready list: the router deals it out again)."""
    fields["properties"]["delivery_info"] = {"exchange": "", "routing_key": published_to(queue)}


ACK_CARRY_SECONDS = 0.05  # an acknowledgement no peek has carried by then is sent on its own
KEPT_END = 50_000  # bytes kept from each end of an oversized queue entry
WAIT_KEY = "fleet:broker:wait"  # a stream nobody writes: a consumer waits on it after Redis refused a write

# Take the entry at the consuming end of a queue if it is still the one the consumer peeked, and record it
# as unacknowledged the way kombu's QoS.append does, in one step. 0: another consumer took it first; else 1 + the
# entries still in the queue (the lanes router tops the ready list up by it). The record
# is written before the entry is taken: a Redis that refuses writes (over its maxmemory) refuses a script's first
# write that needs memory but lets a script that has written once finish, so with RPOP first the message would
# be taken while kombu's own record of it (QoS.append) is refused; this way nothing is taken at all.
CLAIM = """
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
redis.call('RPOP', KEYS[1])
return 1 + redis.call('LLEN', KEYS[1])
"""

# The same for an entry that cannot be delivered: it leaves the queue for the dead-letter spool in one step.
PARK = """
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 0 end
redis.call('RPOP', KEYS[1])
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
"""


def park(source: str, reason: str, payload: Any, *, error_type: str, task_id: Any = None) -> None:
    """Keep a refused broker message in the spool; never raises (the event loop must go on)."""
    try:
        row = dead_letter_row(source, reason, payload, error_type=error_type, task_id=task_id)
        spool(row)
    except Exception:  # the last line of defence: log it, and keep consuming
        log.exception("could not park a refused broker message from %s", source)


def _spool_entry(row: dict[str, Any]) -> str:
    """A dead-letter row as `shared.data.dead_letters.spool` writes it (filed by `file_spooled`)."""
    return json.dumps({**row, "spooled_at": datetime.now(UTC).isoformat()}, ensure_ascii=True)


class Unreadable(NamedTuple):
    """A queue entry kombu could not deliver: the dead letter it becomes."""

    source: str
    reason: str
    payload: dict[str, Any]
    error_type: str

    def row(self) -> dict[str, Any]:
        return dead_letter_row(self.source, self.reason, self.payload, error_type=self.error_type)


class RefusalTolerantQoS(kombu_redis.QoS):
    """kombu's record of unacknowledged messages, for a Redis that may refuse writes (refused_writes.py).

    kombu removes an acknowledged message's record inside MULTI/EXEC, and a Redis over its maxmemory refuses
    every command queued in a transaction, even the two that free memory: the ack raised into the event loop and
    ended the worker. Here the record is removed without a transaction (ZREM and HDEL alone are never refused for
    memory). Where Redis refuses even those (a read-only replica, MISCONF), or a requeue (it pushes the message
    back), the record stays: kombu's visibility-timeout restore delivers the message again later (every task is
    idempotent), and the worker is not held up meanwhile."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """A message the channel took with its CLAIM step already has kombu's record, written in the same Lua step
        as the take: kombu's own write of the same record would be one more round trip for nothing."""
        if delivery_tag == self.channel._claimed_tag:
            virtual.QoS.append(self, message, delivery_tag)  # the in-memory bookkeeping only
            return
        super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """The prefetch slot is free at once; the record's removal rides on the channel's next peek when one is
        due (`QuarantiningChannel.carry_ack`), else it is sent now."""
        if self.channel.carry_ack(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)
            return
        self._settle(delivery_tag, requeue=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self._settle(delivery_tag, requeue)

    def _settle(self, tag: str, requeue: bool) -> None:
        if requeue:
            try:
                self.restore_by_tag(tag, leftmost=True)
            except redis.exceptions.ResponseError as exc:
                cause = refusal_cause(exc)
                if cause is None:
                    raise
                self.channel.writes_refused(cause)
        else:
            self.remove_records([tag])
        virtual.QoS.ack(self, tag)  # settled here: the prefetch slot is free again

    def record_removal(self, tags: list[str]) -> list[tuple[str, ...]]:
        """The commands that remove acknowledged messages' records: from the index, then from the hash."""
        return [("ZREM", self.unacked_index_key, *tags), ("HDEL", self.unacked_key, *tags)]

    def remove_records(self, tags: list[str]) -> None:
        """Remove acknowledged messages' records, without a transaction (see the class)."""
        try:
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                for command in self.record_removal(tags):
                    pipe.execute_command(*command)
                pipe.execute()
        except redis.exceptions.ResponseError as exc:
            cause = refusal_cause(exc)
            if cause is None:
                raise
            self.channel.writes_refused(cause)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """kombu's timer restores messages whose consumer died; while Redis refuses writes it waits too."""
        try:
            super().restore_visible(start, num, interval)
        except redis.exceptions.ResponseError as exc:
            cause = refusal_cause(exc)
            if cause is None:
                raise
            self.channel.writes_refused(cause)


class QuarantiningChannel(kombu_redis.Channel):
    """A Redis channel that parks undecodable messages instead of raising into the event loop, and takes each
    message from its queue together with kombu's unacked record of it, so a killed consumer loses nothing."""

    QoS = RefusalTolerantQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peeking: str | None = None  # the queue a blocking peek waits on
        self._no_ack_queues: set[str] = set()
        self._prechecked: dict[str, Any] | None = None
        self._claimed_tag: str | None = None  # the message being delivered whose unacked record CLAIM wrote
        self._claim = self.client.register_script(CLAIM)
        self._park = self.client.register_script(PARK)
        # Redis refusing writes (refused_writes.py): no peek before `_resume_at`, the poll meanwhile a wait.
        self.refused_writes = RefusedWrites("the worker's consumer (messages wait in their queue)", log)
        self._resume_at = 0.0
        self._waiting = False
        self._owed: list[str] = []  # taken, kombu's record of them refused: given back once writes go through
        self._plain_client: redis.Redis | None = None  # conn_or_acquire's client, built once per pool
        self._acks_due: list[str] = []  # acknowledged, their records not yet removed (carry_ack)
        self._ack_timer_armed = False

    @contextlib.contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        """kombu built a new redis client (its table of reply callbacks and all) for every command outside the
        poll: each take's claim and each ack's removal, about a tenth of the main process's CPU at saturation.
        One client per connection pool serves them all; a pool kombu replaces (after a lost connection) gets
        a new one."""
        if client:
            yield client
            return
        pool = self.pool
        plain = self._plain_client
        if plain is None or plain.connection_pool is not pool:
            plain = self._plain_client = self._create_client()
        yield plain

    # ---- acknowledgements, carried by the next peek ----------------------------------------------------------

    def carry_ack(self, tag: str) -> bool:
        """Keep an acknowledged message's record for the next peek to remove: at saturation a child's result
        frees a prefetch slot and the event loop's next turn peeks, so the removal leaves in the peek's write
        instead of a round trip of its own (a fifth of the main process's Redis round trips). Within
        `ACK_CARRY_SECONDS` a timer sends what no peek carried. False (send it now) outside Celery's event loop,
        or while a peek waits on the server: the next one may be a blocking timeout away."""
        hub = self.connection.event_loop
        if hub is None or self._in_poll or self._closing:
            return False
        self._acks_due.append(tag)
        if not self._ack_timer_armed:
            self._ack_timer_armed = True
            hub.call_later(ACK_CARRY_SECONDS, self._acks_overdue)
        return True

    def _acks_overdue(self) -> None:
        self._ack_timer_armed = False
        try:
            self._send_due_acks()
        except Exception:  # the event loop goes on; kombu restores those messages after the timeout
            log.exception("acknowledgements could not be written")

    def _send_due_acks(self) -> None:
        tags, self._acks_due = self._acks_due, []
        if not tags:
            return
        try:
            self.qos.remove_records(tags)
        except self.connection_errors:  # the records stay: kombu restores those messages after the timeout
            log.warning("%s acknowledgements could not be written: Redis is unreachable", len(tags))

    def _carried_acks(self, tags: list[str]) -> list[tuple[Any, ...]]:
        """The removals as commands sent ahead of a peek, their replies skipped (the peek's is the one the event
        loop waits for). A removal Redis refuses (a read-only replica; never for memory) leaves the record, and
        kombu's restore delivers that message again after the visibility timeout, as before."""
        if not tags:
            return []
        return [part for command in self.qos.record_removal(tags) for part in (("CLIENT", "REPLY", "SKIP"), command)]

    def close(self) -> None:
        """What is acknowledged is written before the channel goes."""
        self._closing = True
        try:
            self._send_due_acks()
        except Exception:  # closing goes on; kombu restores those messages after the timeout
            log.warning("acknowledgements could not be written while closing the broker channel", exc_info=True)
        super().close()

    # ---- reading an entry -------------------------------------------------------------------------------------

    def _read(self, raw: bytes, queue: str) -> dict[str, Any] | Unreadable:
        """The envelope kombu can deliver, or why it cannot: built once as kombu's consumer will build it."""
        source = f"broker.{published_to(queue)}"
        limit = get_settings().broker_max_message_bytes
        if len(raw) > limit:
            # kombu writes the headers (task id and name) after the body: keep both ends of the entry.
            return Unreadable(
                source,
                f"broker message of {len(raw)} bytes is over the {limit}-byte limit; not decoded",
                {"queue": queue, "bytes": len(raw), "raw_head": raw[:KEPT_END], "raw_tail": raw[-KEPT_END:]},
                "OversizedMessage",
            )
        try:
            envelope = Envelope.parse(raw)
        except Exception as exc:  # noqa: BLE001  (any decoding failure is this message's, not the worker's)
            return _undecodable(queue, exc, raw)
        return self._checked(envelope.fields, queue)

    def _checked(self, fields: dict[str, Any], queue: str) -> dict[str, Any] | Unreadable:
        try:
            self.Message(fields, channel=self)  # whatever would fail in kombu's callback fails here
            Envelope(fields).delivery()  # kombu's unacked record, and its restore, need all of it
        except Exception as exc:  # noqa: BLE001  (a broken envelope is this message's fault, not the worker's)
            return _undecodable(queue, exc, fields)
        return fields

    # ---- the blocking pop -------------------------------------------------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        self._waiting = False
        wait = self._resume_at - time.monotonic()
        if wait > 0:
            # Redis refused a write: the next peek waits. The wait is a blocking read on the server (a stream
            # nobody writes), not a sleep, so the event loop goes on meanwhile (acks, remote control, heartbeats,
            # the pool's results); no refusal applies to a read.
            self._peeking, self._waiting = None, True
            self._in_poll = self.client.connection
            self.client.connection.send_command("XREAD", "BLOCK", max(int(wait * 1000), 1), "STREAMS", WAIT_KEY, "$")
            return
        timeout = self.brpop_timeout if timeout is None else timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        keys = [self._q_for_pri(queue, priority) for priority in self.priority_steps for queue in queues]
        if len(keys) != 1 or self.global_keyprefix or queues[0] in self._no_ack_queues:
            # several lists (kombu's BRPOP keeps their order), or nothing kombu records: kombu's own pop
            self._peeking = None
            super()._brpop_start(timeout)
            return
        self._peeking = queues[0]
        connection = self.client.connection
        acks, self._acks_due = self._acks_due, []
        peek = ("BLMOVE", keys[0], keys[0], "RIGHT", "RIGHT", timeout or 0)
        self._in_poll = connection
        try:
            connection.send_packed_command(connection.pack_commands([*self._carried_acks(acks), peek]))
        except BaseException:
            self._acks_due[:0] = acks  # not sent: the timer (or the channel's close) sends them
            raise

    def _brpop_read(self, **options: Any) -> bool:
        try:
            if self._waiting:  # the wait after a refused write is over: the next poll peeks again
                with contextlib.suppress(redis.exceptions.ResponseError):  # a wait, whatever it answers
                    self._reply("XREAD", **options)
                raise kombu_redis.Empty()
            if self._peeking is not None:
                raw = self._reply("BLMOVE", **options)  # Redis accepted the write command it refuses first
                self.writes_accepted()
                if raw is None:
                    raise kombu_redis.Empty()
                self._queue_cycle.rotate(self._peeking)
                return self._take(self._peeking, raw)
            reply = self._reply("BRPOP", **options)
            if reply is None:
                raise kombu_redis.Empty()
            key, raw = reply
            queue = kombu_redis.bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            read = self._read(raw, queue)
            if isinstance(read, Unreadable):
                park(read.source, read.reason, read.payload, error_type=read.error_type)
            else:
                self.connection._deliver(read, queue)
            return True
        except redis.exceptions.ResponseError as exc:
            # Raised into kombu's event loop, a refusal ended the worker; a message peeked but not taken is still
            # at the end of its queue, one taken and not delivered is given back when writes go through again.
            cause = refusal_cause(exc)
            if cause is None:
                raise
            self.writes_refused(cause)
            raise kombu_redis.Empty() from None
        finally:
            self._in_poll = None

    def writes_refused(self, cause: str) -> None:
        """Redis refused a write (here or in the QoS below): logged once an episode, the next peek waits."""
        self._resume_at = time.monotonic() + self.refused_writes.refused(cause)

    def writes_accepted(self) -> None:
        """A write went through: the episode is over, and what could not be given back meanwhile is now."""
        self.refused_writes.accepted()
        self._resume_at = 0.0
        while self._owed:
            self._give_back(self._owed.pop(0))

    def _reply(self, command: str, **options: Any) -> Any:
        """The blocking command's answer; None when it timed out. A lost connection is dropped so the next poll
        reconnects (a peeked entry is still in its queue)."""
        try:
            reply = self.client.parse_response(self.client.connection, command, **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        if reply is None or reply == []:  # timed out; an empty entry (b"") is a message, parked as undecodable
            return None
        return reply

    def _take(self, queue: str, raw: bytes) -> bool:
        """Take the peeked entry with its unacked record (or into the spool) and deliver it; `Empty` when another
        consumer took it first."""
        read = self._read(raw, queue)
        with self.conn_or_acquire() as client:
            if isinstance(read, Unreadable):
                row = read.row()
                if self._park(keys=[queue_key(queue), SPOOL_KEY], args=[raw, _spool_entry(row)], client=client):
                    log.warning("dead letter from %s spooled: %s", row["source"], row["reason"][:300])
                    return True
                raise kombu_redis.Empty()
            _restore_to_own_queue(read, queue)
            envelope = Envelope(read)
            delivery = envelope.delivery()
            record = envelope.unacked_record(delivery)
            claim = [delivery.tag, record, time.time()]
            keys = [queue_key(queue), self.unacked_key, self.unacked_index_key]
            taken = self._claimed(keys, [raw, *claim], client)  # 1 + entries left behind it
            if not taken:
                raise kombu_redis.Empty()
        if queue == READY:
            ready_taken(int(taken) - 1)  # room in the ready list: this process's lanes router fills it
        self._prechecked, self._claimed_tag = read, delivery.tag
        try:
            self.connection._deliver(read, queue)  # kombu's QoS.append keeps it in memory (RefusalTolerantQoS)
        except redis.exceptions.ResponseError as exc:
            if refusal_cause(exc) is None:
                self._give_back(delivery.tag)
            else:  # Redis refuses writes since the claim: the give-back would be refused too, until they go through
                self._owed.append(delivery.tag)
            raise
        except BaseException:
            self._give_back(delivery.tag)
            raise
        finally:
            self._prechecked = self._claimed_tag = None
        return True

    def _claimed(self, keys: list[str], args: list[Any], client: redis.Redis) -> Any:
        """CLAIM's answer. Sent on the connection the peek was answered on, idle until the next peek: the pool's
        checkout of another connection (a liveness read, two fcntl calls) made a claim cost 1.5-2x the CPU of the
        command itself. A script cache emptied since the worker started (SCRIPT FLUSH) is loaded again through
        `client`."""
        connection = self.client.connection
        try:
            connection.send_command("EVALSHA", self._claim.sha, len(keys), *keys, *args)
            return self.client.parse_response(connection, "EVALSHA")
        except redis.exceptions.NoScriptError:
            return self._claim(keys=keys, args=args, client=client)
        except self.connection_errors:
            connection.disconnect()  # an answer may still be on its way: the next poll reconnects
            raise

    def _give_back(self, tag: str) -> None:
        """Not delivered: kombu's own restore puts it back at the front of its queue now (or, should Redis be
        away too, its visibility timeout does later)."""
        try:
            self.qos.restore_by_tag(tag)
        except Exception:  # noqa: BLE001  (the unacked record stays: the visibility-timeout restore has it)
            log.warning("could not give an undelivered message back; kombu restores it after the visibility timeout")

    def _get(self, queue: str) -> dict[str, Any]:
        """`basic_get` (not the worker's consumer): kombu's RPOP, with undecodable entries parked."""
        with self.conn_or_acquire() as client:
            for priority in self.priority_steps:
                while raw := client.rpop(self._q_for_pri(queue, priority)):
                    read = self._read(raw, queue)
                    if not isinstance(read, Unreadable):
                        return read
                    park(read.source, read.reason, read.payload, error_type=read.error_type)
            raise kombu_redis.Empty()

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """A worker's answer to remote control (ping, inspect) is dropped when Redis refuses it: raised, Celery
        reset its control consumer, whose declaration Redis refused too, and that ended the worker. The asker
        sees no answer, as from a busy worker. Everything else (a task sent) raises as before."""
        try:
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        except redis.exceptions.ResponseError as exc:
            cause = refusal_cause(exc)
            if cause is None or not (exchange.startswith("reply.") and exchange.endswith(".pidbox")):
                raise
            log.warning("a remote-control answer was dropped: Redis refuses writes: %s", cause)
            return None

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Every delivery (queue or broadcast) passes the envelope check before kombu builds its message."""
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        tag = super().basic_consume(queue, no_ack, *args, **kwargs)
        deliver: RawDeliver = self.connection._callbacks[queue]

        def checked(envelope: dict[str, Any]) -> Any:
            if envelope is self._prechecked:
                return deliver(envelope)
            read = self._checked(envelope, queue)
            if isinstance(read, Unreadable):
                park(read.source, read.reason, read.payload, error_type=read.error_type)
                return None
            return deliver(envelope)

        self.connection._callbacks[queue] = checked
        return tag


def _undecodable(queue: str, exc: Exception, raw: Any) -> Unreadable:
    return Unreadable(
        f"broker.{published_to(queue)}",
        f"undecodable broker message: {type(exc).__name__}: {str(exc)[:300]}",
        {"queue": queue, "raw": raw},
        "UndecodableMessage",
    )


class QuarantiningTransport(kombu_redis.Transport):
    Channel = QuarantiningChannel
    event_loop: Any = None  # Celery's hub, once the transport is registered with it (carry_ack needs its timers)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.event_loop = loop
        super().register_with_event_loop(connection, loop)


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


class Refusal(NamedTuple):
    """Why this worker must not run a message, as its dead letter reads."""

    error_type: str
    reason: str
    task_id: Any = None


EVENTS_FLUSH_SECONDS = 0.1  # task events wait this long at most for the batch they leave in


class GuardedConsumer(Consumer):
    """Celery's consumer, keeping every message it refuses and refusing what this worker must not run."""

    _events_flush_due = False

    def on_send_event_buffered(self) -> None:
        """Task events leave in batches, at most `EVENTS_FLUSH_SECONDS` after the first of them (or when the
        dispatcher's buffer is full), instead of one publish for every turn of the event loop: Celery flushes the
        buffer on the loop's next turn, which at saturation was one PUBLISH for every one or two events and a
        fifth of the main process's CPU. Flower still receives every event, a fraction of a second later."""
        if self.hub is None:
            super().on_send_event_buffered()
            return
        if not self._events_flush_due:
            self._events_flush_due = True
            self.hub.call_later(EVENTS_FLUSH_SECONDS, self._flush_batched_events)

    def _flush_batched_events(self) -> None:
        self._events_flush_due = False
        self._flush_events()

    def refusal(self, message: Any) -> Refusal | None:
        """Why this worker must not run the message; None lets Celery go on."""
        headers = message.headers
        if not isinstance(headers, dict):
            return None  # Celery's own path: not a task message, kept by on_unknown_message below
        if "task" not in headers:
            return self._protocol_1(message)
        name = headers["task"]
        task_id = headers.get("id")
        if not isinstance(name, str) or name not in self.app.tasks:
            return Refusal("RefusedTask", f"task {str(name)[:200]!r} is not accepted by this worker type", task_id)
        if not isinstance(task_id, str):
            return Refusal("InvalidTaskMessage", "the task id header is missing or not a string", task_id)
        now = datetime.now(UTC)
        for header in ("eta", "expires"):
            if headers.get(header) is not None and _parse_time(headers[header]) is None:
                return Refusal("InvalidTaskMessage", f"the {header} header is not an ISO 8601 time", task_id)
        timelimit = headers.get("timelimit")
        if timelimit is not None and not _within_limits(timelimit, self.app.conf):
            reason = "the timelimit header asks for more than this worker type's time limits"
            return Refusal("RefusedTask", reason, task_id)
        eta = _parse_time(headers.get("eta"))
        limit = self.app.conf.broker_transport_options.get("visibility_timeout", 3600)
        if eta is not None and (eta - now).total_seconds() > limit:
            reason = f"eta {eta.isoformat()} is more than the visibility timeout ({limit} s) ahead"
            return Refusal("RefusedTask", reason, task_id)
        expires = _parse_time(headers.get("expires"))
        if expires is not None and expires < now and getattr(self.app.tasks[name], "dead_letter_on_failure", False):
            return Refusal("Expired", f"expired at {expires.isoformat()} before it was received", task_id)
        return None

    @staticmethod
    def _protocol_1(message: Any) -> Refusal | None:
        """No task header: Celery would read the task from the body (protocol 1) and run it. Refused by name;
        anything else goes Celery's own way (kept by on_decode_error or on_unknown_message below)."""
        try:
            body = message.decode()
        except Exception:  # noqa: BLE001  (Celery's own decoding fails the same way, and on_decode_error keeps it)
            return None
        if celery_protocol(message.headers, body) != 1:
            return None
        return Refusal("UnsupportedProtocol", PROTOCOL_1_REFUSAL, protocol_1_task_id(body))

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def guarded(message: Any) -> Any:
            try:
                refused = self.refusal(message)
                if refused is None:
                    name = message.headers.get("task") if isinstance(message.headers, dict) else None
                    if name is not None:  # accepted by refusal(): a task of this worker type
                        # Producers in other languages set their own reprs (or none, and Celery would repr the args).
                        hide_private_arguments(message.headers, name)
                        # The task decides whether its result is kept: Celery's send_task marks every message
                        # "ignore_result: false", which stored each inbound message's result in Redis for an hour.
                        message.headers["ignore_result"] = self.app.tasks[name].ignore_result
                    return handle(message)
            except Exception as exc:  # one message's fault must not end the event loop
                log.exception("a task message could not be handled")
                reason = f"message could not be handled: {type(exc).__name__}: {str(exc)[:300]}"
                refused = Refusal("InvalidTaskMessage", reason)
            self._keep("broker.refused", refused.reason, message, None, refused.error_type, refused.task_id)
            try:
                message.reject_log_error(log, self.connection_errors)
            except Exception:  # noqa: BLE001  (already acknowledged or rejected by the failed handler)
                log.warning("refused message was already settled")
            return None

        return guarded

    def _keep(self, source: str, reason: str, message: Any, body: Any, error_type: str, task_id: Any = None) -> None:
        if task_id is None:
            headers = getattr(message, "headers", None)
            task_id = headers.get("id") if isinstance(headers, dict) else None
        park(source, reason, _message_record(message, body), error_type=error_type, task_id=task_id)

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
