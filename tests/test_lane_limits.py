"""The lanes router cannot be made to eat memory or block Redis, whatever a producer pushes to the intake: an
oversized entry is never decoded by it (the worker keeps it as a dead letter), a step hands it a bounded amount
of text, unknown salons get no lane (nor metric label) of their own, and an emptied lane leaves the turn ring
without a scan of the ring."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from ops.standins.gateway import GatewayStandIn
from shared.data.dead_letters import SPOOL_KEY, file_spooled
from shared.inbound import lanes as lanes_module
from shared.inbound.lanes import DRAIN_TASK, FLEET_LANE, INTAKE, LANE, READY, RING, RING_SET, Lanes, backlog
from shared.inbound.lanes import RECEIVE_TASK as RECEIVE
from tests.support.payloads import inbound_payload
from tests.support.processes import running_worker, wait_until
from tests.support.raw_broker import envelope, push
from tests.support.seed import COMPANY
from workers.app import app
from workers.producer import enqueue_message

MIB = 1024 * 1024
MAX_BYTES = MIB
INFLIGHT = "fleet:inflight:inbound:router-test"
UNKNOWN = 962399


def _queued(company: int, n: int, pad: int = 0) -> str:
    """A chat drain of `company`, padded with a header to about `pad` bytes when asked."""
    headers = {"pad": "x" * pad} if pad else None
    raw = envelope(
        DRAIN_TASK, args=[company, f"+7911{n:07d}"], queue="inbound", task_id=f"{company}-{n}", headers=headers
    )
    return json.dumps(raw)


def _task_id(raw: bytes) -> str:
    return json.loads(raw)["headers"]["id"]


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every entry the router decodes."""
    sizes: list[int] = []
    parse = lanes_module.Envelope.parse

    def spy(raw: bytes | str) -> Any:
        sizes.append(len(raw))
        return parse(raw)

    monkeypatch.setattr(lanes_module.Envelope, "parse", spy)
    return sizes


def test_an_oversized_entry_goes_unread_to_the_fleet_lane_in_order(clean_redis: str, parsed: list[int]) -> None:
    client = redis.Redis.from_url(clean_redis)
    big = b'{"headers": {"task": "workers.inbound.drain_chat"}, "body": "' + b"A" * (2 * MIB) + b'"}'
    client.lpush(INTAKE, _queued(1, 0), big, _queued(1, 1), b"not json")
    steps = Lanes(client, served=[1], max_bytes=MAX_BYTES)
    assert steps.route(INFLIGHT, 500) == 4
    assert max(parsed) < 1000, "the router decoded only the small entries"
    assert client.lrange(LANE + FLEET_LANE, 0, -1) == [b"not json", big], "kept byte for byte, in arrival order"
    assert [_task_id(raw) for raw in client.lrange(LANE + "1", 0, -1)] == ["1-1", "1-0"]
    assert client.llen(INFLIGHT) == 0

    client.lpush(INTAKE, big)  # the idle router's blocking wait moves it without receiving it
    assert steps.wait_for_intake(INFLIGHT, 1.0) is True
    assert steps.route(INFLIGHT, 500) == 1
    assert client.lindex(LANE + FLEET_LANE, 0) == big
    assert steps.wait_for_intake(INFLIGHT, 0.05) is False, "a wait that timed out says so"
    assert client.ping(), "the connection the wait used answers as usual"


