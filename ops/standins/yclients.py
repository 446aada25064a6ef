"""A local YClients API stand-in that speaks the real wire format, serving a generated salon.

Envelope `{success, data, meta}`, the documented headers and token check, pages with `total_count`,
numbers sent as strings, phones as numbers, three date formats, both rate-limit answers (HTTP 429 and
HTTP 200 with success:false), and injected 5xx on request.

It keeps a calendar: records created (`POST /records/{company}`), moved (`PUT /record/{company}/{id}`) and
deleted (`DELETE /record/{company}/{id}`) through the API appear in its answers; a create over a busy staff
time is refused as YClients does (422, code 433) unless `save_if_busy`; `stall_after_commit` makes the next
creates commit and then answer too late for the caller (the unknown outcome a retry must not duplicate);
`fail_after_commit` makes them commit and answer 500; `create_answers_as_list` answers a create as the public
booking endpoint does (`[{id, record_id, record_hash}]`); `updates_ignored` answers the next updates with
success and the record unchanged; an update (`PUT`) replaces the record with what it is
sent, as YClients does (a comment, a client name or a service's price left out is lost);
`book_in_widget` books as the salon's own online widget would; every change is sent to `webhook_url`.
Hostile listings and answers, for the read side's tests: `ignore_page` makes the records and clients lists
answer page 1's rows whatever `page` asks; `inflate_total_count` adds that many to their `total_count` (more
than the pages hold); `drip_answers` makes the next answers to `drip_methods` (GET by default) send their body
`drip_bytes` at a time, `drip_seconds` apart (status and headers at once, as a slow proxy or server does).
Tests drive it in-process; the demo runs it with

    python -m ops.standins.yclients --port 8081 --company 962302 --clients 5000 --records 3000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from ops.standins.serving import serving

ACCEPT = "application/vnd.yclients.v2+json"
LIMIT_MESSAGE = "Превышен лимит запросов"
MOSCOW = ZoneInfo("Europe/Moscow")
MOBILE_PREFIXES = [901, 903, 905, 911, 915, 916, 921, 925, 926, 977, 985, 999]
FIRST_NAMES = ["Анна", "Мария", "Елена", "Ольга", "Ирина", "Наталья", "Светлана", "Татьяна", "Юлия", "Дарья"]
LAST_NAMES = ["Иванова", "Смирнова", "Кузнецова", "Попова", "Соколова", "Лебедева", "Козлова", "Новикова"]
SERVICES = [
    ("Стрижки", ["Женская стрижка", "Мужская стрижка", "Детская стрижка", "Укладка"]),
    ("Окрашивание", ["Окрашивание в один тон", "Мелирование", "Тонирование"]),
    ("Маникюр", ["Маникюр классический", "Маникюр с покрытием", "Снятие покрытия"]),
    ("Педикюр", ["Педикюр", "Педикюр с покрытием"]),
    ("Брови и ресницы", ["Коррекция бровей", "Окрашивание ресниц"]),
]


# (status, body) or (status, body, headers); a body of bytes is sent as it is (an HTML page from a proxy, say).
Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Override = Callable[[str, str, dict[str, list[str]], dict[str, Any]], Answer | None]


def _format_datetime(moment: datetime, style: int) -> str:
    """The three formats the API has been seen to send."""
    local = moment.astimezone(MOSCOW)
    if style == 0:
        return local.isoformat(timespec="seconds")  # 2019-01-16T16:00:00+03:00
    if style == 1:
        return local.strftime("%Y-%m-%dT%H:%M:%S%z")  # 2019-01-16T20:35:11+0300
    return local.strftime("%Y-%m-%d %H:%M:%S")  # 2019-01-16 16:00:00 (salon time)


def _maybe_string(value: Any, n: int) -> Any:
    return str(value) if n % 2 else value


@dataclass
class Salon:
    """A generated salon; tests may edit the dicts to change what the API returns."""

    company: dict[str, Any]
    categories: list[dict[str, Any]]
    services: list[dict[str, Any]]
    staff: list[dict[str, Any]]
    clients: dict[int, dict[str, Any]]
    records: dict[int, dict[str, Any]]
    today: date

    @property
    def id(self) -> int:
        return int(self.company["id"])


def generate_salon(
    company_id: int = 962302, clients: int = 500, records: int = 300, seed: int = 7, today: date | None = None
) -> Salon:
    rng = random.Random(seed)
    today = today or datetime.now(MOSCOW).date()
    company = {
        "id": company_id,
        "title": "Салон «Лиса»",
        "city": "Москва",
        "timezone_name": "Europe/Moscow",
        "address": "ул. Пушкина, 10",
        "phone": "+74950000000",
        "active": 1,
    }
    categories, services = [], []
    service_id = 1000
    for position, (title, names) in enumerate(SERVICES, 1):
        category_id = 100 + position
        categories.append({"id": category_id, "title": title, "api_id": "", "weight": position, "staff": []})
        for name in names:
            service_id += 1
            low = rng.choice([900, 1300, 1500, 2000, 2500])
            services.append(
                {
                    "id": _maybe_string(service_id, service_id),
                    "title": name,
                    "category_id": category_id,
                    "price_min": f"{low}.00",
                    "price_max": f"{low + rng.choice([0, 500, 1000])}.00",
                    "discount": 0,
                    "comment": "",
                    "weight": 0,
                    "active": "1" if service_id % 7 else 1,
                    "staff": [{"id": 1 + (service_id % 8), "seance_length": rng.choice([1800, 3600, 5400])}],
                }
            )
    staff = [
        {
            "id": _maybe_string(n, n),
            "name": f"{FIRST_NAMES[n % 10]} {LAST_NAMES[n % 8]}",
            "company_id": company_id,
            "specialization": "мастер",
            "position": {"id": 1, "title": "Мастер"},
            "avatar": "",
            "fired": 0,
            "hidden": "0",
            "status": 0,
            "services_links": [{"service_id": int(s["id"])} for s in services if int(s["id"]) % 8 == n % 8],
        }
        for n in range(1, 9)
    ]
    client_rows: dict[int, dict[str, Any]] = {}
    for n in range(1, clients + 1):
        client_id = 5_000_000 + n
        digits = f"7{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**7):07d}"
        phone: Any = [int(digits), f"+7 ({digits[1:4]}) {digits[4:7]}-{digits[7:9]}-{digits[9:]}", "8" + digits[1:]][
            n % 3
        ]
        first = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(700), hours=rng.randrange(9, 20))
        client_rows[client_id] = {
            "id": _maybe_string(client_id, n),
            "name": f"{FIRST_NAMES[n % 10]} {LAST_NAMES[(n // 10) % 8]}",
            "phone": phone,
            "email": f"client{n}@example.ru" if n % 4 == 0 else "",
            "discount": rng.choice([0, 5, 10]),
            "first_visit_date": _format_datetime(first, n % 3),
            "last_visit_date": _format_datetime(first + timedelta(days=rng.randrange(200)), (n + 1) % 3),
            "sold_amount": f"{rng.randrange(0, 50000)}.00",
            "visits_count": _maybe_string(rng.randrange(30), n),
        }
    record_rows: dict[int, dict[str, Any]] = {}
    slot_hours = list(range(10, 20))
    client_ids = list(client_rows)
    changed = datetime.now(UTC) - timedelta(days=2)
    for n in range(records):
        staff_member = staff[n % 8]
        per_staff = n // 8
        day = today - timedelta(days=20) + timedelta(days=per_staff // len(slot_hours))
        hour = slot_hours[per_staff % len(slot_hours)]
        start = datetime(day.year, day.month, day.day, hour, tzinfo=MOSCOW)
        service = services[n % len(services)]
        client_id = client_ids[n % len(client_ids)] if client_ids else None
        record_id = 9_000_000 + n
        record_rows[record_id] = {
            "id": _maybe_string(record_id, n),
            "company_id": company_id,
            "staff_id": staff_member["id"],
            "services": [{"id": service["id"], "title": service["title"], "cost": service["price_min"]}],
            "client": (
                {"id": client_id, "name": client_rows[client_id]["name"], "phone": client_rows[client_id]["phone"]}
                if client_id
                else None
            ),
            "datetime": _format_datetime(start, n % 3),
            "seance_length": _maybe_string(3600, n),
            "deleted": n % 50 == 49,
            "attendance": [2, 1, 0, -1][n % 4] if day < today else 0,
            "last_change_date": _format_datetime(changed, 0),
            "comment": "",
            "api_id": "",
        }
    return Salon(company, categories, services, staff, client_rows, record_rows, today)


@dataclass
class YClientsStandIn:
    salons: dict[int, Salon]
    partner_token: str = "partner-token"
    user_token: str = "user-token"
    per_second: int = 5
    per_minute: int = 200
    max_page_size: int = 200
    url: str = ""
    requests: list[tuple[float, str, int]] = field(default_factory=list)  # (time, path, status)
    injected: deque[Any] = field(default_factory=deque)
    # Called with (method, path, query, body) before routing; an answer it returns is sent instead.
    override: Override | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _limited: int = 0
    # The calendar's behaviour, set by tests: creates that commit, then answer after `stall_seconds`.
    stall_after_commit: int = 0
    stall_seconds: float = 3.0
    # Creates that commit (and send their webhook), then answer 500.
    fail_after_commit: int = 0
    # Creates answered as the public booking endpoint answers: a list of {id, record_id, record_hash}.
    create_answers_as_list: bool = False
    # The next updates answered 200 with the record as it was, the change not made.
    updates_ignored: int = 0
    # A taken time refused as 200 with `success: false` and a Russian message (no status, no code) instead of 422.
    slot_taken_as_success_false: bool = False
    # Listings (records, clients) that answer page 1's rows whatever `page` asks (the server ignores it).
    ignore_page: bool = False
    # Added to the listings' `total_count`: a count above what the pages hold (they go empty first).
    inflate_total_count: int = 0
    # The next `drip_answers` answers to `drip_methods` send their body `drip_bytes` at a time, `drip_seconds` apart.
    drip_answers: int = 0
    drip_seconds: float = 0.0
    drip_bytes: int = 16
    drip_methods: tuple[str, ...] = ("GET",)
    webhook_url: str | None = None
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    # Record ids are never reused in YClients: a restarted stand-in continues past every id it could have issued
    # before (the fleet's database outlives it), counting from the clock, above the generated records' ids.
    _next_record_id: int = field(default_factory=lambda: 9_500_000 + int(time.time() * 10) % 10**10)

    def inject(self, *answers: Any) -> None:
        """Answer the next requests with these: an HTTP status (503, 429) or "limit" (200 + success:false)."""
        with self.lock:
            self.injected.extend(answers)

    def max_in_window(self, seconds: float, *, accepted_only: bool = True) -> int:
        """The most requests that arrived within any window of this length."""
        with self.lock:
            times = [t for t, _, status in self.requests if not accepted_only or status == 200]
        best, start = 0, 0
        for end in range(len(times)):
            while times[end] - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def count(self, status: int | None = None) -> int:
        with self.lock:
            return sum(1 for _, _, s in self.requests if status is None or s == status)

    # ---- handling -------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: dict[str, Any] | None
    ) -> Answer:
        now = time.time()
        with self.lock:
            recent = [t for t, _, s in self.requests if s == 200]
            over = (
                sum(1 for t in recent if now - t < 1.0) >= self.per_second
                or sum(1 for t in recent if now - t < 60.0) >= self.per_minute
            )
            injected = self.injected.popleft() if self.injected and not over else None
            if over:
                self._limited += 1
        if over:
            return (429, _error("Too Many Requests")) if self._limited % 2 else (200, _error(LIMIT_MESSAGE))
        if injected == "limit":
            return 200, _error(LIMIT_MESSAGE)
        if isinstance(injected, int):
            return injected, _error(f"injected {injected}")
        if self.override is not None:
            answer = self.override(method, path, query, body or {})
            if answer is not None:
                return answer
        if headers.get("Accept") != ACCEPT:
            return 400, _error("Accept header must be " + ACCEPT)
        if headers.get("Authorization") != f"Bearer {self.partner_token}, User {self.user_token}":
            return 401, {
                "errors": {"code": 401, "message": "Необходима авторизация"},
                "meta": {"message": "Необходима авторизация"},
            }
        return self._route(method, path.strip("/").split("/"), query, body or {})

    def _route(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if len(parts) >= 2 and parts[0] in ("company", "records", "record", "client"):
            salon = self.salons.get(int(parts[1])) if parts[1].isdigit() else None
            if salon is None:
                return 404, _error("Компания не найдена")
        else:
            return 404, _error("Not found")
        tail = parts[2:]
        if parts[0] == "records" and method == "GET" and not tail:
            return self._records(salon, query)
        if parts[0] == "records" and method == "POST" and not tail:
            return self._create_record(salon, body)
        if parts[0] == "record" and len(tail) == 1 and tail[0].isdigit():
            return self._one_record(salon, method, int(tail[0]), body)
        if parts[0] == "record":
            return 404, _error("Not found")
        if parts[0] == "client" and method == "GET" and len(tail) == 1 and tail[0].isdigit():
            row = salon.clients.get(int(tail[0]))
            return (200, _ok(dict(row))) if row is not None else (404, _error("Клиент не найден"))
        if parts[0] == "client":
            return 404, _error("Not found")
        if method == "GET" and not tail:
            return 200, _ok(salon.company)
        if method == "GET" and tail == ["service_categories"]:
            return 200, _ok(salon.categories, {"total_count": len(salon.categories)})
        if method == "GET" and tail == ["services"]:
            return 200, _ok(salon.services, {"total_count": len(salon.services)})
        if method == "GET" and tail == ["staff"]:
            return 200, _ok(salon.staff, [])
        if method == "GET" and tail == ["staff", "schedule"]:
            return self._schedule(salon, query)
        if method == "POST" and tail == ["clients", "search"]:
            return self._clients(salon, body)
        return 404, _error("Not found")

    def _clients(self, salon: Salon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        page, size = int(body.get("page", 1)), int(body.get("page_size", 25))
        if size > self.max_page_size:
            return 400, _error(f"page_size must not exceed {self.max_page_size}")
        fields = body.get("fields") or ["id"]
        rows = list(salon.clients.values())
        page = 1 if self.ignore_page else page
        chunk = rows[(page - 1) * size : page * size]
        total = len(rows) + self.inflate_total_count
        return 200, _ok([{k: row.get(k) for k in fields} for row in chunk], {"total_count": total})

    def _records(self, salon: Salon, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        page = int(query.get("page", ["1"])[0])
        size = int(query.get("count", ["50"])[0])
        if size > self.max_page_size:
            return 400, _error(f"count must not exceed {self.max_page_size}")
        start = query.get("start_date", [None])[0]
        end = query.get("end_date", [None])[0]
        changed_after = query.get("changed_after", [None])[0]
        with_deleted = query.get("with_deleted", ["0"])[0] == "1"
        staff_id = query.get("staff_id", [None])[0]
        rows = []
        for row in salon.records.values():
            day = _parse_any(row["datetime"]).date().isoformat()
            if (start and day < start) or (end and day > end) or (row["deleted"] and not with_deleted):
                continue
            if staff_id is not None and str(row["staff_id"]) != staff_id:
                continue
            if changed_after and _parse_any(row["last_change_date"]) <= _parse_any(changed_after):
                continue
            rows.append(row)
        page = 1 if self.ignore_page else page
        chunk = rows[(page - 1) * size : page * size]
        return 200, _ok(chunk, {"page": page, "total_count": len(rows) + self.inflate_total_count})

    # ---- the calendar ---------------------------------------------------------------------------
    def _busy(self, salon: Salon, staff_id: int, start: datetime, seconds: int, except_id: int | None) -> bool:
        end = start + timedelta(seconds=seconds)
        for record_id, row in salon.records.items():
            if row["deleted"] or record_id == except_id or int(row["staff_id"]) != staff_id:
                continue
            other = _parse_any(row["datetime"])
            if other < end and start < other + timedelta(seconds=int(row["seance_length"])):
                return True
        return False

    def _write(
        self, salon: Salon, body: dict[str, Any], record_id: int | None
    ) -> tuple[int, dict[str, Any]] | dict[str, Any]:
        """The record a create or update asks for, or the refusal YClients answers with."""
        try:
            staff_id = int(body["staff_id"])
            start = _parse_any(str(body["datetime"]))
            seconds = int(body.get("seance_length") or 3600)
            services = [
                {"id": int(item["id"]), **{k: item[k] for k in ("cost", "discount") if k in item}}
                for item in body.get("services") or []
            ]
        except (KeyError, TypeError, ValueError):
            return 422, _error("staff_id, datetime and services are required")
        if staff_id not in {int(member["id"]) for member in salon.staff}:
            return 422, _error("Сотрудник не найден")
        if not body.get("save_if_busy") and self._busy(salon, staff_id, start, seconds, record_id):
            if self.slot_taken_as_success_false:  # the other form YClients answers in: 200, success false, words only
                return 200, {"success": False, "data": None, "meta": {"message": "время уже занято"}}
            return 422, {"success": False, "data": None, "meta": {"message": "Выбранное время уже занято", "code": 433}}
        titles = {int(item["id"]): item for item in salon.services}
        return {
            "staff_id": staff_id,
            "services": [{**_priced(s["id"], titles), **s} for s in services],
            "datetime": start.astimezone(MOSCOW).isoformat(),
            "seance_length": seconds,
        }

    def _client_for(self, salon: Salon, person: Any) -> dict[str, Any] | None:
        if not isinstance(person, dict) or not person.get("phone"):
            return None
        digits = "".join(ch for ch in str(person["phone"]) if ch.isdigit())
        for client in salon.clients.values():
            if "".join(ch for ch in str(client["phone"]) if ch.isdigit())[-10:] == digits[-10:]:
                return {"id": client["id"], "name": client["name"], "phone": client["phone"]}
        client_id = 5_000_000 + len(salon.clients) + 1
        salon.clients[client_id] = {"id": client_id, "name": person.get("name") or "", "phone": digits, "email": ""}
        return {"id": client_id, "name": salon.clients[client_id]["name"], "phone": digits}

    def _create_record(self, salon: Salon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            written = self._write(salon, body, None)
            if isinstance(written, tuple):
                return written
            self._next_record_id += 1
            record_id = self._next_record_id
            salon.records[record_id] = {
                "id": record_id,
                "company_id": salon.id,
                **written,
                "client": self._client_for(salon, body.get("client")),
                "api_id": str(body.get("api_id") or ""),
                "deleted": False,
                "attendance": 0,
                "comment": str(body.get("comment") or ""),
                "last_change_date": datetime.now(MOSCOW).isoformat(timespec="seconds"),
            }
            record = dict(salon.records[record_id])
            stall = self.stall_after_commit > 0
            if stall:
                self.stall_after_commit -= 1
            fail = self.fail_after_commit > 0
            if fail:
                self.fail_after_commit -= 1
        self._notify(salon, "record", record_id, "create", record)
        if stall:
            time.sleep(self.stall_seconds)  # committed, but the caller gives up before the answer
        if fail:
            return 500, _error("Внутренняя ошибка сервера")  # committed, and the answer says it failed
        if self.create_answers_as_list:
            return 201, _ok([{"id": 1, "record_id": record_id, "record_hash": f"{record_id:x}"}])
        return 201, _ok(record)

    def _one_record(
        self, salon: Salon, method: str, record_id: int, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            row = salon.records.get(record_id)
            if row is None or row["deleted"]:
                return 404, _error("Запись не найдена")
            if method == "GET":
                return 200, _ok(dict(row))
            if method == "PUT":
                written = self._write(salon, body, record_id)
                if isinstance(written, tuple):
                    return written
                if self.updates_ignored > 0:  # answered as a success, the record as it was
                    self.updates_ignored -= 1
                    return 200, _ok(dict(row))
                # YClients replaces the record with what it is sent: a field sent empty is emptied.
                row.update(written)
                row["comment"] = str(body.get("comment") or "")
                if isinstance(body.get("client"), dict):
                    row["client"] = {**(row.get("client") or {}), "name": str(body["client"].get("name") or "")}
                row["attendance"] = (
                    int(body["attendance"]) if str(body.get("attendance", "")).lstrip("-").isdigit() else 0
                )
                action = "update"
            elif method == "DELETE":
                row["deleted"] = True
                action = "delete"
            else:
                return 405, _error("Method not allowed")
            row["last_change_date"] = datetime.now(MOSCOW).isoformat(timespec="seconds")
            record = dict(row)
        self._notify(salon, "record", record_id, action, record)
        if method == "DELETE":
            return 204, b""
        return 200, _ok(record)

    def book_in_widget(
        self, company_id: int, staff_id: int, starts_at: datetime, service_id: int, phone: str, name: str = "Клиент"
    ) -> int | None:
        """Book as the salon's online widget does (no API token); None when the time is taken."""
        salon = self.salons[company_id]
        status, answer = self._create_record(
            salon,
            {
                "staff_id": staff_id,
                "datetime": starts_at.isoformat(),
                "seance_length": 3600,
                "services": [{"id": service_id}],
                "client": {"phone": phone, "name": name},
            },
        )
        if status != 201:
            return None
        data = answer["data"]
        return int(data[0]["record_id"] if isinstance(data, list) else data["id"])

    def client_changed(self, company_id: int, client_id: int, **fields: Any) -> None:
        """Change a client as an administrator does in YClients (a webhook follows, when configured)."""
        salon = self.salons[company_id]
        with self.lock:
            salon.clients[client_id].update(fields)
            row = dict(salon.clients[client_id])
        self._notify(salon, "client", client_id, "update", row)

    def cancel_in_widget(self, company_id: int, record_id: int) -> None:
        """Delete a record as an administrator does in YClients (a webhook follows, when configured)."""
        salon = self.salons[company_id]
        with self.lock:
            salon.records[record_id]["deleted"] = True
            salon.records[record_id]["last_change_date"] = datetime.now(MOSCOW).isoformat(timespec="seconds")
            record = dict(salon.records[record_id])
        self._notify(salon, "record", record_id, "delete", record)

    def calendar(self, company_id: int, *, api_id: str | None = None) -> list[dict[str, Any]]:
        """The live records of a salon (those with `api_id` only, if given)."""
        with self.lock:
            rows = [dict(row) for row in self.salons[company_id].records.values() if not row["deleted"]]
        return [row for row in rows if api_id is None or row.get("api_id") == api_id]

    def _notify(self, salon: Salon, resource: str, resource_id: int, status: str, data: dict[str, Any]) -> None:
        """Send the change to the webhook URL, as YClients does, from a thread of its own."""
        if not self.webhook_url:
            return
        event = {
            "company_id": salon.id,
            "resource": resource,
            "resource_id": resource_id,
            "status": status,
            "data": data,
        }
        self.webhooks_sent.append(event)
        threading.Thread(target=_post_webhook, args=(self.webhook_url, event), daemon=True).start()

    def _schedule(self, salon: Salon, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        first = date.fromisoformat(query["start_date"][0])
        last = date.fromisoformat(query["end_date"][0])
        wanted = {int(v) for v in query.get("staff_ids[]", [])} or {int(s["id"]) for s in salon.staff}
        rows = []
        day = first
        while day <= last:
            for member in salon.staff:
                staff_id = int(member["id"])
                if staff_id not in wanted:
                    continue
                off = (day.toordinal() + staff_id) % 7 == 0
                rows.append(
                    {
                        "staff_id": staff_id,
                        "date": day.isoformat(),
                        "slots": [] if off else [{"from": "10:00", "to": "14:00"}, {"from": "15:00", "to": "20:00"}],
                        "busy_intervals": [],
                        "off_day_type": 1 if off else None,
                    }
                )
            day += timedelta(days=1)
        return 200, _ok(rows, {"total_count": len(rows)})


def _post_webhook(url: str, event: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310  (a local URL set by the test or demo)
        url, json.dumps(event, ensure_ascii=False).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    # YClients does not retry a failed webhook either; polling is the safety net.
    with contextlib.suppress(OSError):
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310  (a local URL set by the test or demo)


def _priced(service_id: int, services: dict[int, dict[str, Any]]) -> dict[str, Any]:
    service = services.get(service_id, {})
    return {"id": service_id, "title": service.get("title", ""), "cost": service.get("price_min", "0")}


def _ok(data: Any, meta: Any = None) -> dict[str, Any]:
    return {"success": True, "data": data, "meta": meta if meta is not None else []}


def _error(message: str) -> dict[str, Any]:
    return {"success": False, "data": None, "meta": {"message": message}}


def _parse_any(text: str) -> datetime:
    text = text.strip()
    if len(text) == 19 and text[10] in " T" and "+" not in text[10:]:
        return datetime.fromisoformat(text.replace(" ", "T")).replace(tzinfo=MOSCOW)
    if text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    return datetime.fromisoformat(text)


def make_handler(state: YClientsStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = split.path.removeprefix("/api/v1")
            answer = state.handle(method, path, parse_qs(split.query), self.headers, body)
            status, payload = answer[0], answer[1]
            extra_headers: dict[str, str] = dict(answer[2]) if len(answer) > 2 else {}  # type: ignore[misc]
            accepted = status in (201, 204) or (
                status == 200 and isinstance(payload, dict) and payload.get("success", True) is not False
            )
            with state.lock:
                state.requests.append((time.time(), path, 200 if accepted else (status if status != 200 else 299)))
            if isinstance(payload, bytes):
                encoded, content_type = payload, "text/html; charset=utf-8"
            else:
                encoded, content_type = (
                    # A lone surrogate goes out as its JSON escape (\ud800), as an API that emits one sends it.
                    json.dumps(payload, ensure_ascii=False).encode("utf-8", "backslashreplace"),
                    "application/json; charset=utf-8",
                )
            self.send_response(status)
            self.send_header("Content-Type", extra_headers.pop("Content-Type", content_type))
            self.send_header("Content-Length", str(len(encoded)))
            for name, value in extra_headers.items():
                self.send_header(name, value)
            self.end_headers()
            with state.lock:  # this answer's body dripped (seconds between chunks), or sent at once (0)
                drip = state.drip_seconds if state.drip_answers > 0 and method in state.drip_methods else 0.0
                if drip:
                    state.drip_answers -= 1
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the caller gave up (a timeout)
                if not drip:
                    self.wfile.write(encoded)
                    return
                step = max(state.drip_bytes, 1)
                for start in range(0, len(encoded), step):  # a few bytes, a pause: every read timeout is met
                    if start:
                        time.sleep(drip)
                    self.wfile.write(encoded[start : start + step])
                    self.wfile.flush()

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def yclients_stand_in(*salons: Salon, port: int = 0, **options: Any) -> Iterator[YClientsStandIn]:
    """Serve the salons on a local port (a free one by default) for the duration of the block."""
    state = YClientsStandIn({salon.id: salon for salon in salons}, **options)
    with serving(make_handler(state), port) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
        yield state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--company", type=int, action="append", help="company id (repeat for several)")
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--partner-token", default="partner-token")
    parser.add_argument("--user-token", default="user-token")
    parser.add_argument("--webhook-url", help="where to send a webhook for every change of a record")
    args = parser.parse_args()
    salons = [generate_salon(c, args.clients, args.records, seed=c) for c in args.company or [962302]]
    state = YClientsStandIn({s.id: s for s in salons}, args.partner_token, args.user_token)
    state.webhook_url = args.webhook_url
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    print(
        f"YClients stand-in on http://127.0.0.1:{args.port}/api/v1 for companies {[s.id for s in salons]}", flush=True
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
