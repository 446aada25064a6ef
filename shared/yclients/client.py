"""The YClients REST client: documented headers, fleet-wide rate limit, retries, paging by total_count."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.settings import Settings, YClientsSettings
from shared.yclients.ratelimit import FleetRateLimiter

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.yclients.v2+json"
LIMIT_MESSAGES = ("превышен лимит", "limit exceeded", "too many requests")


class YClientsError(Exception):
    """The API refused or failed; `retryable` says whether another try can help."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class RateLimitedError(YClientsError):
    """HTTP 429, or HTTP 200 with success:false and a "limit exceeded" message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status=status, retryable=True)


class AuthError(YClientsError):
    """401/403: the tokens are wrong or lack access; retrying cannot help."""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total_count: int | None
    number: int


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
        self.limiter.acquire()
        try:
            response = self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.TransportError as exc:
            raise YClientsError(f"{method} {path}: {type(exc).__name__}", retryable=True) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        message = _api_message(body)
        status = response.status_code
        if status == 429 or (
            status == 200 and isinstance(body, dict) and body.get("success") is False and _is_limit_message(message)
        ):
            raise RateLimitedError(f"{method} {path}: rate limited ({status})", status)
        if status >= 500:
            raise YClientsError(f"{method} {path}: server error {status}", status=status, retryable=True)
        if status in (401, 403):
            raise AuthError(f"{method} {path}: {status} {message or 'unauthorized'}", status=status)
        if status >= 400:
            raise YClientsError(f"{method} {path}: {status} {message}".strip(), status=status)
        if not isinstance(body, dict) or body.get("success") is False:
            raise YClientsError(f"{method} {path}: unsuccessful answer: {message or 'no envelope'}", status=status)
        return body

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
    ) -> Iterator[Page]:
        """Every page until `total_count` rows were seen; a short page is not taken as the end."""
        size = min(page_size or self.settings.page_size, self.settings.page_size)
        number = start_page
        while True:
            query, payload = dict(params or {}), dict(json) if json is not None else None
            target = payload if payload is not None else query
            target[page_param], target[size_param] = number, size
            body = self.request(method, path, params=query or None, json=payload)
            rows = body.get("data") or []
            if not isinstance(rows, list):
                raise YClientsError(f"{method} {path}: page {number} data is not a list")
            meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
            total = _int_or_none(meta.get("total_count"))
            yield Page(rows, total, number)
            if total is None:
                if len(rows) < size:
                    return  # an endpoint without total_count: only then does a short page end it
            elif number * size >= total:
                return  # by position, not by the rows this page held: a short page is not the end
            number += 1

    # ---- endpoints the sync uses ----------------------------------------------------------------
    def company(self, company_id: int) -> dict[str, Any]:
        return self.request("GET", f"company/{company_id}")["data"]

    def service_categories(self, company_id: int) -> list[dict[str, Any]]:
        return self.request("GET", f"company/{company_id}/service_categories")["data"] or []

    def services(self, company_id: int) -> list[dict[str, Any]]:
        return self.request("GET", f"company/{company_id}/services")["data"] or []

    def staff(self, company_id: int) -> list[dict[str, Any]]:
        return self.request("GET", f"company/{company_id}/staff")["data"] or []

    def schedules(self, company_id: int, start: str, end: str, staff_ids: list[int]) -> list[dict[str, Any]]:
        params: list[tuple[str, Any]] = [("start_date", start), ("end_date", end)]
        params += [("staff_ids[]", staff_id) for staff_id in staff_ids]
        return self.request("GET", f"company/{company_id}/staff/schedule", params=params)["data"] or []

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

    def client_pages(self, company_id: int, start_page: int = 1) -> Iterator[Page]:
        return self.pages(
            "POST",
            f"company/{company_id}/clients/search",
            json={"fields": list(self.CLIENT_FIELDS)},
            size_param="page_size",
            start_page=start_page,
        )

    def record_pages(self, company_id: int, params: dict[str, Any], start_page: int = 1) -> Iterator[Page]:
        return self.pages("GET", f"records/{company_id}", params={**params, "with_deleted": 1}, start_page=start_page)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def make_client(settings: Settings) -> YClientsClient:
    """A client whose requests count against the fleet-wide limit in Redis."""
    yc = settings.yclients
    limiter = FleetRateLimiter(settings.redis_url.get_secret_value(), yc.requests_per_second, yc.requests_per_minute)
    return YClientsClient(yc, limiter)
