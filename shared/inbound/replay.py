"""Replaying a dead letter once its cause is mended: what was refused or given up goes back through the path
new input takes, never around it, and the letter keeps what was done.

A letter's source decides what replaying means (a `Plan`, made by a planner: `shared.yclients.replay` knows
every source). The plan goes back through the same validation and idempotency as new input: a producer's
message is enqueued again as the producer's message (validated, and stored once per gateway message id), a
message the answering gave up on is reopened and its chat drained (a message answered meanwhile is left alone),
a reply not delivered is reopened for delivery (a delivered one is left alone). A source with no safe replay
says why it cannot be replayed.

One rule holds for every chat: a replay never answers, or sends, into a conversation that has moved on since
the letter was written (a later message answered, a later reply delivered); the operator discards such a
letter with a note instead. An answer out of turn can book or cancel what the client no longer means.

The letter is locked while it is replayed, the rows it reopens change in the same transaction as its history,
and the task that takes the work from there is sent after that commits (a worker would find the row not yet
reopened); if that send fails the sweep finds the reopened row (the inbound sweep every minute, the yclients
sweep every 30 s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from shared.core.db import transaction
from shared.core.topology import TaskName
from shared.data.errors import pydantic_errors
from shared.data.repositories.catalogue import CompanyRepository
from shared.data.repositories.conversations import OutboxRepository
from shared.data.repositories.dead_letters import DeadLetterRepository, MessageReplayRepository, ReplyReplayRepository
from shared.data.repository import Row
from shared.inbound.payload import InboundPayload

log = logging.getLogger(__name__)

# The sources whose letters hold a producer's message (the payload as sent, or a task's arguments around it).
INTAKE_SOURCES = frozenset({"inbound.receive", "producer.cli", f"task.{TaskName.RECEIVE_MESSAGE.value}"})


class Senders(Protocol):
    """How a replay hands work to the workers; the worker side (`workers/`) provides it."""

    def enqueue(self, payload: Mapping[str, Any]) -> str:
        """The producer's own path: validated, then sent to the intake; returns the task id."""
        ...

    def send(self, task: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
        """One task to its queue; returns the task id."""
        ...


class NothingToDo(Exception):
    """The work the letter stands for is done already (found at the last moment): the letter is closed."""


class CannotReplay(Exception):
    """A reason not to replay found at the last moment (the owner of the work refused to reopen it)."""


@dataclass(frozen=True)
class Plan:
    """What replaying one letter does. `how` says it in words (`--dry-run` prints it); `refusal` is why it
    cannot be replayed; `done_already` that its work is done. `inside` runs in the letter's transaction (reopen
    a row, or send when sending is the whole replay) and returns what it did; `after` sends the task that takes
    a reopened row from there, once that committed."""

    how: str
    refusal: str | None = None
    done_already: str | None = None
    inside: Callable[[], str] | None = None
    after: Callable[[], str] | None = None

    @classmethod
    def refuse(cls, why: str) -> Plan:
        return cls(how=f"cannot be replayed: {why}", refusal=why)

    @classmethod
    def done(cls, what: str) -> Plan:
        return cls(how=f"nothing to do: {what}", done_already=what)


Planner = Callable[[Row], Plan]
Outcome = Literal["replayed", "nothing to do", "refused", "failed", "skipped", "not found", "would replay", "discarded"]


@dataclass(frozen=True)
class Handled:
    """What became of one letter: the outcome and, in words, why or how."""

    letter_id: int
    source: str | None
    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome in ("replayed", "nothing to do", "would replay", "discarded")


def _already(letter: Row, again: bool) -> str | None:
    """Why a letter is left alone without `again`: replayed or discarded before."""
    if again or letter["state"] == "open":
        return None
    if letter["state"] == "replayed":
        return f"replayed already at {letter['replayed_at']:%Y-%m-%d %H:%M:%S %Z}; --again replays it once more"
    return f"discarded at {letter['discarded_at']:%Y-%m-%d %H:%M:%S %Z}; --again replays it anyway"


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:500]}"


def preview_letter(letter_id: int, planner: Planner, *, again: bool = False) -> Handled:
    """What `replay_letter` would do, changing nothing (`--dry-run`)."""
    letter = DeadLetterRepository().letter(letter_id)
    if letter is None:
        return Handled(letter_id, None, "not found", "no such dead letter")
    skipped = _already(letter, again)
    if skipped:
        return Handled(letter_id, letter["source"], "skipped", skipped)
    plan = planner(letter)
    if plan.refusal:
        return Handled(letter_id, letter["source"], "refused", plan.how)
    if plan.done_already:
        return Handled(letter_id, letter["source"], "nothing to do", plan.how)
    return Handled(letter_id, letter["source"], "would replay", plan.how)


