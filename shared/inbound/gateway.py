"""The WhatsApp gateway's send endpoint: POST {phone, message, id}; the id lets the gateway drop repeats."""

from __future__ import annotations

import httpx

from shared.core.failure import FleetError
from shared.core.settings import GatewaySettings


class GatewayError(FleetError):
    """Sending failed; `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class GatewayClient:
    def __init__(self, settings: GatewaySettings, client: httpx.Client | None = None) -> None:
        self.settings = settings
        headers = {"Content-Type": "application/json"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._client = client or httpx.Client(timeout=settings.timeout_seconds, headers=headers)

    def send(self, phone: str, message: str, message_id: str) -> None:
        try:
            response = self._client.post(
                self.settings.send_url,
                json={"phone": phone, "message": message, "id": message_id},
                headers={"Idempotency-Key": message_id},
            )
        except httpx.TimeoutException as exc:
            raise GatewayError(f"gateway timed out ({type(exc).__name__})", retryable=True) from None
        except httpx.TransportError as exc:
            raise GatewayError(f"gateway unreachable ({type(exc).__name__})", retryable=True) from None
        if response.status_code >= 500 or response.status_code in (408, 425, 429):
            raise GatewayError(f"gateway answered {response.status_code}", retryable=True, status=response.status_code)
        if response.status_code >= 400:
            raise GatewayError(
                f"gateway refused the reply: {response.status_code}", retryable=False, status=response.status_code
            )

    def close(self) -> None:
        self._client.close()
