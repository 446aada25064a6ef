"""The base class of every fleet task: arguments checked against the signature, failures kept, not dropped.

Anyone who can write to the broker can send a task any arguments. Before a task body runs, its arguments are
bound to the function's signature and validated strictly against its type hints (an int is not a bool or a
string), so a malformed call fails at once with a clear reason instead of running SQL with it or retrying it
for minutes. A call refused that way, and any final failure of a task declared `dead_letter_on_failure`
(the inbound tasks, whose arguments are a client's message), is kept as a dead letter with the task id.

Retries follow one of two policies. Work that has a row (a reply's outbox row, a CRM operation) is counted
by that row: the row gives up at its cap and says when it is due again, and the task, declared
`max_retries=None`, only comes back then (`retry_when_due`); a chat's messages count its answering attempts
the same way, and its next drain follows when they are due. Work no row counts declares its policy on the
task (`max_retries`, `retry_backoff_base`, `retry_backoff_max`) and retries through `retry_later`. Every
delay is `backoff_delay`'s. Work that only has to wait its turn (a sync while the yclients worker's sync slots
are taken) is deferred (`defer`), which is not a retry and counts against neither policy.
"""

from __future__ import annotations

import inspect
import logging
import typing
from typing import Any, ClassVar, NoReturn

from celery import Task
from celery.exceptions import Reject, Retry
from pydantic import TypeAdapter, ValidationError

from shared.core.failure import backoff_delay
from shared.data.dead_letters import record_dead_letter

log = logging.getLogger(__name__)


class InvalidTaskArguments(TypeError):
    """The message's arguments do not fit the task's signature; retrying cannot help."""


class FleetTask(Task):
    """Declared with `@app.task(...)`; options read here: `dead_letter_on_failure`, `retry_backoff_base` and
    `retry_backoff_max` (seconds: the n-th retry waits base * 2**(n-1), at most max)."""

    dead_letter_on_failure: ClassVar[bool] = False
    retry_backoff_base: ClassVar[float] = 1.0
    retry_backoff_max: ClassVar[float] = 60.0
    _checks: tuple[inspect.Signature, dict[str, TypeAdapter[Any]]] | None = None

    def _argument_checks(self) -> tuple[inspect.Signature, dict[str, TypeAdapter[Any]]]:
        if self._checks is None:
            signature = inspect.signature(self.run)
            hints = typing.get_type_hints(self.run, include_extras=True)
            adapters = {
                name: TypeAdapter(hints[name])
                for name, parameter in signature.parameters.items()
                if name in hints and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
            }
            type(self)._checks = (signature, adapters)
        assert self._checks is not None
        return self._checks

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        signature, adapters = self._argument_checks()
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidTaskArguments(f"{self.name}: {exc}") from None
        problems = []
        for name, value in bound.arguments.items():
            adapter = adapters.get(name)
            if adapter is None:
                continue
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as exc:
                problems.append(f"{name}: {exc.errors()[0]['msg']}")
        if problems:
            raise InvalidTaskArguments(f"{self.name}: " + "; ".join(problems))

    def backoff(self) -> float:
        """The wait before this task's next try under its own policy: `backoff_delay` over the tries so far."""
        return backoff_delay(self.request.retries + 1, self.retry_backoff_base, self.retry_backoff_max)

    @property
    def retries_spent(self) -> bool:
        """Whether the task's declared `max_retries` are used up (never, for a task whose row counts)."""
        return self.max_retries is not None and self.request.retries >= self.max_retries

    def retry_later(self, exc: BaseException) -> NoReturn:
        """Work no row counts: try again after `backoff()`; once `max_retries` are spent, `exc` is raised. A retry
        the broker does not take (Redis out of memory, or away) would make Celery drop the message (its Reject,
        not requeued): the task fails with `exc` instead, so a task that keeps its failures keeps this one."""
        try:
            raise self.retry(exc=exc, countdown=self.backoff())
        except Reject as rejected:
            if rejected.requeue or not isinstance(rejected.reason, Exception):
                raise
            log.warning("%s could not be sent again (%s): it fails with its own error", self.name, rejected.reason)
            raise exc from rejected

    def retry_when_due(self, retry_in: float) -> NoReturn:
        """Work whose row counts the attempts: come back when the row is due; the row, not the task, gives up."""
        if self.max_retries is not None:
            raise TypeError(f"{self.name}: its row counts the attempts, so the task declares max_retries=None")
        raise self.retry(countdown=retry_in)

    def defer(self, countdown: float) -> NoReturn:
        """Not now, through no fault of the work (a long task finds no free slot, workers/crm_lane.py): sent
        again as the same task, due in `countdown` seconds, with its tries untouched, so neither `max_retries`
        nor the backoff of its real failures is spent on waiting. Celery records a retry, not a failure."""
        request = self.request
        again = self.signature_from_request(request, countdown=countdown, retries=request.retries)
        again.apply_async()
        raise Retry(f"deferred for {countdown:.0f} s", when=countdown, sig=again)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.check_arguments(args, kwargs)
        return super().__call__(*args, **kwargs)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if not (self.dead_letter_on_failure or isinstance(exc, InvalidTaskArguments)):
            return
        record_dead_letter(
            f"task.{self.name}",
            f"task failed: {type(exc).__name__}: {exc}",
            {"args": args, "kwargs": kwargs},
            error_type=type(exc).__name__,
            task_id=task_id,
        )
