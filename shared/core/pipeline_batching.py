"""Statements of a `pipelined` block leave in one write, at the block's next reading or at its end.

psycopg's pipeline mode sends each statement as it is executed: after every `execute` it polls the socket,
writes the statement and reads whatever results have arrived, so a statement queued costs the client a
poll and a send, and the server a wake-up to read it, even though nobody waits for its result yet. On the
answering path (about twenty statements a message, six readings) that was the largest single item of a worker
child's CPU. Here a statement queued in a `pipelined` block stays in psycopg's command queue; the queue leaves
as one command, so in one write, when the block reads a result or ends. What reaches the server, in what order
and in which transactions, is unchanged; only the moment it is sent moves, to the next point where the block
waits for the server anyway.

psycopg offers no public switch for this. What is used of its internals is named here and nowhere else, and
`tests/test_pipeline_batching.py` checks it against the installed psycopg:

- `Pipeline._communicate_gen`: the generator that sends what is queued and reads what arrived. psycopg calls it
  after every `execute` in pipeline mode and at every sync; it is replaced on the block's pipeline object only,
  so that it does nothing while a statement is being queued here, and otherwise sends the queue as one command.
- `Pipeline.command_queue`: psycopg's deque of libpq calls still to be made, one per statement or sync.
- `Connection.wait` and `Connection.lock`: how psycopg runs such a generator on the connection.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import psycopg

COMMUNICATE = "_communicate_gen"
PRIVATE_NAMES = (("Pipeline", COMMUNICATE), ("Pipeline", "command_queue"))


class Batching:
    """One `pipelined` block's deferral: statements executed inside `with batching:` stay in psycopg's queue."""

    __slots__ = ("holding", "pipeline", "send_queued")

    def __init__(self, pipeline: psycopg.Pipeline) -> None:
        self.pipeline = pipeline
        self.holding = False
        communicate = getattr(pipeline, COMMUNICATE)

        def send_queued() -> Generator[Any, Any, None]:
            if self.holding:  # called from `execute`: the statement waits in the queue
                return
            _as_one_command(pipeline.command_queue)
            yield from communicate()

        self.send_queued = send_queued
        setattr(pipeline, COMMUNICATE, send_queued)

    def __enter__(self) -> None:
        """`with batching:` the statement executed inside stays queued (its prepare, if psycopg prepares it now,
        too). A plain context manager rather than a generator one: it wraps every statement a block queues."""
        self.holding = True

    def __exit__(self, *_: object) -> None:
        self.holding = False

    def flush(self, conn: psycopg.Connection[Any]) -> None:
        """Send what is queued now, in one write (before a reading, which waits for results)."""
        if self.pipeline.command_queue:
            with conn.lock:
                conn.wait(self.send_queued())

    def release(self) -> None:
        """The pipeline object back to psycopg's own behaviour (it is dropped when the block ends anyway)."""
        if getattr(self.pipeline, COMMUNICATE, None) is self.send_queued:
            delattr(self.pipeline, COMMUNICATE)


def _as_one_command(queue: Any) -> None:
    """Every libpq call queued, made by one command: psycopg writes the connection's buffer once per command."""
    if len(queue) < 2:
        return
    calls: list[Callable[[], Any]] = list(queue)
    queue.clear()

    def all_of_them() -> None:
        for call in calls:
            call()

    queue.append(all_of_them)