def test_a_route_step_hands_the_router_a_bounded_amount_of_text(
    clean_redis: str, parsed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries under the size limit are read a few at a time: the router never holds a whole batch of them."""
    monkeypatch.setattr(lanes_module, "ROUTE_BYTES", 200_000)
    client = redis.Redis.from_url(clean_redis)
    for n in range(10):
        client.lpush(INTAKE, _queued(1, n, pad=50_000))
    steps = Lanes(client, served=[1], max_bytes=65_536)
    placed = [steps.route(INFLIGHT, 500) for _ in range(4)]
    assert placed == [3, 3, 3, 1]
    assert sum(parsed) <= 4 * 200_000
    assert [_task_id(raw) for raw in reversed(client.lrange(LANE + "1", 0, -1))] == [f"1-{n}" for n in range(10)]
    assert steps.route(INFLIGHT, 500) == 0
    assert client.llen(INTAKE) == client.llen(INFLIGHT) == 0


def test_a_place_step_after_an_orphan_scan_took_the_list_places_nothing(clean_redis: str) -> None:
    """Lanes are named by position in the in-flight list: a list that changed between the two steps (another
    router returned it to the intake) is left alone, and routed again from the intake."""
    client = redis.Redis.from_url(clean_redis)
    client.lpush(INTAKE, _queued(1, 0), _queued(2, 0))
    steps = Lanes(client, served=[1, 2], max_bytes=MAX_BYTES)
    size, held = steps._take(keys=[INTAKE, INFLIGHT], args=[500, MAX_BYTES, MIB])
    assert (size, len(held)) == (2, 2)
    client.lmove(INFLIGHT, INTAKE, "RIGHT", "RIGHT")  # the orphan scan, half-way
    keys = [INFLIGHT, RING, RING_SET, LANE + "1", LANE + "2"]
    assert steps._place(keys=keys, args=[size, 4, "1", 5, "2"]) == -1
    assert client.llen(RING) == 0
    client.lmove(INFLIGHT, INTAKE, "RIGHT", "RIGHT")
    assert steps.route(INFLIGHT, 500) == 2
    assert [_task_id(client.lindex(LANE + lane, 0)) for lane in ("1", "2")] == ["1-0", "2-0"]


def test_unknown_salons_get_no_lane_nor_metric_label(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    served = [1, 2]
    unknown = [_queued(company, 0) for company in range(3, 503)]
    receive = json.dumps(envelope(RECEIVE, kwargs={"payload": {"company_id": UNKNOWN}}, queue="inbound"))
    client.lpush(INTAKE, _queued(1, 0), *unknown, receive, _queued(2, 0))
    steps = Lanes(client, served=served, max_bytes=MAX_BYTES)
    while steps.route(INFLIGHT, 100):
        pass
    assert sorted(key.decode() for key in client.scan_iter(f"{LANE}*")) == [f"{LANE}1", f"{LANE}2", f"{LANE}fleet"]
    assert backlog(client) == {"1": 1, "2": 1, FLEET_LANE: 501}
    fleet = [_task_id(raw) for raw in reversed(client.lrange(LANE + FLEET_LANE, 0, -1))]
    assert fleet[:-1] == [f"{company}-0" for company in range(3, 503)], "in arrival order, to the workers"


# ---- removal of an emptied lane -------------------------------------------------------------------------------

# The dispatch step with every Redis command it calls recorded (with the range of an LRANGE).
COUNTED = """
local calls = {}
local function counted(...)
  local name, _, first, last = ...
  if name == 'LRANGE' then name = table.concat({name, first, last}, ' ') end
  calls[#calls + 1] = name
  return redis.call(...)
end
local function step()
%s
end
local result = step()
return {calls, result}
"""

# Commands that touch a bounded number of elements whatever the ring's length.
CONSTANT = {"LLEN", "LINDEX", "LMOVE", "LPOP", "RPOP", "LPUSH", "RPOPLPUSH", "SREM", "SADD", "SISMEMBER"}


def _drain_counting(client: redis.Redis, lanes: int, depth: int) -> Counter[str]:
    """Route `lanes` one-message lanes, then deal them all out; the commands the dispatch steps called."""
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for company in range(1, lanes + 1):
        pipe.lpush(INTAKE, _queued(company, 0))
    pipe.execute()
    steps = Lanes(client, served=range(1, lanes + 1), max_bytes=MAX_BYTES)
    while steps.route(INFLIGHT, 500):
        pass
    assert client.llen(RING) == client.scard(RING_SET) == lanes
    counted = client.register_script(COUNTED % lanes_module.DISPATCH.replace("redis.call(", "counted("))
    calls: Counter[str] = Counter()

    def dispatch(keys: list[str], args: list[Any]) -> Any:
        names, result = counted(keys=keys, args=args)
        calls.update(name.decode() for name in names)
        return result

    steps._dispatch = dispatch  # type: ignore[method-assign]
    moved = 0
    while True:
        step_moved, waiting = steps.dispatch(depth)
        moved += step_moved
        client.delete(READY)
        if not step_moved and not waiting:
            break
    assert moved == lanes
    assert client.llen(RING) == client.scard(RING_SET) == 0
    return calls


def test_an_emptied_lane_leaves_the_ring_in_constant_work(clean_redis: str) -> None:
    """Draining N one-message lanes costs the same commands per lane at 1,000 and at 4,000 lanes, and every one
    of them touches a bounded number of elements (an LRANGE only the next `depth` lanes): no command walks
    the ring, so the drain is linear in N (it was quadratic: LREM scanned the ring for every emptied lane)."""
    client = redis.Redis.from_url(clean_redis)
    depth = 4
    small, large = (_drain_counting(client, lanes, depth) for lanes in (1000, 4000))
    per_lane = {name: count / 1000 for name, count in small.items()}
    assert {name: count / 4000 for name, count in large.items()} == pytest.approx(per_lane, abs=0.01)
    assert sum(per_lane.values()) < 10, per_lane
    for name in large:
        command, *indexes = name.split()
        assert command in CONSTANT or (command == "LRANGE" and indexes == [str(-depth), "-1"]), name


# ---- a real worker -------------------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)[1])


@pytest.mark.slow
def test_a_30_mb_intake_entry_leaves_the_worker_s_memory_as_it_was_and_ends_as_a_dead_letter(
    inbound_env: dict[str, str], gateway: GatewayStandIn, db: psycopg.Connection, clean_redis: str, tmp_path: Path
) -> None:
    """Before: the router decoded it (+114 MiB in the worker's main process). Now nothing but the consumer's
    own size check ever holds it in the process; it is refused there, as every oversized entry is, and an
    unknown salon's message beside it is refused by the worker with no lane made for it."""
    env = {**inbound_env, "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}]"}
    client = redis.Redis.from_url(clean_redis)
    text = "Привет " + "a" * 22_500_000  # base64 in the body: a 30 MB entry
    big = envelope(RECEIVE, kwargs={"payload": inbound_payload(text, chat="+79110000201")}, queue="inbound")
    raw = json.dumps(big).encode()
    assert 30_000_000 < len(raw) < 30_100_000
    with running_worker("inbound", env, tmp_path) as worker:
        enqueue_message(inbound_payload("Привет", chat="+79110000200"))
        wait_until(lambda: gateway.count() == 1, 30, "the worker to answer a first message")
        app.send_task("workers.inbound.ping").get(timeout=30)
        rss, peak = _status_kib(worker.pid, "VmRSS"), _status_kib(worker.pid, "VmHWM")

        push(clean_redis, "inbound", raw)
        enqueue_message(inbound_payload("Привет", chat="+79110000202", company_id=UNKNOWN))
        app.send_task("workers.inbound.ping").get(timeout=60)  # the fleet's lane is served in order: after both
        rss_after, peak_after = _status_kib(worker.pid, "VmRSS"), _status_kib(worker.pid, "VmHWM")
        assert worker.proc.poll() is None
        assert client.keys(f"{LANE}{UNKNOWN}") == []
    print(
        f"\nworker main process: VmRSS {rss / 1024:.1f} -> {rss_after / 1024:.1f} MiB,"
        f" VmHWM {peak / 1024:.1f} -> {peak_after / 1024:.1f} MiB"
    )
    assert rss_after - rss < 8 * 1024, f"RSS grew by {(rss_after - rss) / 1024:.1f} MiB"
    assert client.llen(SPOOL_KEY) == 1
    file_spooled()
    rows = db.execute("SELECT source, error_type, reason, company_id FROM dead_letters ORDER BY id").fetchall()
    kept = {row[1]: row for row in rows}
    assert sorted(kept) == ["OversizedMessage", "UnknownCompany"], rows
    assert kept["OversizedMessage"][0] == "broker.inbound"
    assert f"broker message of {len(raw)} bytes is over the" in kept["OversizedMessage"][2]
    assert kept["UnknownCompany"][3] == UNKNOWN
    assert gateway.count() == 1
