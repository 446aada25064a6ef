"""The YClients REST client: documented headers, fleet-wide rate limit, retries, paging by total_count."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import redis
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.core.failure import FleetError
from shared.core.refused_writes import refusal_cause
from shared.core.settings import Settings, YClientsSettings
from shared.yclients.ratelimit import FleetRateLimiter

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.yclients.v2+json"
MAX_RETRY_AFTER_SECONDS = 300.0  # a longer ask is a misconfigured proxy: wait this long, then try again
LIMIT_MESSAGES = ("превышен лимит", "limit exceeded", "too many requests")


class YClientsError(FleetError):
    """The API refused or failed; `retryable` says whether another try can help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RateLimitedError(YClientsError):
    """HTTP 429, or HTTP 200 with success:false and a "limit exceeded" message."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, status=status, retryable=True)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` in either form the RFC allows (seconds, or an HTTP date), capped; None when absent or bad."""
    if not value or len(value) > 64:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(int(value[:6]))
    else:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class AuthError(YClientsError):
    """401/403: the tokens are wrong or lack access; retrying cannot help."""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total_count: int | None
    number: int


@dataclass
class Walk:
    """What one walk through a paged list saw: the proof (or not) that it saw every row upstream, and whether it
    read as many rows as the server claimed (a walk that read fewer ends its run `partial`)."""

    start_page: int = 1
    page_size: int = 0
    pages: int = 0
    total_count: int | None = None
    ids: set[str] = field(default_factory=set)
    unkeyed: int = 0  # rows of the pages read that had no usable id: read, but not countable among `ids`
    short_page: bool = False
    end: str = ""
    last_page: int = 0  # the page whose answer ended the walk
    repeated: int | None = None  # the earlier page the repeated answer copied, when it was the one before

    def missing_proof(self) -> str | None:
        """None when the walk saw every row; else why it cannot prove that (deletion then waits)."""
        if self.start_page != 1:
            return f"the walk resumed at page {self.start_page}"
        if self.total_count is not None:
            if self.end not in ("total reached", "empty page"):
                return f"the walk ended early ({self.end}) with {len(self.ids)} of total_count {self.total_count}"
            if len(self.ids) != self.total_count:
                return f"the walk saw {len(self.ids)} distinct ids, total_count says {self.total_count}"
            return None  # every row total_count announced, each id once
        if self.end != "empty page":
            return f"the walk ended without total_count and without an empty page ({self.end})"
        if self.short_page:
            return "without total_count, a short page came before the end"
        return None

    def shortfall(self) -> str | None:
        """Why the walk read fewer rows than the server claimed, with the figures; None when it read them all.

        A walk that ended on a repeated page or at the page cap fell short whatever the count; one that read fewer
        distinct rows than `total_count` (its own pages' share of it, for a resumed walk) fell short too. A walk
        without `total_count` that ended on an empty page claimed nothing more: not short. Unlike `missing_proof`
        this does not ask for proof of completeness, so a resumed walk that read its own pages is not short.
        """
        read = len(self.ids) + self.unkeyed
        claimed = self.total_count
        expected = None if claimed is None else max(claimed - (self.start_page - 1) * self.page_size, 0)
        if claimed is None:
            of = "with no total_count"
        elif self.start_page != 1:
            of = f"of the {expected} left by total_count {claimed} from page {self.start_page}"
        else:
            of = f"of total_count {claimed}"
        if self.end == "repeated page":
            why = (
                f"the server repeated page {self.repeated}"
                if self.repeated is not None
                else f"page {self.last_page} listed only rows already read"
            )
        elif self.end == "page cap":
            why = f"the walk stopped at the page cap after {self.pages} pages"
        elif expected is not None and read < expected:
            why = {
                "empty page": f"page {self.last_page} came back empty",
                "total reached": f"the pages up to page {self.last_page} were short or overlapped",
            }.get(self.end, f"the walk ended at page {self.last_page}")
        else:
            return None
        return f"read {read} distinct rows {of} ({why})"


def _row_key(row: Any) -> str | None:
    if isinstance(row, dict) and isinstance(row.get("id"), int | str) and not isinstance(row.get("id"), bool):
        return str(row["id"])[:40]
    return None


class RecordRefusedError(YClientsError):
    """YClients refused a write (409 or 422, or 200 with `success: false` and a message): the record was not
    saved, and asking again changes nothing."""

    SLOT_TAKEN_CODES = frozenset({433})

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message, status=status)
        self.code = code

    # How the API words a time that is not free: "Выбранное время уже занято", "время занято", "Мастер занят",
    # "пересекается с другой записью", in Russian or English.
    SLOT_TAKEN_WORDS = ("занят", "пересека", "пересечени", "already booked", "already taken", "time is busy")

    @property
    def slot_taken(self) -> bool:
        """The time asked for is not free: the booking is released and the nearest free times offered."""
        text = str(self).lower()
        return self.code in self.SLOT_TAKEN_CODES or any(word in text for word in self.SLOT_TAKEN_WORDS)


