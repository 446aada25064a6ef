"""What replaying a dead letter means for each source: the planner `fleet dead-letters replay` uses.

It lives here, the lowest layer that sees every source's own path (the inbound ones in `shared.inbound.replay`,
the CRM's `retry_given_up`); the workers hand in how tasks are sent (`Senders`). Per source:

- `inbound.receive`, `producer.cli`, `task.workers.inbound.receive_message`: the producer's message enqueued
  again as the producer's message (validated; a gateway message id stored already is a no-op);
- `inbound.answer`: the message reopened and its chat drained (one answered meanwhile is a no-op);
- `inbound.deliver`: the reply's outbox row reopened and delivered (a delivered one is a no-op);
- `yclients.push`: the CRM operation tried again from its first attempt (`retry_given_up`) and sent to the
  yclients worker; one YClients refused (the slot was taken) cannot be, one done or pending is a no-op;
- `task.<name>`: a fleet task sent again with its arguments, which it checks; its work is idempotent;
- `yclients.webhook`, `broker.*`, `spool`: cannot be replayed, and say why.
"""

from __future__ import annotations

from shared.core.topology import TaskName
from shared.data.repositories.crm_operations import REFUSED, CrmOperationRepository
from shared.data.repository import Row
from shared.inbound.replay import (
    INTAKE_SOURCES,
    CannotReplay,
    Plan,
    Planner,
    Senders,
    plan_answer,
    plan_delivery,
    plan_intake,
)
from shared.yclients.push import RetryRefusedError, retry_given_up

FLEET_TASKS = frozenset(name.value for name in TaskName)

REFUSALS = {
    "yclients.webhook": (
        "a webhook the fleet refused keeps ids only and YClients does not send it again; `fleet sync records"
        " --company ID` brings the salon's change"
    ),
    "spool": "an unreadable spool entry holds no message the fleet could send again",
}
BROKER_REFUSAL = (
    "the broker refused the message itself (unreadable, too large, or not for that queue); send its content again"
    " through a producer if it is sound"
)


def plan_crm_operation(letter: Row, senders: Senders) -> Plan:
    """A chat booking's CRM operation given up: tried again from its first attempt (a booking it had freed holds
    its time again, or the retry is refused when the time has been taken since) and sent to the yclients worker."""
    payload = letter["payload"]
    operation_id = payload.get("operation_id") if isinstance(payload, dict) else None
    if not isinstance(operation_id, int) or isinstance(operation_id, bool):
        return Plan.refuse("the letter names no CRM operation")
    op = CrmOperationRepository().find_one({"id": operation_id})
    if op is None:
        return Plan.refuse(f"CRM operation {operation_id} is no longer kept")
    if op["status"] == "done":
        outcome = op["outcome"] or "done"
        if outcome.startswith(REFUSED):
            return Plan.refuse(f"YClients refused operation {operation_id} ({outcome}); book the client anew")
        return Plan.done(f"CRM operation {operation_id} is done: {outcome}")
    if op["status"] == "pending":
        return Plan.done(f"CRM operation {operation_id} is pending again, on its way to YClients")

    def reopen() -> str:
        try:
            retry_given_up(operation_id)
        except RetryRefusedError as exc:
            raise CannotReplay(str(exc)) from None
        return f"CRM operation {operation_id} ({op['kind']}) reopened from its first attempt"

    def push() -> str:
        return f"sent to the yclients worker as task {senders.send(TaskName.PUSH_BOOKING.value, (operation_id,))}"

    return Plan(
        how=f"reopen CRM operation {operation_id} ({op['kind']}) from its first attempt and send it to the yclients"
        " worker",
        inside=reopen,
        after=push,
    )


def plan_task(letter: Row, senders: Senders) -> Plan:
    """A failed fleet task sent again with the arguments it had; it checks them as it checks every message."""
    name = letter["source"].removeprefix("task.")
    if name not in FLEET_TASKS:
        return Plan.refuse(f"{name} is not a fleet task (one of Celery's own, or one that is gone)")
    payload = letter["payload"]
    if not isinstance(payload, dict) or set(payload) != {"args", "kwargs"}:
        return Plan.refuse("the letter does not keep the task's arguments as they were sent")
    args, kwargs = payload["args"], payload["kwargs"]
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return Plan.refuse("its arguments are not a list and a mapping, which no task can run")
    return Plan(
        how=f"send {name} again with its arguments; the task checks them, and its work is idempotent",
        inside=lambda: f"{name} sent as task {senders.send(name, args, kwargs)}",
    )


def plan_replay(letter: Row, senders: Senders) -> Plan:
    """The plan for one letter, by its source."""
    source: str = letter["source"]
    if source in INTAKE_SOURCES:
        return plan_intake(letter, senders)
    if source == "inbound.answer":
        return plan_answer(letter, senders)
    if source == "inbound.deliver":
        return plan_delivery(letter, senders)
    if source == "yclients.push":
        return plan_crm_operation(letter, senders)
    if source.startswith("task."):
        return plan_task(letter, senders)
    if source.startswith("broker."):
        return Plan.refuse(BROKER_REFUSAL)
    return Plan.refuse(REFUSALS.get(source, f"no replay is known for letters from {source}"))


def replay_planner(senders: Senders) -> Planner:
    """`plan_replay` with the workers' way of sending, as `shared.inbound.replay` takes a planner."""
    return lambda letter: plan_replay(letter, senders)
