"""A local WhatsApp gateway stand-in holding several salons' sessions: accepts POST {company_id, phone, message,
id} like the real send endpoint, and refuses (4xx, with a reason) a send it could not make from the right number.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from ops.standins.serving import serving

SEED_COMPANY = 962302  # the seed salon (ops/harness/seed.py): the one session the stand-in holds by default


@dataclass(frozen=True)
class Delivery:
    phone: str
    message: str
    id: str
    at: float
    company: int  # the salon whose WhatsApp session it left from


@dataclass(frozen=True)
class Refusal:
    """A send the stand-in refused, as the real gateway would: nothing went out."""

    status: int
    reason: str
    body: Any  # the request as it came


def refusal_of(body: Any, companies: frozenset[int]) -> tuple[int, str] | None:
    """Why the gateway cannot send this (status, reason), or None: without a salon it cannot choose the sender,
    and a salon whose session it does not hold it cannot send for."""
    if not isinstance(body, dict):
        return 400, "the body must be a JSON object"
    company = body.get("company_id")
    if company is None:
        return 400, "company_id is missing: the gateway cannot tell which salon's WhatsApp number sends"
    if type(company) is not int:
        return 400, f"company_id must be a JSON integer, not {json.dumps(company, ensure_ascii=False)[:40]}"
    if company not in companies:
        return 404, f"no WhatsApp session of company {company} here"
    for name in ("phone", "message", "id"):
        if not isinstance(body.get(name), str) or not body[name]:
            return 400, f"{name} must be a non-empty string"
    if not body["id"].startswith(f"{company}:"):
        return 400, f"id must start with its company, {company}:"
    return None


@dataclass
class GatewayStandIn:
    url: str = ""
    companies: frozenset[int] = frozenset({SEED_COMPANY})  # the salons whose sessions it holds
    deliveries: list[Delivery] = field(default_factory=list)  # first arrival of each id, in arrival order
    delivered_ids: set[str] = field(default_factory=set)
    refusals: list[Refusal] = field(default_factory=list)
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
            self.refusals.clear()

    def to(self, phone: str, company: int | None = None) -> list[Delivery]:
        """What reached a chat; with `company`, only what left from that salon's number."""
        with self.lock:
            return [d for d in self.deliveries if d.phone == phone and company in (None, d.company)]

    def count(self) -> int:
        with self.lock:
            return len(self.deliveries)

    def receive(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """One request: an outage asked for by `fail_next` first (as a gateway that is down never reads the
        body), then the refusals, then the delivery (a repeated id is dropped)."""
        not_json: tuple[int, str] | None = None
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body, not_json = raw.decode(errors="replace"), (400, "the body is not JSON")
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.failure_status, {"error": "unavailable"}
            refused = not_json or refusal_of(body, self.companies)
            if refused is not None:
                self.refusals.append(Refusal(*refused, body))
                return refused[0], {"error": refused[1]}
            if body["id"] in self.delivered_ids:
                self.repeats += 1
            else:
                self.delivered_ids.add(body["id"])
                self.deliveries.append(
                    Delivery(body["phone"], body["message"], body["id"], time.time(), body["company_id"])
                )
            return 200, {"ok": True}


@contextmanager
def gateway_stand_in(port: int = 0, companies: Iterable[int] = (SEED_COMPANY,)) -> Iterator[GatewayStandIn]:
    """The stand-in on a local port, holding the sessions of `companies` (the seed salon by default)."""
    state = GatewayStandIn(companies=frozenset(companies))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real gateway's HTTP server does
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self) -> None:
            status, answer = state.receive(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            data = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler, port) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/send"
        yield state


def main() -> None:
    """Run the stand-in on its own, printing each reply and refusal, for the demo fleet (`ops/run-fleet`)."""
    import argparse

    parser = argparse.ArgumentParser(description="local WhatsApp gateway stand-in")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--company", type=int, action="append", help=f"a salon whose session it holds (repeatable; {SEED_COMPANY})"
    )
    args = parser.parse_args()
    companies = args.company or [SEED_COMPANY]
    with gateway_stand_in(port=args.port, companies=companies) as state:
        print(f"gateway stand-in on {state.url}, sending for companies {sorted(state.companies)}", flush=True)
        shown = refused = 0
        while True:
            time.sleep(0.5)
            with state.lock:
                fresh, refusals = state.deliveries[shown:], state.refusals[refused:]
            for delivery in fresh:
                characters = len(delivery.message)
                print(f"reply {delivery.id} from company {delivery.company} ({characters} characters)", flush=True)
            for refusal in refusals:
                print(f"refused ({refusal.status}): {refusal.reason}", flush=True)
            shown, refused = shown + len(fresh), refused + len(refusals)


if __name__ == "__main__":
    main()
