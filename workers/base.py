"""The base class of every fleet task: arguments checked against the signature, failures kept, not dropped.

Anyone who can write to the broker can send a task any arguments. Before a task body runs, its arguments are
bound to the function's signature and validated strictly against its type hints (an int is not a bool or a
string), so a malformed call fails at once with a clear reason instead of running SQL with it or retrying it
for minutes. A call refused that way, and any final failure of a task declared `dead_letter_on_failure`
(the inbound tasks, whose arguments are a client's message), is kept as a dead letter with the task id.
"""

from __future__ import annotations

import inspect
import logging
import typing
from typing import Any, ClassVar

from celery import Task
from pydantic import TypeAdapter, ValidationError

from shared.core.failure import backoff_delay
from shared.data.dead_letters import record_dead_letter

log = logging.getLogger(__name__)


class InvalidTaskArguments(TypeError):
    """The message's arguments do not fit the task's signature; retrying cannot help."""


class FleetTask(Task):
    """Declared with `@app.task(...)`; options read here: `dead_letter_on_failure`, `retry_backoff_base` and
    `retry_backoff_max` (seconds: the n-th retry waits base * 2**n, at most max)."""

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

    def backoff(self, base: float | None = None) -> float:
        """The one retry policy of the fleet: exponential, capped; `base` from settings where it is one."""
        return backoff_delay(self.request.retries + 1, base or self.retry_backoff_base, self.retry_backoff_max)

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
