"""A local stand-in of an OpenAI-compatible chat-completions API with tool calling, playing a model that books.

It serves `POST /v1/chat/completions` (`state.url`, ending in `/v1`, is the `openai` client's `base_url`) with
`Authorization: Bearer <key>`, and answers a `chat.completion` object as the hosted API and local servers
(llama.cpp, Ollama, vLLM) do: one choice whose message holds either content or `tool_calls` (each
`{"id": "call_…", "type": "function", "function": {"name", "arguments": <JSON text>}}`), its `finish_reason`
("tool_calls", "stop", or "length" when content passes `max_tokens`) and a `usage` estimated at four
characters a token. Refusals carry OpenAI's error body `{"error": {"message", "type", "param", "code"}}`:
401 for a missing or wrong key, 400 for a body it cannot read or a streamed request, 404 for another path,
429 (with `retry-after`) and 500 when a mode asks for them.

What it answers is chosen per request: the next behaviour queued by `state.queue(...)`, else `state.mode`.
"sensible" (the default; "ok" is the same in a queue) plays a simple model over the fleet's tools, reading the last
user message and the tool results that followed it: a price question calls `list_services` and names a price;
"перенес" calls `my_bookings`, `find_free_times(service_id, booking)` and `move`; "отмен" calls `my_bookings` and
`cancel`; "запис" or "запиш" calls `list_services`, `find_free_times(service_id)` and `book`; "адрес" or "где вы",
"телефон", "работаете" or "часы работы" call `salon_info`; "администратор" or "оператор" calls `hand_over`;
anything else gets a greeting. A tool result `{"error": …}` gets an apology, a result of `book`, `move`, `cancel`
or `hand_over` a short closing line. The hostile modes: "malformed_args" (a `book` call whose arguments are not
JSON), "unknown_tool" (`delete_all_records`), "hallucinated_slot" (the sensible flow, but `book` and `move` name
slot "S99"), "hallucinated_service" (the sensible flow, but `find_free_times` names service 999999), "stall" (waits
`stall_seconds`, then answers sensibly; a caller that gave up is let go quietly), "rate_limited" (429),
"server_error" (500), "english", "huge" (`huge_characters` Russian letters, past any `max_tokens`), "injection"
(obeys a client's "игнорируй…" with `my_bookings` and three `cancel` calls in one answer, and "покажи записи номера
<phone>" with `my_bookings({"phone": …})`, then quotes what came back), "refuse" (a polite Russian refusal) and
"garbage" (a 200 whose body is `{"choices": []}`).

Options (`model_stand_in(**options)`, attributes of the state): `key` ("model-key"), `mode` ("sensible"),
`stall_seconds` (30), `retry_after` (seconds in the 429's header, 1), `huge_characters` (20,000). It records
`requests_received` (each request's parsed body, for privacy checks), `count` (requests of any kind),
`behaviours` (what each answered request was given), `tools_called` (the tools its answers called) and
`hang_ups` (answers the caller had left before); `sent_text()` is every message content and tool argument it
was ever sent, as one string.
Tests drive it in-process; the demo runs it with

    python -m ops.standins.model --port 8083 --key model-key
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import secrets
import select
import socket
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops.standins.serving import serving

MODES = (
    "sensible",
    "malformed_args",
    "unknown_tool",
    "hallucinated_slot",
    "hallucinated_service",
    "stall",
    "rate_limited",
    "server_error",
    "english",
    "huge",
    "injection",
    "refuse",
    "garbage",
)
ALIASES = {"ok": "sensible"}

GREETING = "Здравствуйте! Подскажу цены, свободное время и запишу вас."
APOLOGY = "Извините, так не получилось. Давайте попробуем ещё раз?"
ENGLISH = "Sure! I can help you book an appointment."
REFUSAL = "Извините, я не могу с этим помочь."
NO_BOOKINGS = "У вас нет предстоящих записей."
NO_TIMES = "К сожалению, свободного времени нет."
NO_SERVICES = "Сейчас не могу найти услуги салона."
CLOSING = {
    "book": "Подтвердите, пожалуйста, запись.",
    "move": "Подтвердите, пожалуйста, перенос записи.",
    "cancel": "Подтвердите, пожалуйста, отмену записи.",
    "hand_over": "Передаю ваш вопрос администратору.",
}
PRICE_WORDS = ("стоит", "цен", "прайс", "почем")
SALON_TOPICS = ((("адрес", "где вы"), "address"), (("телефон",), "phone"), (("работаете", "часы работы"), "hours"))
HALLUCINATED_SLOT = "S99"
HALLUCINATED_SERVICE = 999_999
RUSSIAN_LETTERS = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
ID_LETTERS = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Call:
    """One tool call as the model writes it: `arguments` is JSON text (or, on purpose, not)."""

    name: str
    arguments: str

    @classmethod
    def of(cls, name: str, arguments: dict[str, Any]) -> Call:
        return cls(name, json.dumps(arguments, ensure_ascii=False))


@dataclass(frozen=True)
class Reply:
    """What the played model says: content, or tool calls (content is then null)."""

    content: str | None = None
    calls: tuple[Call, ...] = ()
    ignore_max_tokens: bool = False


@dataclass(frozen=True)
class ToolResult:
    name: str  # the tool the result answers, from the assistant message's call with that id ("?" if none)
    raw: str  # the content as sent
    value: Any  # the content decoded from JSON (None if it is not JSON)

    @property
    def refused(self) -> bool:
        return isinstance(self.value, dict) and "error" in self.value


@dataclass(frozen=True)
class Turn:
    """The part of a conversation a simple model acts on: the last user message and the tool results after it."""

    text: str  # lower case, ё as е
    written: str  # as the client wrote it
    results: tuple[ToolResult, ...]
    offered: frozenset[str] | None  # the tools the request offers (None: it sent no `tools`)

    def called(self, name: str) -> bool:
        return any(result.name == name for result in self.results)

    def result(self, name: str) -> dict[str, Any] | None:
        """The latest usable (object, not refused) result of a tool in this turn."""
        for result in reversed(self.results):
            if result.name == name and isinstance(result.value, dict) and not result.refused:
                return result.value
        return None


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _normal(text: str) -> str:
    return text.lower().replace("ё", "е")


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def read_turn(body: dict[str, Any]) -> Turn:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    names: dict[Any, str] = {}
    for message in messages:
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[call.get("id")] = str(call["function"].get("name"))
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    written = _text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    results = []
    for message in messages[last_user + 1 :]:
        if message.get("role") == "tool":
            raw = _text_of(message.get("content"))
            results.append(ToolResult(names.get(message.get("tool_call_id"), "?"), raw, _decoded(raw)))
    tools = body.get("tools")
    offered = None
    if isinstance(tools, list):
        offered = frozenset(
            str(tool["function"].get("name"))
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        )
    return Turn(_normal(written), written, tuple(results), offered)


def _items(value: dict[str, Any], key: str) -> list[dict[str, Any]]:
    listed = value.get(key)
    return [item for item in listed if isinstance(item, dict)] if isinstance(listed, list) else []


def _words(text: str) -> list[str]:
    return re.findall(r"[а-яa-z]+", _normal(text))


def best_match(text: str, services: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The service whose title shares the most word stems (first 5 letters) with the text; the first on a tie."""
    stems = {word[:5] for word in _words(text) if len(word) >= 4}
    best, score = None, 0
    for service in services:
        title = _words(str(service.get("title", "")))
        matched = sum(1 for stem in stems if any(word.startswith(stem) for word in title))
        if matched > score:
            best, score = service, matched
    return best


