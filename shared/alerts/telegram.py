"""Telegram's Bot API `sendMessage`, the way operators of small salons already read their alerts.

The token is part of the URL path, so this module never logs the URL nor httpx's error text (which quotes it);
httpx itself logs each request's URL at INFO, and Sentry keeps it as a breadcrumb: every fleet process masks the
token there (shared/observability/redaction.py, docs/security.md).
"""

from __future__ import annotations

import httpx

from shared.core.failure import FleetError
from shared.core.settings import AlertSettings


class TelegramError(FleetError):
    """sendMessage failed; `retry_after` is Telegram's own wait (HTTP 429), when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TelegramClient:
    def __init__(self, settings: AlertSettings, client: httpx.Client | None = None) -> None:
        if not settings.enabled or settings.telegram_bot_token is None:
            raise ValueError("Telegram alerts need FLEET_ALERTS__TELEGRAM_BOT_TOKEN and FLEET_ALERTS__TELEGRAM_CHAT_ID")
        self.chat_id = settings.telegram_chat_id
        token = settings.telegram_bot_token.get_secret_value()
        self._url = f"{settings.telegram_api_url.rstrip('/')}/bot{token}/sendMessage"
        self._client = client or httpx.Client(timeout=settings.timeout_seconds)

    def send(self, text: str) -> int:
        """Send plain text (no parse mode: nothing in an alert needs escaping); returns Telegram's message id."""
        try:
            response = self._client.post(
                self._url,
                json={"chat_id": self.chat_id, "text": text, "link_preview_options": {"is_disabled": True}},
            )
        except httpx.HTTPError as exc:
            raise TelegramError(f"Telegram unreachable ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TelegramError(f"Telegram answered {response.status_code} without a JSON object")
        if body.get("ok") is True and isinstance(body.get("result"), dict):
            return int(body["result"].get("message_id") or 0)
        description = str(body.get("description") or "no description")[:200]
        parameters = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
        retry_after = parameters.get("retry_after")
        if "migrate_to_chat_id" in parameters:
            description += (
                f" (the group is now chat {parameters['migrate_to_chat_id']}: set FLEET_ALERTS__TELEGRAM_CHAT_ID)"
            )
        raise TelegramError(
            f"Telegram refused the alert: {body.get('error_code', response.status_code)} {description}",
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else None,
        )

    def close(self) -> None:
        self._client.close()
