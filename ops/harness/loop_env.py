"""The environment that points fleet workers at a YClients stand-in and a gateway stand-in, with timeouts
and backoffs short enough for a test or a benchmark: one definition for both."""

from __future__ import annotations


def stand_in_env(yclients_url: str, gateway_url: str, company_id: int) -> dict[str, str]:
    return {
        "FLEET_YCLIENTS__BASE_URL": yclients_url,
        "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-token",
        "FLEET_YCLIENTS__USER_TOKEN": "user-token",
        "FLEET_YCLIENTS__COMPANY_IDS": f"[{company_id}]",
        "FLEET_YCLIENTS__REQUESTS_PER_SECOND": "1000",
        "FLEET_YCLIENTS__REQUESTS_PER_MINUTE": "100000",
        "FLEET_YCLIENTS__TIMEOUT_SECONDS": "1",  # a stalled create answers after the client gave up
        "FLEET_YCLIENTS__PUSH_RETRY_BASE_SECONDS": "0.5",
        "FLEET_GATEWAY__SEND_URL": gateway_url,
    }
