"""A local stand-in for Sentry's ingest endpoint that records envelopes, as the SDK sends them over HTTP."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from ops.standins.serving import serving


@dataclass
class RecordedEnvelopes:
    items: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (item header, payload)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_type(self, item_type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [payload for header, payload in self.items if header.get("type") == item_type]


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    lines = body.split(b"\n")
    items = []
    index = 1  # line 0 is the envelope header
    while index < len(lines) and lines[index].strip():
        header = json.loads(lines[index])
        payload_line = lines[index + 1] if index + 1 < len(lines) else b"{}"
        try:
            payload = json.loads(payload_line)
        except ValueError:
            payload = {"raw": payload_line.decode(errors="replace")}
        items.append((header, payload))
        index += 2
    return items


@contextmanager
def sentry_stand_in() -> Iterator[tuple[str, RecordedEnvelopes]]:
    """Yields (DSN, recorded envelopes)."""
    recorded = RecordedEnvelopes()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            with recorded.lock:
                recorded.items.extend(parse_envelope(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as server:
        yield f"http://public@127.0.0.1:{server.server_address[1]}/1", recorded