def replay_letter(letter_id: int, planner: Planner, *, by: str, again: bool = False) -> Handled:
    """Replay one letter and record it on the letter: replayed (or found done) closes it, a refusal or a failure
    is recorded and leaves it open. A letter replayed or discarded before is left alone unless `again`."""
    letters = DeadLetterRepository()
    plan: Plan | None = None
    with transaction() as conn:
        letter = letters.lock(letter_id, conn=conn)
        if letter is None:
            return Handled(letter_id, None, "not found", "no such dead letter")
        source = letter["source"]
        skipped = _already(letter, again)
        if skipped:
            return Handled(letter_id, source, "skipped", skipped)
        outcome: Outcome
        try:
            with transaction(conn):  # a savepoint: a failure here leaves the letter's own update possible
                plan = planner(letter)
                if plan.refusal:
                    raise CannotReplay(plan.refusal)
                if plan.done_already:
                    raise NothingToDo(plan.done_already)
                detail = plan.inside() if plan.inside else plan.how
            outcome = "replayed"
        except NothingToDo as exc:
            outcome, detail = "nothing to do", str(exc)
        except CannotReplay as exc:
            outcome, detail = "refused", f"cannot be replayed: {exc}"
        except Exception as exc:  # noqa: BLE001  (one letter's failure is recorded on it; the batch goes on)
            outcome, detail = "failed", _failure(exc)
        closed = outcome in ("replayed", "nothing to do")
        letters.record(
            letter_id,
            action="replay",
            outcome=outcome,
            detail=detail,
            by=by,
            mark="replayed" if closed else None,
            conn=conn,
        )
    if outcome == "replayed" and plan is not None and plan.after is not None:
        try:
            detail = f"{detail}; {plan.after()}"
        except Exception as exc:  # noqa: BLE001  (the row is reopened: the sweep takes it from there)
            note = f"the task was not sent ({_failure(exc)}); the sweep picks the reopened work up"
            log.warning("dead letter %s replayed, its task not sent: %s", letter_id, type(exc).__name__)
            letters.record(letter_id, action="replay", outcome="not sent", detail=note, by=by)
            detail = f"{detail}; {note}"
    log.info("dead letter %s (%s) replay by %s: %s", letter_id, source, by, outcome)
    return Handled(letter_id, source, outcome, detail)


def discard_letter(letter_id: int, note: str, *, by: str) -> Handled:
    """Close an open letter without replaying it; the note (required) says why. The letter is kept."""
    note = note.strip()
    if not note:
        raise ValueError("a discard needs a note saying why")
    letters = DeadLetterRepository()
    with transaction() as conn:
        letter = letters.lock(letter_id, conn=conn)
        if letter is None:
            return Handled(letter_id, None, "not found", "no such dead letter")
        if letter["state"] == "discarded":
            return Handled(letter_id, letter["source"], "skipped", "discarded already")
        if letter["state"] == "replayed":
            return Handled(letter_id, letter["source"], "skipped", "replayed already: there is nothing to discard")
        letters.record(
            letter_id, action="discard", outcome="discarded", detail="", by=by, note=note, mark="discarded", conn=conn
        )
    log.info("dead letter %s (%s) discarded by %s", letter_id, letter["source"], by)
    return Handled(letter_id, letter["source"], "discarded", note)


# ---- the inbound sources --------------------------------------------------------------------------------------


def _producer_message(letter: Row) -> tuple[Any, str]:
    """The message a producer sent, as the letter keeps it, and a remark on what was left out; raises
    `CannotReplay` when the letter does not hold it as sent."""
    payload = letter["payload"]
    if isinstance(payload, dict) and set(payload) == {"payload", "notes", "company_id"}:
        raise CannotReplay(f"the kept payload was changed to be stored ({'; '.join(map(str, payload['notes']))})")
    if letter["source"].startswith("task."):
        if not isinstance(payload, dict):
            raise CannotReplay("the letter holds no task arguments")
        args, kwargs = payload.get("args"), payload.get("kwargs")
        if isinstance(kwargs, dict) and "payload" in kwargs:
            return kwargs["payload"], ""
        if isinstance(args, list) and len(args) == 1:
            return args[0], ""
        raise CannotReplay("the task's arguments hold no message payload")
    if isinstance(payload, dict) and set(payload) == {"payload", "unexpected"}:
        return payload["payload"], " (its unexpected task arguments are left out)"
    return payload, ""