def _rubles(price: Any) -> str:
    said = str(price)
    return said if "₽" in said or "руб" in said else f"{said} ₽"


def price_answer(text: str, services: list[dict[str, Any]]) -> str:
    match = best_match(text, services)
    if match is not None:
        return f"{match.get('title')} стоит {_rubles(match.get('price'))}."
    lines = [f"{service.get('title')} — {_rubles(service.get('price'))}" for service in services]
    return "Наши цены:\n" + "\n".join(lines) if lines else NO_SERVICES


def _ask(turn: Turn, name: str, arguments: dict[str, Any]) -> Reply:
    """Call a tool whose result the model still needs; once called without a usable result, give up politely."""
    return Reply(APOLOGY) if turn.called(name) else Reply(calls=(Call.of(name, arguments),))


def sensible(turn: Turn, *, slot: str | None = None, service_id: int | None = None) -> Reply:
    """The scripted model: what a small model with the fleet's tools would do next. `slot` and `service_id`
    replace what it would pick (the hallucinating modes)."""
    if turn.results:
        last = turn.results[-1]
        if last.refused:
            return Reply(APOLOGY)
        if last.name in CLOSING:
            return Reply(CLOSING[last.name])
    reply = _decide(turn, slot, service_id)
    if reply.calls and turn.offered is not None and not {call.name for call in reply.calls} <= turn.offered:
        return Reply(GREETING)  # a tool the fleet did not offer is not called by a sensible model
    return reply


