"""Per-process objects: made once per process on first use, never inherited across fork, closed together."""

from __future__ import annotations

import os

from shared.core.resources import close_all, resource


def test_a_resource_is_made_once_and_closed_at_shutdown() -> None:
    made, closed = [], []

    def make() -> object:
        made.append(1)
        return object()

    first = resource("test-thing", make, closed.append)
    assert resource("test-thing", make, closed.append) is first
    assert len(made) == 1
    close_all()
    assert closed == [first]
    assert resource("test-thing", make) is not first, "after close_all a new one is made"
    close_all()


def test_a_forked_child_makes_its_own() -> None:
    parent = resource("test-forked", object)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: an inherited object must not be handed out again
        os.write(write, b"1" if resource("test-forked", object) is not parent else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    close_all()
