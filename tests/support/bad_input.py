"""A corpus of what producers really get wrong, each case with the outcome a client or operator should see.

Every case carries a marker (`c007x`) in its task id, its gateway message id or its raw bytes, so the test
can find exactly where it ended: answered (a stored message with a sent reply) or a dead letter with a reason.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.inbound.payload import TASK_NAME
from tests.support.raw_broker import envelope
from tests.support.seed import COMPANY

Outcome = Literal["answered", "dead"]


@dataclass
class Case:
    name: str
    outcome: Outcome
    kind: Literal["payload", "call", "raw"] = "payload"
    payload: Any = None
    task: str = TASK_NAME
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    raw: Any = None
    marker: str = ""
    chat: str = ""
    needle: str | None = None  # what the dead letter holds when the marker cannot survive (base64)
    sends: int = 1

    @property
    def task_id(self) -> str:
        return f"{self.marker}-task"


def _now(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def build_corpus() -> list[Case]:
    cases: list[Case] = []

    def good(n: int, **over: Any) -> dict[str, Any]:
        base = {
            "company_id": COMPANY,
            "chat_id": f"+7911200{n:04d}",
            "gateway_message_id": f"c{n:03d}x",
            "text": "Привет",
            "sent_at": _now(),
        }
        return {key: value for key, value in (base | over).items() if value is not _DROP}

    def add(name: str, outcome: Outcome, **kw: Any) -> None:
        n = len(cases) + 1
        case = Case(name, outcome, marker=f"c{n:03d}x", chat=f"+7911200{n:04d}", **kw)
        if case.kind == "payload" and callable(case.payload):
            case.payload = case.payload(n)
        if case.kind == "raw" and callable(case.raw):
            case.raw = case.raw(case)
        if callable(case.args):
            case.args = case.args(n)
        cases.append(case)

    def payload(name: str, outcome: Outcome, **over: Any) -> None:
        add(name, outcome, payload=lambda n: good(n, **over))

    # company_id: a JSON integer of a served salon, nothing else
    for value, label in [
        (True, "true"),
        (False, "false"),
        (str(COMPANY), "a digit string"),
        (float(COMPANY), "a float"),
        (2**63, "2^63"),
        (10**30, "10^30"),
        (-5, "negative"),
        (0, "zero"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (None, "null"),
        ([COMPANY], "a list"),
        (999_999, "a salon the fleet does not serve"),
    ]:
        payload(f"company_id {label}", "dead", company_id=value)
    payload("company_id missing", "dead", company_id=_DROP)
    # chat_id: a phone or a phone JID
    for value, label in [
        (_DROP, "missing"),
        ("", "empty"),
        ("12", "too short"),
        ("79991234567-1600000000@g.us", "a group JID"),
        ("123456789012345@lid", "a LID"),
        ("status@broadcast", "the status broadcast"),
        ("79991234567@example.org", "an unknown server"),
        ("+7911\x001234567", "with a NUL"),
        (True, "true"),
        (79111234567.0, "a float"),
        (10**30, "a huge integer"),
        ({"phone": "+79111234567"}, "an object"),
        ("7" * 10_000, "10,000 characters"),
    ]:
        payload(f"chat_id {label}", "dead", chat_id=value)
    add("chat_id as a c.us JID", "answered", payload=lambda n: good(n, chat_id=f"7911200{n:04d}@c.us"))
    add(
        "chat_id as a Baileys JID with a device",
        "answered",
        payload=lambda n: good(n, chat_id=f"7911200{n:04d}:12@s.whatsapp.net"),
    )
    add("chat_id as an integer", "answered", payload=lambda n: good(n, chat_id=int(f"7911200{n:04d}")))
    # gateway_message_id
    for value, label in [
        (_DROP, "missing"),
        ("", "empty"),
        ("x" * 201, "201 characters"),
        ("id\x00", "with a NUL"),
        ("id\ud800", "with a lone surrogate"),
        ("id\nnext", "with a newline"),
        (True, "true"),
        (["a"], "a list"),
    ]:
        payload(f"gateway_message_id {label}", "dead", gateway_message_id=value)
    add("gateway_message_id an integer", "answered", payload=lambda n: good(n, gateway_message_id=9_000_000 + n))
    # text
    payload("text a number", "dead", text=5)
    payload("text an object", "dead", text={"body": "hi"})
    payload("text too long", "dead", text="я" * 16_385)
    payload("text 5 MB", "dead", text="a" * 5_000_000)
    payload("no text and no media", "dead", text="")
    payload("only whitespace", "dead", text="   \n\t ")
    payload("text with a NUL", "answered", text="При\x00вет")
    payload("text with a lone surrogate", "answered", text="Привет \ud83d")
    payload("text with emoji, RTL and zero-width marks", "answered", text="Привет 👋🏽 \u202eabc\u200b")
    payload("text null with media", "answered", text=None, media={"type": "image"})
    # sent_at: an ISO 8601 string with an offset; outside the window it is replaced by the receive time
    for value, label in [
        (_DROP, "missing"),
        (1764400000, "unix seconds"),
        ("yesterday", "words"),
        ("2026-11-29T10:00:00", "without an offset"),
        ("2026-11-29T10:00:00\x00+03:00", "with a NUL"),
        ("2" * 10_000, "10,000 characters"),
        (None, "null"),
    ]:
        payload(f"sent_at {label}", "dead", sent_at=value)
    payload("sent_at in year 9999", "answered", sent_at="9999-12-31T23:59:59+00:00")
    payload("sent_at in year 1", "answered", sent_at="0001-01-01T00:00:00+00:00")
    payload("sent_at three days ago", "answered", sent_at=_now(days=-3))
    payload("sent_at an hour ahead", "answered", sent_at=_now(hours=1))
    # media
    payload("media of an unknown type", "dead", media={"type": "gif"})
    payload("media with an unknown key", "dead", media={"type": "image", "url": "http://x"})
    payload("media a string", "dead", media="image")
    payload("media description with a NUL", "answered", text="", media={"type": "image", "description": "фото\x00"})
    # the payload as a whole
    payload("an extra field", "dead", priority=1)
    payload("NaN in an extra field", "dead", score=float("nan"))
    payload("a NUL in a key", "dead", **{"te\x00xt": "hi"})
    payload("a lone surrogate in a key", "dead", **{"te\udc00xt": "hi"})
    add("a payload nested 300 levels deep", "dead", payload=lambda n: good(n) | {"extra": _nested(300)})
    add("the payload a string", "dead", payload="not an object")
    add("the payload a list", "dead", payload=[1, 2, 3])
    add("no payload at all", "dead", kind="call", kwargs={})
    add("an unexpected keyword argument", "dead", kind="call", kwargs={"payload": None, "priority_boost": True})
    add("two positional arguments", "dead", kind="call", args=[{}, {}])
    add("the payload as the positional argument", "answered", kind="call", args=lambda n: [good(n)])
    # the same gateway id twice
    add("a re-delivery with the same content", "answered", payload=lambda n: good(n), sends=2)
    add("a repeat of the id with other content", "dead", payload=lambda n: good(n - 1, text="Другой текст"))
    # internal tasks called by a producer with the wrong arguments
    add("drain_chat with a text company", "dead", kind="call", task="workers.inbound.drain_chat", args=["x", "+7"])
    add("drain_chat with no arguments", "dead", kind="call", task="workers.inbound.drain_chat")
    add("deliver_reply with a negative id", "dead", kind="call", task="workers.inbound.deliver_reply", args=[-1])
    # tasks of other worker types and Celery's canvas built-ins
    add("the restore drill on the inbound queue", "dead", kind="call", task="workers.backups.drill")
    add("a sync on the inbound queue", "dead", kind="call", task="workers.yclients.sync_all")
    add("celery.map", "dead", kind="call", task="celery.map", args=["workers.inbound.sweep", [[]]])
    add("celery.chunks", "dead", kind="call", task="celery.chunks", args=["workers.inbound.sweep", [[]], 1])
    add("an unknown task name", "dead", kind="call", task="workers.inbound.nope")
    # Celery options a producer should not set
    add(
        "an eta a year ahead",
        "dead",
        payload=lambda n: good(n),
        options={"eta": datetime.now(UTC) + timedelta(days=365)},
    )
    add("expired before it arrived", "dead", payload=lambda n: good(n), options={"expires": _now(hours=-1)})
    # raw broker messages, as a producer in another language (or a bug) writes them
    add("raw: not JSON", "dead", kind="raw", raw=lambda c: f"hello {c.marker}")
    add(
        "raw: not UTF-8",
        "dead",
        kind="raw",
        raw=lambda c: b"\xff\xfe" + c.marker.encode(),
    )
    add("raw: a JSON array", "dead", kind="raw", raw=lambda c: f'[{len(c.marker)}, "{c.marker}"]')
    add("raw: JSON without properties", "dead", kind="raw", raw=lambda c: {"body": c.marker})
    add("raw: JSON nested 100,000 levels", "dead", kind="raw", raw=lambda c: f'["{c.marker}", ' + "[" * 100_000)
    add("raw: a task header that is a number", "dead", kind="raw", raw=lambda c: _env(c, headers={"task": 42}))
    add("raw: headers that are a string", "dead", kind="raw", raw=lambda c: _env(c) | {"headers": c.marker})
    add("raw: no task id", "dead", kind="raw", raw=lambda c: _env(c, headers={"id": None}))
    add("raw: an eta that is not a time", "dead", kind="raw", raw=lambda c: _env(c, headers={"eta": "soon"}))
    add(
        "raw: a time limit of a year",
        "dead",
        kind="raw",
        raw=lambda c: _env(c, headers={"timelimit": [365 * 86400, None]}),
    )
    add("raw: 2 MB in one queue entry", "dead", kind="raw", raw=lambda c: f"{c.marker} " + "x" * 2_000_000)
    add(
        "raw: an integer of 100,000 digits in the envelope",
        "dead",
        kind="raw",
        raw=lambda c: f'{{"marker": "{c.marker}", "n": {"9" * 100_000}}}',
    )
    add(
        "raw: an integer of 100,000 digits in the payload",
        "dead",
        kind="raw",
        raw=lambda c: _env(c, body=_b64(f'[[], {{"payload": {{"company_id": {"9" * 100_000}}}}}, {{}}]')),
    )
    add("raw: a body that is not JSON", "dead", kind="raw", raw=lambda c: _env(c, body=_b64(f"not json {c.marker}")))
    add("raw: a body of the wrong shape", "dead", kind="raw", raw=lambda c: _env(c, body=_b64('{"a": 1}')))
    add("raw: kwargs that are a list", "dead", kind="raw", raw=lambda c: _env(c, body=_b64("[[], [1], {}]")))
    add(
        "raw: pickle content",
        "dead",
        kind="raw",
        raw=lambda c: _env(c, content_type="application/x-python-serialize", body=_b64("cos\nsystem\n")),
    )
    add(
        "raw: a body in an unknown encoding",
        "dead",
        kind="raw",
        raw=lambda c: _env(c, properties={"body_encoding": "rot13"}),
    )
    for case in cases:
        if case.kind == "raw" and isinstance(case.raw, bytes):
            case.needle = base64.b64encode(case.raw).decode()
    return cases


class _Drop:
    def __repr__(self) -> str:
        return "<drop>"


_DROP: Any = _Drop()


def _nested(levels: int) -> Any:
    value: Any = "deep"
    for _ in range(levels):
        value = [value]
    return value


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _env(case: Case, **kw: Any) -> dict[str, Any]:
    return envelope(TASK_NAME, [], {"payload": case.marker}, queue="inbound", task_id=case.task_id, **kw)


def raw_bytes(case: Case) -> bytes | str:
    return case.raw if isinstance(case.raw, bytes | str) else json.dumps(case.raw)