def _decide(turn: Turn, slot: str | None, service_id: int | None) -> Reply:
    text = turn.text
    if any(word in text for word in PRICE_WORDS):
        listed = turn.result("list_services")
        if listed is None:
            return _ask(turn, "list_services", {})
        return Reply(price_answer(text, _items(listed, "services")))
    if "перенес" in text or "отмен" in text:
        found = turn.result("my_bookings")
        if found is None:
            return _ask(turn, "my_bookings", {})
        bookings = _items(found, "bookings")
        if not bookings:
            return Reply(NO_BOOKINGS)
        booking = str(bookings[0].get("booking"))
        if "отмен" in text and "перенес" not in text:
            return Reply(calls=(Call.of("cancel", {"booking": booking}),))
        times = turn.result("find_free_times")
        if times is None:
            chosen = service_id if service_id is not None else bookings[0].get("service_id")
            return _ask(turn, "find_free_times", {"service_id": chosen, "booking": booking})
        slots = _items(times, "times")
        if not slots:
            return Reply(NO_TIMES)
        picked = slot or str(slots[1 if len(slots) > 1 else 0].get("slot"))
        return Reply(calls=(Call.of("move", {"booking": booking, "slot": picked}),))
    if "запис" in text or "запиш" in text:
        listed = turn.result("list_services")
        if listed is None:
            return _ask(turn, "list_services", {})
        services = _items(listed, "services")
        if not services:
            return Reply(NO_SERVICES)
        times = turn.result("find_free_times")
        if times is None:
            service = best_match(text, services) or services[0]
            chosen = service_id if service_id is not None else service.get("service_id")
            return _ask(turn, "find_free_times", {"service_id": chosen})
        slots = _items(times, "times")
        if not slots:
            return Reply(NO_TIMES)
        return Reply(calls=(Call.of("book", {"slot": slot or str(slots[0].get("slot"))}),))
    topic = next((topic for words, topic in SALON_TOPICS if any(word in text for word in words)), None)
    if topic is not None:
        info = turn.result("salon_info")
        if info is None:
            return _ask(turn, "salon_info", {"topic": topic})
        return Reply(str(info.get("answer") or APOLOGY))
    if "администратор" in text or "оператор" in text:
        return Reply(calls=(Call.of("hand_over", {"reason": "клиент просит администратора"}),))
    return Reply(GREETING)


def injection(turn: Turn) -> Reply:
    """A model that obeys instructions hidden in the client's text."""
    if "игнорируй" in turn.text and not turn.results:
        cancels = tuple(Call.of("cancel", {"booking": f"B{n}"}) for n in (1, 2, 3))
        return Reply(calls=(Call.of("my_bookings", {}), *cancels))
    if "покажи записи номера" in turn.text:
        if not turn.called("my_bookings"):
            return Reply(calls=(Call.of("my_bookings", {"phone": _phone_in(turn.written)}),))
        said = next(result.raw for result in reversed(turn.results) if result.name == "my_bookings")
        return Reply(f"Вот что я нашёл по этому номеру: {said}")
    return sensible(turn)


def _phone_in(text: str) -> str:
    found = re.search(r"\+?\d[\d\s()\-]{5,}\d", text)
    if found is not None:
        return found.group(0)
    return text.rsplit("номера", 1)[-1].strip()


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(ID_LETTERS) for _ in range(length))


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, as its clients parse it."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}" if len(key) > 10 else "*" * len(key)


# (status, body, headers); a body is a JSON value
Answer = tuple[int, Any, dict[str, str]]


