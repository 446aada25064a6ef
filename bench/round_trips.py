"""Round trips to PostgreSQL, counted on the wire: a TCP relay between the processes under test and the server.

A round trip is the client speaking after the server has answered: every time bytes from a client follow bytes
from the server (or open the connection), the relay counts one, whatever protocol messages they carry (a simple
query, an extended-protocol exchange, several statements sent together in pipeline mode). The count is the
network's, not the fleet's own statement counter: the fleet's layers cannot hide a round trip from it.

The relay runs an asyncio loop in a thread of the benchmark's process; it adds latency, so benchmarks route
through it only a separate, untimed pass (`bench.inbound` sends a few hundred messages that way).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


@dataclass
class _Turn:
    server_spoke: bool = True  # the connection's first bytes from the client are its first round trip


class RoundTripRelay:
    """Relays 127.0.0.1:<port> to the server of `url`; `round_trips` counts over every relayed connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._url = parts
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="round-trip-relay", daemon=True)
        self._lock = threading.Lock()
        self.round_trips = 0
        self.port = 0

    def __enter__(self) -> RoundTripRelay:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = started.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        """The server's URL with the relay in its place."""
        user = f"{self._url.username}@" if self._url.username else ""
        return urlunsplit(self._url._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def take(self) -> int:
        """The round trips counted so far, and the count started again."""
        with self._lock:
            counted, self.round_trips = self.round_trips, 0
        return counted

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._upstream)
        turn = _Turn()
        await asyncio.gather(
            self._pump(client_reader, server_writer, turn, from_client=True),
            self._pump(server_reader, client_writer, turn, from_client=False),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: _Turn, *, from_client: bool
    ) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                if from_client and turn.server_spoke:
                    with self._lock:
                        self.round_trips += 1
                turn.server_spoke = not from_client
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()
