"""The gateway client on the wire: what a send carries, that it keeps one connection for the sends that follow,
and how each way a gateway can fail reads (retry later, or give the reply up)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from pydantic import SecretStr

from ops.standins.serving import serving
from shared.core.settings import GatewaySettings
from shared.inbound.gateway import GatewayClient, GatewayError

COMPANY = 962302
CHAT = "+79110000001"


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.connections = 0
        self.status = 200


@contextmanager
def recording_gateway() -> Iterator[tuple[str, Recorded]]:
    """A keep-alive HTTP server that keeps each request's headers and JSON body, and counts connections."""
    seen = Recorded()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen.connections += 1

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.requests.append((dict(self.headers.items()), body))
            answer = json.dumps({"error": "no session"} if seen.status >= 400 else {"ok": True}).encode()
            self.send_response(seen.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/send", seen


@contextmanager
def silent_gateway() -> Iterator[str]:
    """Accepts connections and never answers: a gateway stuck on a request."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/send"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_a_send_carries_the_salon_the_token_and_its_key_and_later_sends_reuse_the_connection() -> None:
    with recording_gateway() as (url, seen):
        client = GatewayClient(GatewaySettings(send_url=url, token=SecretStr("gw-token")))
        try:
            for n in range(3):
                client.send(company_id=COMPANY, phone=CHAT, message=f"Ответ {n}", key=f"reply:{COMPANY}:{n}-{n}")
        finally:
            client.close()
    assert [body for _, body in seen.requests] == [
        {"company_id": COMPANY, "phone": CHAT, "message": f"Ответ {n}", "id": f"{COMPANY}:reply:{COMPANY}:{n}-{n}"}
        for n in range(3)
    ]
    headers = seen.requests[0][0]
    assert headers["Authorization"] == "Bearer gw-token"
    assert headers["Content-Type"] == "application/json"
    assert [h["Idempotency-Key"] for h, _ in seen.requests] == [body["id"] for _, body in seen.requests]
    assert seen.connections == 1, "each send opened its own connection: the answer did not go back to the pool"


def test_a_refusal_gives_the_reply_up_with_the_gateways_reason_and_an_outage_or_a_redirect_is_retried() -> None:
    with recording_gateway() as (url, seen):
        client = GatewayClient(GatewaySettings(send_url=url))
        try:
            seen.status = 404
            with pytest.raises(GatewayError) as refused:
                client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reply:1")
            seen.status = 503
            with pytest.raises(GatewayError) as outage:
                client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reply:1")
            seen.status = 302
            with pytest.raises(GatewayError) as elsewhere:
                client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reply:1")
            seen.status = 200
            client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reply:1")
        finally:
            client.close()
    assert not refused.value.retryable
    assert refused.value.status == 404
    assert "no session" in str(refused.value)
    assert outage.value.retryable
    assert outage.value.status == 503
    assert elsewhere.value.retryable, "a redirect is not a send: the reply is not marked sent, it is tried again"
    assert "FLEET_GATEWAY__SEND_URL" in str(elsewhere.value)
    assert "Authorization" not in seen.requests[0][0], "no token configured, none sent"
    assert seen.connections == 1, "an error answer, read whole, leaves the connection usable"


def _failure_of_one_send(url: str, timeout_seconds: float) -> GatewayError:
    client = GatewayClient(GatewaySettings(send_url=url, timeout_seconds=timeout_seconds))
    try:
        with pytest.raises(GatewayError) as failed:
            client.send(company_id=COMPANY, phone=CHAT, message="Привет", key="reply:1")
    finally:
        client.close()
    return failed.value


def test_a_gateway_that_does_not_answer_in_time_or_is_not_there_is_tried_again_later() -> None:
    with silent_gateway() as url:
        slow = _failure_of_one_send(url, timeout_seconds=0.3)
    assert slow.retryable
    assert str(slow) == "gateway timed out (ReadTimeout)"
    away = _failure_of_one_send(f"http://127.0.0.1:{closed_port()}/send", timeout_seconds=2)
    assert away.retryable
    assert str(away) == "gateway unreachable (ConnectError)"
