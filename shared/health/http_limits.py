"""What one client may send to, or hold on, the health service (it faces the internet for YClients' webhooks).

uvicorn bounds a request's headers (h11's event size) and answers 503 over `limit_concurrency`, but it has no
deadline for a request that is still arriving and it keeps a connection that never sends one. The protocol
below adds both: a request must arrive in full (headers and body) within the deadline, and a connection over
the cap is closed at once. A body is read only through `read_body`, which checks its declared length first
and counts a chunked one while reading, so nothing over the limit is ever buffered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_HEADER_BYTES = 16 * 1024  # request line and headers; a larger request is answered 400 by uvicorn
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 30\r\n\r\n{"error": "too many requests"}'
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline per request and a hard cap on the connections held."""

    deadline_seconds: float = 10.0
    max_connections: int = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Beyond the cap: refused before a byte is read, so a flood of idle sockets costs nothing to hold.
            transport.write(REFUSED)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets a deadline of its own

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.deadline_seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        """Cut a request still arriving (or an idle connection); one fully received is being answered: left be."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.DONE and self.cycle is not None and not self.cycle.response_complete:
            return
        self.transport.close()


def guarded_protocol(deadline_seconds: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class for one listener (uvicorn takes a class, not an instance)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"deadline_seconds": deadline_seconds, "max_connections": max_connections},
    )


class BodyRefused(Exception):
    """The request's body is refused before (or while) it is read; answered with `status`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_length(request: Request, limit: int) -> int | None:
    """The declared length (None for a chunked body, counted while read); refused without one or over `limit`."""
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return None
    declared = request.headers.get("content-length")
    if declared is None:
        raise BodyRefused(411, "Content-Length required")
    if not (declared.isascii() and declared.isdigit()):  # h11 refuses these first; this keeps the app honest
        raise BodyRefused(400, "bad Content-Length")
    length = int(declared)
    if length > limit:
        raise BodyRefused(413, "body too large")
    return length


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, never more than `limit` bytes of it in memory."""
    check_length(request, limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyRefused(413, "body too large")
    except ClientDisconnect as exc:  # the sender went away, or the deadline cut it off
        raise BodyRefused(408, "request not received in time") from exc
    return bytes(body)


class CloseUnreadBodies:
    """Close the connection after an answer given before its request's body was read in full.

    Otherwise uvicorn would keep the connection and read the rest of the body (to discard it): a refused
    150 MiB upload would still be received.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        received = b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") == b"0"

        async def tracked_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                received = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not received:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, tracked_receive, closing_send)
