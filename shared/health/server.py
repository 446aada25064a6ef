"""The health service: JSON answers per part of the fleet, HTTP 503 when unhealthy, /metrics, YClients' webhooks.

No secrets and no personal data: figures, statuses, company ids and reasons only. Served by uvicorn and
Starlette with the limits of shared/health/http_limits.py: the service may face the internet (webhooks).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from shared.core.pool import get_pool, pool_is_open
from shared.core.settings import Settings
from shared.health.checks import query_metrics_report
from shared.health.http_limits import MAX_HEADER_BYTES, BodyRefused, CloseUnreadBodies, guarded_protocol, read_body
from shared.health.prometheus import render
from shared.health.report import build_report, redis_client
from shared.observability.pool_health import pool_health
from shared.yclients.webhooks import MAX_BODY_BYTES, WebhookAnswer, open_door, receive_webhook, refused

WEBHOOK_PATH = "/yclients/webhook"
# The webhooks' OpenAPI description, served on the private listener at /openapi.json (the fleet is installed
# editable: docs/ sits beside the packages).
OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "webhook-openapi.json"

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
    if path == "/openapi.json" and OPENAPI_FILE.is_file():
        return 200, "application/json", OPENAPI_FILE.read_bytes()
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
                "paths": ["/health", "/metrics", "/health/database/metrics", *sorted(COMPONENT_PATHS), "/openapi.json"],
            }
        ),
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str, ensure_ascii=False, indent=2).encode()


def authorized(settings: Settings, header: str | None) -> bool:
    """With FLEET_HEALTH__TOKEN set, only `Authorization: Bearer <token>` is answered (compared in constant time)."""
    if settings.health.token is None:
        return True
    token = settings.health.token.get_secret_value()
    if not token:  # set, but to nothing (an empty line in fleet.env): closes the door, never opens it to "Bearer "
        return False
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest((header or "").encode(), expected)


def _reply(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_json(value), status, {"Cache-Control": "no-store", **(headers or {})}, "application/json")


def _refused(answer: WebhookAnswer) -> Response:
    return _reply(answer.status, answer.body)


def _is_webhook_path(path: str) -> bool:
    return path == WEBHOOK_PATH or path.startswith(WEBHOOK_PATH + "/")


SECRET_HEADER = "X-Fleet-Webhook-Secret"  # noqa: S105  (a header name, not a secret)


def webhook_door(path: str, header: str | None) -> tuple[int | None, str | None] | None:
    """(company in the path, secret) of a webhook path: `/yclients/webhook` or `/yclients/webhook/<company>`
    with the secret in the header, or `/yclients/webhook/<company>/<secret>`; None for any other shape."""
    parts = path.removeprefix(WEBHOOK_PATH).strip("/").split("/") if path != WEBHOOK_PATH else []
    if len(parts) > 2 or (parts and not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) <= 18)):
        return None
    company = int(parts[0]) if parts else None
    if company == 0:
        return None
    in_path = parts[1] if len(parts) == 2 else None
    if in_path is not None and header is not None and not hmac.compare_digest(in_path.encode(), header.encode()):
        return None  # two different secrets: neither is trusted
    return company, in_path or header or None


def make_app(
    settings: Settings, enqueue_webhook: Callable[[int], Any] | None, *, health: bool = True, webhooks: bool = True
) -> ASGIApp:
    """One listener's application: the health answers, the webhooks, or both."""
    limit = min(settings.health.max_body_bytes, MAX_BODY_BYTES)

    async def webhook(request: Request, path: str, enqueue: Callable[[int], Any]) -> Response:
        # Every refusal reads the same; which part was wrong goes to the log, without the secret.
        if request.url.query:
            return _refused(refused(403, "a query string: a secret there would reach proxies' and servers' logs"))
        shape = webhook_door(path, request.headers.get(SECRET_HEADER))
        if shape is None:
            return _refused(refused(403, "not a webhook path, or two different secrets"))
        company, secret = shape
        try:
            door = await run_in_threadpool(open_door, settings, secret, company)
        except Exception:
            log.exception("webhook secret check failed")
            return _reply(503, {"error": "unavailable"})
        if door is None:  # checked before the body is read: a stranger never gets a byte of it taken
            detail = "no secret" if secret is None else "a secret of no salon (or not of this one)"
            return _refused(refused(403, f"{detail}; company in path: {company}"))
        try:
            body = await read_body(request, limit)
        except BodyRefused as body_refused:
            return _refused(refused(body_refused.status, body_refused.reason))
        try:
            reply = await run_in_threadpool(receive_webhook, settings, body, door, enqueue)
        except Exception:  # stored nothing, or stored and the enqueue failed: the sweep re-drives it
            log.exception("webhook failed")
            return _reply(503, {"error": "unavailable"})
        return _reply(reply.status, reply.body)

    async def endpoint(request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        if request.method == "POST":
            if not webhooks or enqueue_webhook is None or not _is_webhook_path(path):
                return _reply(404, {"error": "not found"})
            return await webhook(request, path, enqueue_webhook)
        if not health:
            return _reply(404, {"error": "not found"})
        if not authorized(settings, request.headers.get("Authorization")):
            return _reply(401, {"error": "unauthorized"}, {"WWW-Authenticate": 'Bearer realm="fleet-health"'})
        try:
            status, content_type, body = await run_in_threadpool(answer, settings, path)
        except Exception as exc:
            log.exception("health request failed")
            return _reply(503, {"status": "unhealthy", "error": type(exc).__name__})
        return Response(body, status, {"Cache-Control": "no-store"}, content_type)

    async def unrouted(request: Request, _: Exception) -> Response:
        # Starlette's `{path:path}` does not match a path with a newline (`%0A`, e.g. in a path's secret): answered
        # here like any other path, so a webhook's refusal still reads the same (found by tests/test_webhook_fuzz.py).
        return await endpoint(request)

    app = Starlette(
        routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])], exception_handlers={404: unrouted}
    )
    return CloseUnreadBodies(app)


