"""When a take from the ready list wakes this process's lanes router: the claim step reports what it left behind,
and the router steps once the list has room for two messages or is empty, so the list never runs dry while the
main process runs one dispatch script per two messages, not per message."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from shared.core.kombu_contract import queue_key, unacked_keys
from shared.core.settings import Settings
from workers.broker import CLAIM
from workers.lanes import Router


@pytest.fixture
def router(settings: Settings, clean_redis: str) -> Iterator[Router]:
    made = Router(settings)  # not started: its decision is what is tried here
    yield made
    made.client.close()


def _woken(router: Router, remaining: int) -> bool:
    router.taken.clear()
    router.took(remaining)
    return router.taken.is_set()


def test_a_take_wakes_the_router_once_two_places_are_free_or_the_list_is_empty(router: Router) -> None:
    router.depth = 4
    assert not _woken(router, 3), "one free place: the router waits for the next take"
    assert _woken(router, 2)
    assert _woken(router, 1)
    assert _woken(router, 0)


def test_a_ready_list_one_deep_wakes_the_router_on_every_take(router: Router) -> None:
    router.depth = 1
    assert _woken(router, 0)


def test_the_claim_step_reports_what_it_left_in_the_queue(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    queue = "claim-report"
    for n in range(3):
        client.lpush(queue_key(queue), f'{{"n": {n}}}')
    keys = unacked_keys("inbound")
    raw = client.lindex(queue_key(queue), -1)
    taken = client.eval(CLAIM, 3, queue_key(queue), keys.hash, keys.index, raw, "tag-1", "record", time.time())
    assert taken == 1 + 2, "taken, and two entries left behind it"
    assert client.llen(queue_key(queue)) == 2
    assert client.hget(keys.hash, "tag-1") == b"record"
    last = client.lindex(queue_key(queue), -1)
    client.eval(CLAIM, 3, queue_key(queue), keys.hash, keys.index, last, "tag-2", "record", time.time())
    final = client.lindex(queue_key(queue), -1)
    assert client.eval(CLAIM, 3, queue_key(queue), keys.hash, keys.index, final, "tag-3", "record", time.time()) == 1
    assert client.eval(CLAIM, 3, queue_key(queue), keys.hash, keys.index, b"gone", "tag-4", "x", time.time()) == 0
    client.close()