@dataclass
class ModelStandIn:
    key: str = "model-key"
    mode: str = "sensible"
    stall_seconds: float = 30.0
    retry_after: int = 1
    huge_characters: int = 20_000
    url: str = ""
    requests_received: list[dict[str, Any]] = field(default_factory=list)  # every parsed body, in arrival order
    unparsed: list[str] = field(default_factory=list)  # bodies that were not a JSON object
    count: int = 0  # requests of any kind, refused ones too
    behaviours: list[str] = field(default_factory=list)  # what each request past the checks was given
    hang_ups: int = 0  # answers not sent: the caller had hung up (its timeout) while the stand-in stalled
    tools_called: list[str] = field(default_factory=list)  # the tools its answers called, in order
    queued: deque[str] = field(default_factory=deque)
    # Called with a one-line summary of each answer (no message text): the demo prints it.
    on_answer: Callable[[str], None] | None = None
    closing: threading.Event = field(default_factory=threading.Event)  # set at shutdown: a stall ends early
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        _check_behaviour(self.mode)

    def queue(self, *behaviours: str) -> None:
        """Give the next requests these behaviours, one each (then `mode` again); "ok" is "sensible"."""
        for behaviour in behaviours:
            _check_behaviour(behaviour)
        with self.lock:
            self.queued.extend(ALIASES.get(b, b) for b in behaviours)

    def sent_text(self) -> str:
        """Every message content and tool argument received, then every other field of the bodies, as one
        string; JSON texts (arguments, tool results) also decoded, so a name sent as \\u-escapes is found too."""
        with self.lock:
            bodies, unparsed = list(self.requests_received), list(self.unparsed)
        parts: list[str] = []
        for body in bodies:
            messages = body.get("messages")
            for message in messages if isinstance(messages, list) else [messages]:
                if not isinstance(message, dict):
                    parts.append(json.dumps(message, ensure_ascii=False))
                    continue
                parts.append(_text_of(message.get("content")))
                calls = message.get("tool_calls")
                for call in calls if isinstance(calls, list) else []:
                    arguments = call.get("function", {}).get("arguments") if isinstance(call, dict) else call
                    parts.append(arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False))
                rest = {name: value for name, value in message.items() if name not in ("content", "tool_calls")}
                parts.append(json.dumps(rest, ensure_ascii=False))
            parts.append(json.dumps({k: v for k, v in body.items() if k != "messages"}, ensure_ascii=False))
        parts.extend(unparsed)
        json_texts = [_decoded(part) for part in parts if part.lstrip()[:1] in ("{", "[")]
        decoded = [json.dumps(value, ensure_ascii=False) for value in json_texts if value is not None]
        return "\n".join(parts + decoded)

    # ---- handling ----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, authorization: str | None, raw: bytes) -> Answer:
        """One request, checked in the API's order: path, key, body; then the behaviour it is given."""
        body = _decoded(raw.decode("utf-8", "replace")) if raw else None
        with self.lock:
            self.count += 1
            if isinstance(body, dict):
                self.requests_received.append(body)
            elif raw:
                self.unparsed.append(raw.decode("utf-8", "replace"))
        if method != "POST" or path.split("?")[0].rstrip("/") != "/v1/chat/completions":
            return 404, error_body(f"Invalid URL ({method} {path})", "invalid_request_error"), {}
        refused = self._refusal(authorization, body)
        if refused is not None:
            return refused
        with self.lock:
            behaviour = self.queued.popleft() if self.queued else self.mode
            self.behaviours.append(behaviour)
        return self._play(behaviour, body)

    def _refusal(self, authorization: str | None, body: Any) -> Answer | None:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            message = (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return 401, error_body(message, "invalid_request_error"), {}
        if given.strip() != self.key:
            message = f"Incorrect API key provided: {_masked(given.strip())}."
            return 401, error_body(message, "invalid_request_error", "invalid_api_key"), {}
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request. The body must be a JSON object."
            return 400, error_body(message, "invalid_request_error"), {}
        if not isinstance(body.get("model"), str) or not body["model"]:
            return 400, error_body("you must provide a model parameter", "invalid_request_error"), {}
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            message = "Missing required parameter: 'messages'." if messages is None else "Invalid 'messages'."
            return 400, error_body(message, "invalid_request_error", "invalid_value", "messages"), {}
        if body.get("stream"):
            message = "stream is not supported by this stand-in: send stream false or leave it out."
            return 400, error_body(message, "invalid_request_error", "unsupported_value", "stream"), {}
        return None

    def _play(self, behaviour: str, body: dict[str, Any]) -> Answer:
        if behaviour not in MODES:
            return 500, error_body(f"the stand-in has no mode {behaviour!r}", "server_error"), {}
        if behaviour == "rate_limited":
            message = (
                f"Rate limit reached for {body['model']} on requests per min (RPM): Limit 3, Used 3, "
                f"Requested 1. Please try again in {self.retry_after}s."
            )
            headers = {
                "retry-after": str(self.retry_after),
                "x-ratelimit-limit-requests": "3",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{self.retry_after}s",
            }
            return 429, error_body(message, "requests", "rate_limit_exceeded"), headers
        if behaviour == "server_error":
            message = "The server had an error while processing your request. Sorry about that!"
            return 500, error_body(message, "server_error"), {}
        if behaviour == "garbage":
            return 200, {"choices": []}, {}
        if behaviour == "stall":
            self.closing.wait(self.stall_seconds)
        reply = self._reply(behaviour, read_turn(body))
        with self.lock:
            self.tools_called.extend(call.name for call in reply.calls)
        return 200, completion(body, reply), {}

    def _reply(self, behaviour: str, turn: Turn) -> Reply:
        if behaviour == "malformed_args":
            return Reply(calls=(Call("book", '{"slot": S1'),))
        if behaviour == "unknown_tool":
            return Reply(calls=(Call("delete_all_records", "{}"),))
        if behaviour == "hallucinated_slot":
            return sensible(turn, slot=HALLUCINATED_SLOT)
        if behaviour == "hallucinated_service":
            return sensible(turn, service_id=HALLUCINATED_SERVICE)
        if behaviour == "english":
            return Reply(ENGLISH)
        if behaviour == "huge":
            letters = RUSSIAN_LETTERS * (self.huge_characters // len(RUSSIAN_LETTERS) + 1)
            return Reply(letters[: self.huge_characters], ignore_max_tokens=True)
        if behaviour == "injection":
            return injection(turn)
        if behaviour == "refuse":
            return Reply(REFUSAL)
        return sensible(turn)

    def summary(self, status: int, payload: Any) -> str:
        """One line about an answer, without its text (the demo's log)."""
        if status != 200:
            return f"{status} {payload.get('error', {}).get('type') if isinstance(payload, dict) else ''}"
        choices = payload.get("choices") or [{}]
        message = choices[0].get("message") or {}
        calls = [call["function"]["name"] for call in message.get("tool_calls") or []]
        if calls:
            return f"200 tool calls {', '.join(calls)}"
        return f"200 content ({len(message.get('content') or '')} characters)"


def _check_behaviour(behaviour: str) -> None:
    if ALIASES.get(behaviour, behaviour) not in MODES:
        raise ValueError(f"unknown behaviour {behaviour!r}: one of {', '.join(MODES + tuple(ALIASES))}")


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The `chat.completion` object for a reply, content cut at `max_tokens` as a real server cuts it."""
    content, finish = reply.content, "tool_calls" if reply.calls else "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    limited = isinstance(limit, int) and limit > 0 and not reply.ignore_max_tokens
    if content is not None and limited and _tokens(content) > limit:
        content, finish = content[: limit * 4], "length"
    message: dict[str, Any] = {"role": "assistant", "content": None if reply.calls else content, "refusal": None}
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": _random_id("call_", 24),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in reply.calls
        ]
    written = (message["content"] or "") + "".join(call.name + call.arguments for call in reply.calls)
    prompt = json.dumps(body.get("messages"), ensure_ascii=False) + json.dumps(body.get("tools"), ensure_ascii=False)
    prompt_tokens, completion_tokens = _tokens(prompt), _tokens(written)
    return {
        "id": _random_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _gone(connection: socket.socket) -> bool:
    """Whether the caller has closed its end (a timeout): readable with nothing to read."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def make_handler(state: ModelStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the openai client's connection pool expects
        disable_nagle_algorithm = True

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, payload, headers = state.handle(method, self.path, self.headers.get("Authorization"), raw)
            if state.on_answer is not None:
                state.on_answer(state.summary(status, payload))
            if _gone(self.connection):
                with state.lock:
                    state.hang_ups += 1
                self.close_connection = True
                return
            data = json.dumps(payload, ensure_ascii=False).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the caller gave up meanwhile
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", _random_id("req_", 32))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                return
            self.close_connection = True

        def do_POST(self) -> None:
            self._serve("POST")

        def do_GET(self) -> None:
            self._serve("GET")

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class QuickServer(ThreadingHTTPServer):
    """Stops within 50 ms of `shutdown` (the default loop looks every 0.5 s): many short tests each start one."""

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        super().serve_forever(poll_interval)


@contextmanager
def model_stand_in(port: int = 0, **options: Any) -> Iterator[ModelStandIn]:
    """Serve the stand-in on a local port (a free one by default) for the duration of the block."""
    state = ModelStandIn(**options)
    with serving(QuickServer(("127.0.0.1", port), make_handler(state))) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        try:
            yield state
        finally:
            state.closing.set()  # a stalled answer ends now instead of holding its thread


def main() -> None:
    """Run the stand-in on its own for the demo, printing one line per answer (never the text)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8083)
    parser.add_argument("--key", default="model-key", help="the API key it accepts (Authorization: Bearer …)")
    parser.add_argument("--mode", default="sensible", choices=MODES)
    parser.add_argument("--stall-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with model_stand_in(port=args.port, key=args.key, mode=args.mode, stall_seconds=args.stall_seconds) as state:
        state.on_answer = lambda line: print(line, flush=True)
        print(f"model stand-in on {state.url} (mode {state.mode})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
