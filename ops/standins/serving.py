"""Serve an HTTP handler on a local port in a background thread, for the stand-ins and tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler] | ThreadingHTTPServer, port: int = 0
) -> Iterator[ThreadingHTTPServer]:
    """Yield the running server (a handler class is bound to 127.0.0.1:`port`); shut it down afterwards."""
    server = handler if isinstance(handler, ThreadingHTTPServer) else ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
