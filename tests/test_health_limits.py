"""The health service faces the internet (YClients' webhooks): `fleet health-server` started as the Procfile
starts it, attacked over raw sockets. A body is refused before it is read, a slow sender is cut at the deadline,
connections over the cap are refused, and the process's memory stays where it was."""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from tests.support.processes import ROOT
from tests.support.seed import COMPANY

pytestmark = pytest.mark.slow  # `fleet health-server` as a subprocess, attacked for seconds

SECRET = "limits-webhook-secret"
DEADLINE = 2.0
MAX_CONNECTIONS = 20
MIB = 1024 * 1024
ATTACK = 150 * MIB


@dataclass
class Service:
    pid: int
    private: int  # /health and /metrics
    public: int  # /yclients/webhook

    def rss(self) -> int:
        return _status_kib(self.pid, "VmRSS")


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)[1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def service(db: psycopg.Connection, fleet_env: dict[str, str]) -> Iterator[Service]:
    env = {
        **fleet_env,
        "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}]",
        "FLEET_YCLIENTS__WEBHOOK_SECRET": SECRET,
        "FLEET_HEALTH__PORT": str(_free_port()),
        "FLEET_HEALTH__WEBHOOK_ADDRESS": "127.0.0.1",
        "FLEET_HEALTH__WEBHOOK_PORT": "0",
        "FLEET_HEALTH__REQUEST_TIMEOUT_SECONDS": str(DEADLINE),
        "FLEET_HEALTH__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    command = [sys.executable, "-m", "workers.cli", "health-server"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ports = []
        while len(ports) < 2:
            line = process.stdout.readline()
            assert line, "the health service exited before it listened"
            if found := re.search(r"on http://[^ ]+:(\d+)/", line):
                ports.append(int(found[1]))
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
        started = Service(process.pid, *ports)
        assert warmed_up(started.private), "the health service never answered /health/queues"
        yield started
    finally:
        process.terminate()
        process.wait(timeout=30)


def warmed_up(port: int, tries: int = 3) -> bool:
    """Serving, and warmed up before anything is measured. The first request of a cold process on a busy machine
    (a full suite on two cores) can outlast the service's own per-request deadline, which ends it unanswered."""
    for _ in range(tries):
        try:
            if get(port, "/health/queues")[0] == 200:
                return True
        except (ConnectionError, urllib.error.URLError):
            continue
    return False


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Offered:
    answer: bytes
    seconds_to_answer: float
    bytes_taken: int  # what the socket accepted before the server closed it
    peak_rss_kib: int


def offer(service: Service, head: bytes, body_chunk: bytes, total: int = ATTACK) -> Offered:
    """Send `head`, then `body_chunk` again and again up to `total` bytes as fast as the server takes them,
    sampling the server's memory meanwhile."""
    sock = socket.create_connection(("127.0.0.1", service.public))
    sock.settimeout(10)
    answer = bytearray()
    answered_at: list[float] = []
    peak = [service.rss()]
    done = threading.Event()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                answered_at.append(time.monotonic())
                answer.extend(chunk)
        except OSError:
            pass

    def sample() -> None:
        while not done.is_set():
            peak.append(service.rss())
            time.sleep(0.01)

    reader, sampler = threading.Thread(target=read), threading.Thread(target=sample)
    reader.start()
    sampler.start()
    started = time.monotonic()
    sent = 0
    try:
        sock.sendall(head)
        while sent < total:
            sent += sock.send(body_chunk)
    except OSError:  # reset or closed by the server: the rest was never taken
        pass
    reader.join(15)
    done.set()
    sampler.join()
    sock.close()
    return Offered(bytes(answer), (answered_at[0] - started) if answered_at else float("inf"), sent, max(peak))


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def webhook_head(length: bytes, secret: bool = False, extra: bytes = b"") -> bytes:
    door = f"/{COMPANY}/{SECRET}".encode() if secret else b""
    return b"POST /yclients/webhook" + door + b" HTTP/1.1\r\nHost: fleet\r\n" + length + extra + b"\r\n"


def test_150_mib_offered_without_the_secret_or_with_a_bad_length_are_refused_at_once_and_never_read(
    service: Service,
) -> None:
    chunk = b"x" * MIB
    before = service.rss()
    attacks = {
        "Content-Length: -1, no secret": (webhook_head(b"Content-Length: -1\r\n"), chunk, 400),
        "Content-Length: 150 MiB, no secret": (webhook_head(b"Content-Length: %d\r\n" % ATTACK), chunk, 403),
        "Content-Length: 150 MiB, right secret": (
            webhook_head(b"Content-Length: %d\r\n" % ATTACK, secret=True),
            chunk,
            413,
        ),
        "chunked 150 MiB, right secret": (
            webhook_head(b"Transfer-Encoding: chunked\r\n", secret=True),
            b"%x\r\n" % MIB + chunk + b"\r\n",
            413,
        ),
        "no length, right secret": (webhook_head(b"", secret=True), chunk, 411),
    }
    print(f"\nhealth service RSS before: {before / 1024:.1f} MiB")
    for name, (head, body, expected) in attacks.items():
        offered = offer(service, head, body)
        print(
            f"{name}: {status_of(offered.answer)} after {offered.seconds_to_answer * 1000:.1f} ms,"
            f" {offered.bytes_taken / MIB:.1f} MiB taken of 150, peak RSS {offered.peak_rss_kib / 1024:.1f} MiB"
        )
        assert status_of(offered.answer) == expected, offered.answer[:200]
        assert offered.seconds_to_answer < 1.0
        assert offered.bytes_taken < 20 * MIB, "the server closed the connection instead of draining the body"
        assert offered.peak_rss_kib - before < 4 * 1024
    after = service.rss()
    print(
        f"health service RSS after: {after / 1024:.1f} MiB (peak ever {_status_kib(service.pid, 'VmHWM') / 1024:.1f})"
    )
    assert after - before < 4 * 1024
    assert get(service.private, "/health/queues")[0] == 200


def _cut_after(sock: socket.socket, trickle: bytes) -> float:
    """Send `trickle` a byte every 0.2 s; seconds until the server closed the connection."""
    started = time.monotonic()
    sock.settimeout(0.2)
    for byte in trickle * 100:
        try:
            sock.send(bytes([byte]))
            if sock.recv(4096) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("port", "head", "trickle"),
    [
        ("private", b"GET /health HTTP/1.1\r\n", b"X"),  # headers that never end
        ("public", webhook_head(b"Content-Length: 1000\r\n", secret=True), b"{"),  # a body that never ends
    ],
)
def test_a_slow_sender_is_cut_at_the_deadline(service: Service, port: str, head: bytes, trickle: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", getattr(service, port)))
    sock.sendall(head)
    seconds = _cut_after(sock, trickle)
    sock.close()
    print(f"\nslow sender on the {port} listener cut after {seconds:.2f} s (deadline {DEADLINE} s)")
    assert DEADLINE - 0.5 < seconds < DEADLINE + 1.5


def test_connections_over_the_cap_are_refused_without_growth(service: Service) -> None:
    before = service.rss()
    flood = [socket.create_connection(("127.0.0.1", service.public)) for _ in range(MAX_CONNECTIONS * 10)]
    time.sleep(0.3)
    ready, _, _ = select.select(flood, [], [], 0)  # answered or closed by now: refused
    for sock in ready:
        try:
            answer = sock.recv(200)
        except OSError:
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
    grown = service.rss() - before
    held = len(flood) - len(ready)
    print(f"\n{len(flood)} idle connections: {len(ready)} refused at once, {held} held, RSS grew {grown} KiB")
    assert held <= MAX_CONNECTIONS
    assert grown < 4 * 1024
    assert get(service.private, "/health/queues")[0] == 200, "the private listener has a cap of its own"
    for sock in flood:
        sock.close()
    time.sleep(0.2)
    assert post(service.public, "/yclients/webhook", b"{}")[0] == 403, "served again once the flood is gone"


def test_webhooks_and_health_answers_still_work_each_on_its_own_listener(
    service: Service, db: psycopg.Connection
) -> None:
    event = json.dumps({"company_id": COMPANY, "resource": "record", "resource_id": 77, "status": "create"}).encode()
    path = f"/yclients/webhook/{COMPANY}/{SECRET}"  # the fleet-wide secret, outside production only
    status, answer = post(service.public, path, event)
    assert status == 202, answer
    assert post(service.public, path, event) == (200, {"accepted": True}), "folded into the waiting event"
    assert post(service.public, "/yclients/webhook", event)[0] == 403
    assert post(service.public, path, b"[1, 2]")[0] == 400
    assert db.execute("SELECT count(*) FROM yclients_webhook_events").fetchone()[0] == 1
    assert get(service.public, "/health")[0] == 404, "the public listener answers webhooks only"
    assert post(service.private, path, event)[0] == 404, "the private listener takes no webhooks"
    status, body = get(service.private, "/metrics")
    assert status == 200
    assert "fleet_queue_waiting" in body