GONE_WORDS = ("не найден", "не существует", "not found", "does not exist")  # never "удален": "не может быть удалена"


def record_gone(exc: YClientsError) -> bool:
    """YClients says the record is not there (any more): a 404, or a refusal in the words it uses for that."""
    text = str(exc).lower()
    return exc.status == 404 or (isinstance(exc, RecordRefusedError) and any(word in text for word in GONE_WORDS))


def _api_code(body: Any) -> int | None:
    """The booking error code YClients puts in `meta.code` (431-438) or `errors.code`."""
    if isinstance(body, dict):
        for part in (body.get("meta"), body.get("errors")):
            if isinstance(part, dict) and str(part.get("code", "")).isdigit():
                return int(part["code"])
    return None


class DeadlineExceededError(YClientsError):
    """The walk ran past its deadline: fail the run before the soft time limit does it mid-write."""


class AnswerDeadlineError(YClientsError):
    """One request had no complete answer within `request_deadline_seconds` (a server dripping its answer, a
    stalled proxy): cut, and retryable like any lost connection."""

    def __init__(self, method: str, path: str, seconds: float) -> None:
        super().__init__(f"{method} {path}: no complete answer within {seconds:g} s", retryable=True)


MIN_WAIT_SECONDS = 0.001  # a phase starting at the deadline still gets a wait: 0 would make the socket non-blocking
DEADLINE_SLACK_SECONDS = 0.05  # a timeout this close to the deadline is the deadline's doing


