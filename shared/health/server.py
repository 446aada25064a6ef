"""The health service: JSON answers per part of the fleet, HTTP 503 when unhealthy, and /metrics.

No secrets and no personal data: figures, statuses, company ids and reasons only.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.core.pool import get_pool, pool_is_open
from shared.core.settings import Settings
from shared.health.checks import query_metrics_report
from shared.health.prometheus import render
from shared.health.report import build_report, redis_client
from shared.observability.pool_health import pool_health
from shared.yclients.webhooks import MAX_BODY_BYTES, receive_webhook

WEBHOOK_PATH = "/yclients/webhook"

log = logging.getLogger(__name__)

COMPONENT_PATHS = {
    "/health/database": "database",
    "/health/whatsapp": "whatsapp",
    "/health/queues": "queues",
    "/health/backups": "backups",
    "/health/sync": "sync",
    "/health/outbox": "outbox",
    "/health/crm": "crm",
    "/health/heartbeat": "heartbeat",
}


def answer(settings: Settings, path: str) -> tuple[int, str, bytes]:
    """(status code, content type, body) for one path."""
    client = redis_client(settings)
    if path == "/metrics":
        body = render(build_report(settings, client), query_metrics_report(client), settings.metrics_directory)
        return 200, "text/plain; version=0.0.4; charset=utf-8", body
    if path == "/health/database/metrics":
        return 200, "application/json", _json({"processes": query_metrics_report(client)})
    if path == "/health":
        report = build_report(settings, client)
        return (503 if report["status"] == "unhealthy" else 200), "application/json", _json(report)
    if path in COMPONENT_PATHS:
        report = build_report(settings, client)
        part: dict[str, Any] = report["components"][COMPONENT_PATHS[path]]
        if path == "/health/database" and pool_is_open():
            part = {**part, "health_service_pool": pool_health(get_pool())}
        return (503 if part["status"] == "unhealthy" else 200), "application/json", _json(part)
    return (
        404,
        "application/json",
        _json(
            {
                "error": "not found",
                "paths": ["/health", "/metrics", "/health/database/metrics", *sorted(COMPONENT_PATHS)],
            }
        ),
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str, ensure_ascii=False, indent=2).encode()


def authorized(settings: Settings, header: str | None) -> bool:
    """With FLEET_HEALTH__TOKEN set, only `Authorization: Bearer <token>` is answered (compared in constant time)."""
    if settings.health.token is None:
        return True
    expected = f"Bearer {settings.health.token.get_secret_value()}".encode()
    return hmac.compare_digest((header or "").encode(), expected)


def make_server(
    settings: Settings, port: int | None = None, enqueue_webhook: Callable[[int], Any] | None = None
) -> ThreadingHTTPServer:
    """The health service; with `enqueue_webhook`, it also takes YClients webhooks at /yclients/webhook."""

    class Handler(BaseHTTPRequestHandler):
        timeout = settings.health.request_timeout_seconds  # a client that stalls is dropped, not waited for

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path.rstrip("/") != WEBHOOK_PATH or enqueue_webhook is None:
                self._send(404, _json({"error": "not found"}))
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(413, _json({"error": "body too large"}))
                return
            secret = self.headers.get("X-Fleet-Webhook-Secret") or (parse_qs(url.query).get("secret") or [None])[0]
            try:
                reply = receive_webhook(settings, self.rfile.read(length), secret, enqueue_webhook)
                self._send(reply.status, _json(reply.body))
            except Exception as exc:  # stored nothing, or stored and the enqueue failed: the sweep re-drives it
                log.exception("webhook failed")
                self._send(503, _json({"error": type(exc).__name__}))

        def do_GET(self) -> None:
            if not authorized(settings, self.headers.get("Authorization")):
                body = _json({"error": "unauthorized"})
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="fleet-health"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            try:
                status, content_type, body = answer(settings, self.path.split("?")[0].rstrip("/") or "/")
            except Exception as exc:
                log.exception("health request failed")
                status, content_type = 503, "application/json"
                body = _json({"status": "unhealthy", "error": type(exc).__name__})
            self._send(status, body, content_type)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("health %s", format % args)

    get_pool(role="health", max_size=max(settings.budget.health, 1))
    return ThreadingHTTPServer((settings.health.address, settings.health.port if port is None else port), Handler)