def _bind(address: str, port: int, backlog: int) -> socket.socket:
    """A listening socket, bound now so its port (also port 0's) is known before the server runs."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class HealthServer:
    """The service's listeners (private: health and metrics; public: webhooks, when bound apart) under uvicorn.

    Shaped like the standard library's servers (`server_address`, `serve_forever`, `shutdown`,
    `server_close`) so tests and the command drive it the same way; `running()` serves it from a thread.
    """

    def __init__(self, settings: Settings, listeners: list[tuple[socket.socket, ASGIApp]]) -> None:
        deadline = settings.health.request_timeout_seconds
        self._sockets = [sock for sock, _ in listeners]
        self._servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    http=guarded_protocol(deadline, settings.health.max_connections),
                    lifespan="off",
                    log_config=None,
                    access_log=False,
                    server_header=False,
                    proxy_headers=False,
                    limit_concurrency=settings.health.max_connections,
                    backlog=settings.health.max_connections,
                    timeout_keep_alive=5,
                    timeout_graceful_shutdown=max(1, round(deadline)),
                    h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                )
            )
            for _, app in listeners
        ]
        # A webhook's path may hold its salon's secret: no access line is ever written, whatever a later logging
        # set-up does to the logger (uvicorn only detaches it when its Config is made).
        logging.getLogger("uvicorn.access").disabled = True
        self.server_address: tuple[str, int] = self._sockets[0].getsockname()[:2]
        self.webhook_address: tuple[str, int] = self._sockets[-1].getsockname()[:2]
        self._started = threading.Event()
        self._stopped = threading.Event()

    async def _serve(self) -> None:
        await asyncio.gather(
            *(server.serve(sockets=[sock]) for server, sock in zip(self._servers, self._sockets, strict=True))
        )

    def _run(self) -> None:
        self._started.set()
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def serve_forever(self) -> None:
        """Serve until `shutdown()`; in the main thread also until SIGTERM or SIGINT (then gracefully)."""
        if threading.current_thread() is not threading.main_thread():
            self._run()
            return
        # The loop runs in a thread of its own, so that one signal stops every listener (each uvicorn server
        # would otherwise take the process's signals for itself alone).
        previous = {sig: signal.signal(sig, lambda *_: self._ask_to_stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
        thread = threading.Thread(target=self._run, name="health-server")
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _ask_to_stop(self) -> None:
        for server in self._servers:
            server.should_exit = True

    def shutdown(self) -> None:
        """Stop serving and wait for it (connections still answering get the graceful timeout)."""
        self._ask_to_stop()
        if self._started.is_set():
            self._stopped.wait()

    def server_close(self) -> None:
        for sock in self._sockets:
            sock.close()

    @contextmanager
    def running(self) -> Iterator[HealthServer]:
        """Serve from a background thread for the duration of the block."""
        thread = threading.Thread(target=self.serve_forever, name="health-server", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            self.server_close()


def make_server(
    settings: Settings, port: int | None = None, enqueue_webhook: Callable[[int], Any] | None = None
) -> HealthServer:
    """The health service; with `enqueue_webhook`, it also takes YClients webhooks at /yclients/webhook.

    With FLEET_HEALTH__WEBHOOK_PORT set, webhooks are taken only on that (public) listener and the health
    answers only on the private one; `port` overrides FLEET_HEALTH__PORT (0: any free port).
    """
    health = settings.health
    backlog = health.max_connections
    private = _bind(health.address, health.port if port is None else port, backlog)
    listeners: list[tuple[socket.socket, ASGIApp]]
    if health.webhook_port is None or enqueue_webhook is None:
        listeners = [(private, make_app(settings, enqueue_webhook))]
    else:
        try:
            public = _bind(health.webhook_address, health.webhook_port, backlog)
        except OSError:
            private.close()
            raise
        listeners = [
            (private, make_app(settings, None, webhooks=False)),
            (public, make_app(settings, enqueue_webhook, health=False)),
        ]
    get_pool(role="health", max_size=max(settings.budget.health, 1))
    return HealthServer(settings, listeners)
