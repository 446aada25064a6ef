"""The WhatsApp gateway's send endpoint: POST {company_id, phone, message, id}.

The gateway holds many salons' WhatsApp sessions; `company_id` chooses the one a message leaves from, so a
salon's reply, reminder or CRM notice never goes out from another salon's number. The id, `<company>:<key>`,
lets the gateway drop repeats and names the salon as well, so two salons' keys can never be taken for one.
"""

from __future__ import annotations

import httpx

from shared.core.failure import FleetError
from shared.core.settings import GatewaySettings

REASON_CHARS = 300  # of a refusal's reason, kept with the given-up reply
USER_AGENT = "salon-fleet"


class GatewayError(FleetError):
    """Sending failed; `retryable` says whether trying again can help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def gateway_id(company_id: int, key: str) -> str:
    """The id a message carries to the gateway: its salon, then its outbox key (and part)."""
    return f"{company_id}:{key}"


def refusal_reason(response: httpx.Response) -> str:
    """What the gateway said about a refusal (its JSON `error`, `reason` or `message`, else the body's start),
    so the failed reply says why, e.g. that the gateway holds no session of that salon."""
    try:
        data = response.json()
    except ValueError:
        data = None
    said = [data.get(field) for field in ("error", "reason", "message")] if isinstance(data, dict) else []
    text = next((value for value in said if isinstance(value, str) and value.strip()), response.text)
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:REASON_CHARS] or "no reason given"


class GatewayClient:
    """POSTs to the gateway through httpx's transport, its connection pool kept between sends.

    A send is a JSON POST to the fleet's own gateway, one per reply, on every message's path: none of the layers
    `httpx.Client` puts around the transport (cookie jar, redirects, auth flows, URLs merged with a base, proxies
    read from the environment) has anything to do there, and they cost about a third of a send's CPU in this
    process. Timeouts and transport errors are httpx's own, as through a Client. Proxy variables
    (`HTTP_PROXY`...) are not read: the gateway is reached directly, never through a proxy meant for the internet.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if settings.token is not None:
            self._headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._timeout = httpx.Timeout(settings.timeout_seconds).as_dict()
        self._transport = httpx.HTTPTransport()

    def send(self, *, company_id: int, phone: str, message: str, key: str) -> None:
        """Send one message from the salon's own WhatsApp session; `key` is stable across attempts."""
        message_id = gateway_id(company_id, key)
        request = httpx.Request(
            "POST",
            self.settings.send_url,
            json={"company_id": company_id, "phone": phone, "message": message, "id": message_id},
            headers={**self._headers, "Idempotency-Key": message_id},
            extensions={"timeout": self._timeout},
        )
        try:
            response = self._transport.handle_request(request)
            try:
                response.read()  # the whole answer, so the connection goes back to the pool for the next send
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise GatewayError(f"gateway timed out ({type(exc).__name__})", retryable=True) from None
        except httpx.TransportError as exc:
            raise GatewayError(f"gateway unreachable ({type(exc).__name__})", retryable=True) from None
        if response.status_code >= 500 or response.status_code in (408, 425, 429):
            raise GatewayError(f"gateway answered {response.status_code}", retryable=True, status=response.status_code)
        if response.status_code >= 400:
            # A refusal no retry mends (no session of this salon, a malformed request): the reply is given up
            # at once, with the gateway's reason.
            raise GatewayError(
                f"gateway refused the reply: {response.status_code} ({refusal_reason(response)})",
                retryable=False,
                status=response.status_code,
            )
        if response.status_code >= 300:
            # Not the send endpoint's answer (a redirect: the URL names something else): nothing was sent, so the
            # reply is not marked sent; it is tried again, and given up with this reason if the URL stays wrong.
            raise GatewayError(
                f"gateway answered {response.status_code}, not a send's answer: is FLEET_GATEWAY__SEND_URL the"
                " gateway's send endpoint?",
                retryable=True,
                status=response.status_code,
            )

    def close(self) -> None:
        self._transport.close()