def plan_intake(letter: Row, senders: Senders) -> Plan:
    """A producer's message refused at intake (or kept by the task that received it): enqueued again through
    the producer's path, so it is validated again and stored at most once per gateway message id."""
    try:
        payload, remark = _producer_message(letter)
    except CannotReplay as exc:
        return Plan.refuse(str(exc))
    if not isinstance(payload, dict):
        return Plan.refuse("the kept payload is not a JSON object")
    try:
        message = InboundPayload.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {problem}" for field, problem in pydantic_errors(exc))
        return Plan.refuse(f"the message is still invalid: {problems}")
    company, gateway_id = message.company_id, message.gateway_message_id
    if CompanyRepository().find_one({"id": company, "deleted_at__is_null": True}) is None:
        return Plan.refuse(f"company {company} is not served (add it first)")
    stored = MessageReplayRepository().stored(company, gateway_id)
    if stored is not None:
        return Plan.done(
            f"gateway message {gateway_id} is stored already as message {stored['id']} ({stored['status']})"
        )
    if MessageReplayRepository().sent_after(company, message.chat_id, message.sent_at):
        return Plan.refuse("the chat has a later message; answering this one now would answer out of turn")
    return Plan(
        how=f"enqueue gateway message {gateway_id} of company {company} again as the producer's message{remark};"
        " the inbound worker validates, stores and answers it",
        inside=lambda: f"gateway message {gateway_id} enqueued as task {senders.enqueue(payload)}{remark}",
    )


def _positive_id(payload: Any, key: str) -> int | None:
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def plan_answer(letter: Row, senders: Senders) -> Plan:
    """A message the answering gave up on: pending again from its first attempt, and its chat drained."""
    message_id = _positive_id(letter["payload"], "message_id")
    if message_id is None:
        return Plan.refuse("the letter names no message")
    messages = MessageReplayRepository()
    message = messages.standing(message_id)
    if message is None:
        return Plan.refuse(f"message {message_id} is no longer kept (retention)")
    if message["status"] != "failed":
        return Plan.done(f"message {message_id} is {message['status']} already")
    company, chat = message["company_id"], message["chat_id"]
    if messages.answered_after(company, chat, message["chat_seq"]):
        return Plan.refuse(
            "a later message of this chat has been answered since; this one would be answered out of turn"
        )

    def reopen() -> str:
        if messages.reopen_failed(message_id) is None:
            raise NothingToDo(f"message {message_id} is no longer failed")
        return f"message {message_id} pending again"

    def drain() -> str:
        return f"its chat's drain sent as task {senders.send(TaskName.DRAIN_CHAT.value, (company, chat))}"

    return Plan(
        how=f"reopen message {message_id} (attempts from the first) and drain its chat on the inbound worker",
        inside=reopen,
        after=drain,
    )


def plan_delivery(letter: Row, senders: Senders) -> Plan:
    """A reply the gateway did not take: its outbox row pending again from its first attempt, and delivered."""
    outbox_id = _positive_id(letter["payload"], "outbox_id")
    if outbox_id is None:
        return Plan.refuse("the letter names no reply")
    outbox = OutboxRepository()
    row = outbox.find_one({"id": outbox_id})
    if row is None:
        return Plan.refuse(f"reply {outbox_id} is no longer kept (retention)")
    if row["status"] != "failed":
        state = "delivered" if row["status"] == "done" else "pending again"
        return Plan.done(f"reply {outbox_id} is {state} already")
    if ReplyReplayRepository().delivered_after(outbox_id):
        return Plan.refuse("a later reply reached this chat since; this one would arrive out of order")

    def reopen() -> str:
        if not outbox.reopen(outbox_id):
            raise NothingToDo(f"reply {outbox_id} is no longer failed")
        return f"reply {outbox_id} pending again"

    def deliver() -> str:
        return f"its delivery sent as task {senders.send(TaskName.DELIVER_REPLY.value, (outbox_id,))}"

    return Plan(
        how=f"reopen reply {outbox_id} (attempts from the first) and deliver it through the inbound worker",
        inside=reopen,
        after=deliver,
    )