class _AnswerClock:
    """One request's overall deadline, kept with httpx's own `timeout` and `trace` extensions: as each phase
    starts (send the headers, send the body, read the headers, read the body) its timeouts shrink to the time
    left, and the body is checked between chunks. httpx's timeouts alone are per read, so an answer that drips a
    few bytes a second would hold the worker for the whole run's deadline. No thread, no signal."""

    def __init__(self, seconds: float, per_read: float) -> None:
        self.seconds = seconds
        self.per_read = per_read
        self.at = time.monotonic() + seconds
        self.timeouts: dict[str, float | None] = {}  # the request's `timeout` extension, which httpcore reads

    def first_wait(self) -> float:
        return min(self.per_read, self.seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback: before each phase reads its timeout, make it no longer than the time left."""
        if event.endswith(".started"):
            wait = max(min(self.per_read, self.left()), MIN_WAIT_SECONDS)
            for phase in ("connect", "read", "write", "pool"):
                self.timeouts[phase] = wait

    def passed(self) -> bool:
        return self.left() <= DEADLINE_SLACK_SECONDS


def _api_message(body: Any) -> str:
    if isinstance(body, dict):
        meta = body.get("meta")
        if isinstance(meta, dict) and meta.get("message"):
            return str(meta["message"])
        errors = body.get("errors")
        if isinstance(errors, dict) and errors.get("message"):
            return str(errors["message"])
    return ""


def _is_limit_message(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in LIMIT_MESSAGES)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("YClients request retry %s after %s", state.attempt_number, type(error).__name__ if error else "?")


class YClientsClient:
    def __init__(self, settings: YClientsSettings, limiter: FleetRateLimiter, client: httpx.Client | None = None):
        if settings.partner_token is None:
            raise YClientsError("FLEET_YCLIENTS__PARTNER_TOKEN is not set")
        self.settings = settings
        self.limiter = limiter
        auth = f"Bearer {settings.partner_token.get_secret_value()}"
        if settings.user_token is not None:
            auth += f", User {settings.user_token.get_secret_value()}"
        self._http = client or httpx.Client(
            base_url=settings.base_url.rstrip("/") + "/",
            timeout=settings.timeout_seconds,
            headers={"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": auth},
        )
        self._retrying = Retrying(
            stop=stop_after_attempt(settings.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=settings.retry_initial_seconds,
                max=settings.retry_max_wait_seconds,
                jitter=settings.retry_initial_seconds,
            ),
            retry=retry_if_exception(lambda exc: isinstance(exc, YClientsError) and exc.retryable),
            before_sleep=_log_retry,
            reraise=True,
        )

    def close(self) -> None:
        self._http.close()

    # ---- one request ---------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The decoded envelope of a successful call, after rate limiting and retries."""
        return self._retrying(self._send_once, method, path, **kwargs)

    def _send_once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            self.limiter.acquire()
        except redis.RedisError as exc:
            # The fleet-wide limit lives in Redis: while Redis refuses writes (or is away) no request may leave,
            # and the request is retried like any transient failure, not failed for good.
            reason = refusal_cause(exc) or type(exc).__name__
            message = f"{method} {path}: not sent, the rate limit is unavailable: {reason}"
            raise YClientsError(message, retryable=True) from exc
        response, content = self._exchange(method, path, **kwargs)
        try:
            body = json.loads(content) if content else None
        except (ValueError, RecursionError):  # not JSON, or JSON nested deeper than Python decodes
            body = None
        message = _api_message(body)[:300]
        status = response.status_code
        if status == 429 or (
            status == 200 and isinstance(body, dict) and body.get("success") is False and _is_limit_message(message)
        ):
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after:
                self.limiter.pause(retry_after)  # every process waits, not only this one
            raise RateLimitedError(f"{method} {path}: rate limited ({status})", status, retry_after)
        if status >= 500:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after:
                self.limiter.pause(retry_after)
            raise YClientsError(f"{method} {path}: server error {status}", status=status, retryable=True)
        if status in (401, 403):
            raise AuthError(f"{method} {path}: {status} {message or 'unauthorized'}", status=status)
        if status in (409, 422):
            code = _api_code(body)
            said = message or (f"code {code}" if code is not None else "")
            raise RecordRefusedError(f"{method} {path}: {status} {said}".strip(), status=status, code=code)
        if status >= 400:
            raise YClientsError(f"{method} {path}: {status} {message}".strip(), status=status)
        if status == 204:
            return {"success": True, "data": None, "meta": []}  # a delete answers with no content
        if body is None:
            # An HTML error page from a proxy, a truncated answer: transient until the retries run out.
            kind = response.headers.get("Content-Type", "no content type").split(";")[0][:60]
            raise YClientsError(
                f"{method} {path}: answer is not JSON ({status}, {kind})", status=status, retryable=True
            )
        code = _api_code(body)
        if method != "GET" and isinstance(body, dict) and body.get("success") is False and (message or code):
            # A write refused in the envelope alone ("время уже занято", or only a booking error code, with 200):
            # read like a 422, so a taken time releases the booking and offers others. One with neither a message
            # nor a code cannot be read: it stays a failure below, its reason kept.
            raise RecordRefusedError(
                f"{method} {path}: refused ({status}) {message or f'code {code}'}", status=status, code=code
            )
        if not isinstance(body, dict) or body.get("success") is False:
            raise YClientsError(f"{method} {path}: unsuccessful answer: {message or 'no envelope'}", status=status)
        return body

    def _exchange(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
        """Send one request and read its whole answer within `request_deadline_seconds` (connect, send, headers
        and every byte of the body), else cut it: `AnswerDeadlineError`, retryable. Returns the response (status
        and headers) and its body."""
        clock = _AnswerClock(self.settings.request_deadline_seconds, self.settings.timeout_seconds)
        request = self._http.build_request(
            method, path.lstrip("/"), timeout=clock.first_wait(), extensions={"trace": clock.trace}, **kwargs
        )
        clock.timeouts = request.extensions["timeout"]
        try:
            response = self._http.send(request, stream=True)
            try:
                chunks: list[bytes] = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if clock.left() < 0:
                        raise AnswerDeadlineError(method, path, clock.seconds)
            finally:
                response.close()
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.TimeoutException) and clock.passed():
                raise AnswerDeadlineError(method, path, clock.seconds) from None
            raise YClientsError(f"{method} {path}: {type(exc).__name__}", retryable=True) from None
        if clock.left() < 0:  # the last bytes came after the deadline: as late as none at all
            raise AnswerDeadlineError(method, path, clock.seconds)
        return response, b"".join(chunks)

    def one(self, path: str) -> dict[str, Any] | None:
        """One object (a record, a client) read back by id; None when YClients answers 404 (it is gone)."""
        try:
            data = self.request("GET", path).get("data")
        except YClientsError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data, dict):
            raise YClientsError(f"GET {path}: data is {type(data).__name__}, not an object", retryable=True)
        return data

    def write(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One write, tried once: after a timeout or a 5xx its outcome is unknown, and the caller (the CRM
        operation) looks before it writes again. Returns the answer's `data`."""
        return self._send_once(method, path, json=body).get("data")

    # ---- pages ---------------------------------------------------------------------------------
    def pages(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        page_param: str = "page",
        size_param: str = "count",
        page_size: int | None = None,
        start_page: int = 1,
        walk: Walk | None = None,
        deadline: float | None = None,
    ) -> Iterator[Page]:
        """Every page, until one of these ends the walk (`walk.end` says which):

        - `total_count` rows' worth of pages were read ("total reached"; a short page is not the end);
        - an empty page ("empty page": the only end when the API sends no `total_count`);
        - a page with no id not seen before ("repeated page": the server ignores `page`);
        - the page cap, `total_count` pages plus two, or `max_pages` without it ("page cap").
        Past `deadline` (a `time.monotonic()` value) the walk fails with `DeadlineExceededError`. Afterwards
        `walk.missing_proof()` says whether deletion may be judged, `walk.shortfall()` whether it read less than
        the server claimed.
        """
        walk = walk if walk is not None else Walk()
        walk.start_page = start_page
        size = min(page_size or self.settings.page_size, self.settings.page_size)
        walk.page_size = size
        number = start_page
        previous: set[str] = set()
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceededError(f"{method} {path}: deadline passed at page {number} ({walk.pages} read)")
            query, payload = dict(params or {}), dict(json) if json is not None else None
            target = payload if payload is not None else query
            target[page_param], target[size_param] = number, size
            body = self.request(method, path, params=query or None, json=payload)
            rows = _list_of(body, method, path, number)
            meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
            total = _int_or_none(meta.get("total_count"))
            keyed = [key for key in map(_row_key, rows) if key is not None]
            keys = set(keyed)
            fresh = keys - walk.ids
            walk.ids |= keys
            walk.pages += 1
            walk.last_page = number
            walk.total_count = total
            walk.short_page = walk.short_page or 0 < len(rows) < size
            if not rows:
                walk.end = "empty page"
                return
            if keys and not fresh:
                walk.end = "repeated page"
                walk.repeated = number - 1 if previous and keys <= previous else None
                return
            walk.unkeyed += len(rows) - len(keyed)
            previous = keys
            yield Page(rows, total, number)
            cap = (-(-total // size) + 2) if total is not None else self.settings.max_pages
            if total is not None and number * size >= total:
                walk.end = "total reached"  # by position, not by the rows this page held
                return
            if number - start_page + 1 >= cap:
                walk.end = "page cap"
                return
            number += 1

    # ---- endpoints the sync uses ----------------------------------------------------------------
    def company(self, company_id: int) -> dict[str, Any]:
        path = f"company/{company_id}"
        data = self.request("GET", path).get("data")
        if not isinstance(data, dict):
            raise YClientsError(f"GET {path}: data is {type(data).__name__}, not an object", retryable=True)
        return data

    def listing(self, path: str, params: Any = None) -> list[Any]:
        """A whole list in one answer; `data: null` is an error, never an empty list."""
        return _list_of(self.request("GET", path, params=params), "GET", path, None)

    def service_categories(self, company_id: int) -> list[Any]:
        return self.listing(f"company/{company_id}/service_categories")

    def services(self, company_id: int) -> list[Any]:
        return self.listing(f"company/{company_id}/services")

    def staff(self, company_id: int) -> list[Any]:
        return self.listing(f"company/{company_id}/staff")

    def schedules(self, company_id: int, start: str, end: str, staff_ids: list[int]) -> list[Any]:
        params: list[tuple[str, Any]] = [("start_date", start), ("end_date", end)]
        params += [("staff_ids[]", staff_id) for staff_id in staff_ids]
        return self.listing(f"company/{company_id}/staff/schedule", params)

    CLIENT_FIELDS = (
        "id",
        "name",
        "phone",
        "email",
        "discount",
        "first_visit_date",
        "last_visit_date",
        "sold_amount",
        "visits_count",
    )

    def client_pages(self, company_id: int, start_page: int = 1, **walking: Any) -> Iterator[Page]:
        return self.pages(
            "POST",
            f"company/{company_id}/clients/search",
            json={"fields": list(self.CLIENT_FIELDS)},
            size_param="page_size",
            start_page=start_page,
            **walking,
        )

    def record_pages(
        self, company_id: int, params: dict[str, Any], start_page: int = 1, **walking: Any
    ) -> Iterator[Page]:
        return self.pages(
            "GET", f"records/{company_id}", params={**params, "with_deleted": 1}, start_page=start_page, **walking
        )


def _int_or_none(value: Any) -> int | None:
    """`total_count` as a count we can trust: a small non-negative whole number, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10**9:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return None


def _list_of(body: dict[str, Any], method: str, path: str, page: int | None) -> list[Any]:
    """The answer's `data` as a list; null or anything else is a bad answer, retried, then the run's failure."""
    data = body.get("data")
    if isinstance(data, list):
        return data
    where = f" page {page}" if page is not None else ""
    raise YClientsError(f"{method} {path}{where}: data is {type(data).__name__}, not a list", retryable=True)


def make_client(settings: Settings) -> YClientsClient:
    """A client whose requests count against the fleet-wide limit in Redis."""
    yc = settings.yclients
    limiter = FleetRateLimiter(settings.redis_url.get_secret_value(), yc.requests_per_second, yc.requests_per_minute)
    return YClientsClient(yc, limiter)
