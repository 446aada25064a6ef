"""A local stand-in of Telegram's Bot API `sendMessage`: the real URL shape, JSON answers and refusals.

`POST /bot<token>/sendMessage` with a JSON body; answers `{"ok": true, "result": {message}}`, or
`{"ok": false, "error_code": ..., "description": ...}` the way Telegram does: 401 for an unknown token,
400 "chat not found" for another chat, 400 for an empty or too long text, 429 with `parameters.retry_after`
when told to throttle.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from ops.standins.serving import serving

MAX_TEXT = 4096


@dataclass(frozen=True)
class SentMessage:
    chat_id: str
    text: str
    message_id: int
    at: float


@dataclass
class TelegramStandIn:
    token: str
    chat_id: str
    api_url: str = ""
    messages: list[SentMessage] = field(default_factory=list)
    requests: int = 0
    failures_left: int = 0
    failure_status: int = 502
    throttled_left: int = 0
    retry_after: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 502) -> None:
        with self.lock:
            self.failures_left, self.failure_status = count, status

    def throttle_next(self, count: int, retry_after: int) -> None:
        with self.lock:
            self.throttled_left, self.retry_after = count, retry_after

    def env(self) -> dict[str, str]:
        """The fleet's settings that point its alerts at this stand-in."""
        return {
            "FLEET_ALERTS__TELEGRAM_BOT_TOKEN": self.token,
            "FLEET_ALERTS__TELEGRAM_CHAT_ID": self.chat_id,
            "FLEET_ALERTS__TELEGRAM_API_URL": self.api_url,
        }

    def texts(self) -> list[str]:
        with self.lock:
            return [message.text for message in self.messages]

    def answer(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        """What Telegram answers to one request."""
        with self.lock:
            self.requests += 1
            if path != f"/bot{self.token}/sendMessage":
                return 401 if "/bot" in path else 404, _error(401 if "/bot" in path else 404, "Unauthorized")
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.failure_status, _error(self.failure_status, "Bad Gateway")
            if self.throttled_left > 0:
                self.throttled_left -= 1
                return 429, {
                    **_error(429, f"Too Many Requests: retry after {self.retry_after}"),
                    "parameters": {"retry_after": self.retry_after},
                }
            if not isinstance(body, dict) or str(body.get("chat_id")) != self.chat_id:
                return 400, _error(400, "Bad Request: chat not found")
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                return 400, _error(400, "Bad Request: message text is empty")
            if len(text) > MAX_TEXT:
                return 400, _error(400, "Bad Request: message is too long")
            message = SentMessage(self.chat_id, text, len(self.messages) + 1, time.time())
            self.messages.append(message)
            result = {
                "message_id": message.message_id,
                "date": int(message.at),
                "chat": {"id": self.chat_id},
                "text": text,
            }
            return 200, {"ok": True, "result": result}


def _error(code: int, description: str) -> dict[str, Any]:
    return {"ok": False, "error_code": code, "description": description}


@contextmanager
def telegram_stand_in(token: str = "123456:TEST-token", chat_id: str = "-1001234567890") -> Iterator[TelegramStandIn]:  # noqa: S107  (a stand-in's made-up token)
    state = TelegramStandIn(token=token, chat_id=chat_id)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            status, answer = state.answer(self.path.split("?")[0], body)
            data = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as server:
        state.api_url = f"http://127.0.0.1:{server.server_address[1]}"
        yield state
