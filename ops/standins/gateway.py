"""A local WhatsApp gateway stand-in: accepts POST {phone, message, id} like the real send endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from ops.standins.serving import serving


@dataclass(frozen=True)
class Delivery:
    phone: str
    message: str
    id: str
    at: float


@dataclass
class GatewayStandIn:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)  # first arrival of each id, in arrival order
    delivered_ids: set[str] = field(default_factory=set)
    repeats: int = 0  # requests whose id was already delivered (dropped, as the real gateway does)
    failures_left: int = 0
    failure_status: int = 503
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self.lock:
            self.failures_left, self.failure_status = count, status

    def clear(self) -> None:
        with self.lock:
            self.deliveries.clear()
            self.delivered_ids.clear()

    def to(self, phone: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.phone == phone]

    def count(self) -> int:
        with self.lock:
            return len(self.deliveries)


@contextmanager
def gateway_stand_in(port: int = 0) -> Iterator[GatewayStandIn]:
    state = GatewayStandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real gateway's HTTP server does
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with state.lock:
                if state.failures_left > 0:
                    state.failures_left -= 1
                    status = state.failure_status
                else:
                    status = 200
                    if body["id"] in state.delivered_ids:
                        state.repeats += 1
                    else:
                        state.delivered_ids.add(body["id"])
                        state.deliveries.append(Delivery(body["phone"], body["message"], body["id"], time.time()))
            answer = b'{"ok": true}' if status == 200 else b'{"error": "unavailable"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler, port) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/send"
        yield state


def main() -> None:
    """Run the stand-in on its own, printing each reply, for the demo fleet (`ops/run-fleet`)."""
    import argparse

    parser = argparse.ArgumentParser(description="local WhatsApp gateway stand-in")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    with gateway_stand_in(port=args.port) as state:
        print(f"gateway stand-in on {state.url}", flush=True)
        shown = 0
        while True:
            time.sleep(0.5)
            with state.lock:
                fresh = state.deliveries[shown:]
            for delivery in fresh:
                print(f"reply {delivery.id} ({len(delivery.message)} characters)", flush=True)
            shown += len(fresh)


if __name__ == "__main__":
    main()
