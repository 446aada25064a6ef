"""The booking loop's fixtures, one definition for every module that runs it: a salon in the YClients
stand-in (synced into the database), the gateway stand-in, and inbound and YClients workers pointed at both.
Registered in tests/conftest.py (`pytest_plugins`)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ops.harness.loop_env import stand_in_env
from ops.standins.gateway import GatewayStandIn, gateway_stand_in
from ops.standins.yclients import Salon, YClientsStandIn, generate_salon, yclients_stand_in
from shared.core.pool import close_process_pool, open_process_pool
from shared.core.settings import Settings, load_settings
from shared.data.repositories.webhook_events import WebhookSecretRepository
from shared.health.server import make_server
from shared.yclients.client import make_client
from shared.yclients.sync import SyncSummary, sync_entity
from tests.support.processes import FleetProcess, running_workers
from workers.app import app
from workers.cli.webhooks import new_secret

COMPANY = 962302
WEBHOOK_SECRET = "webhook-secret-for-tests"


def sync_settings(stand_in: YClientsStandIn, **overrides: Any) -> Settings:
    yclients = {
        "base_url": stand_in.url,
        "partner_token": "partner-token",
        "user_token": "user-token",
        "company_ids": [COMPANY],
        "requests_per_second": 1000,
        "requests_per_minute": 100_000,
        "retry_initial_seconds": 0.05,
        "retry_max_wait_seconds": 0.2,
        **overrides,
    }
    return load_settings(yclients=yclients)


def settings_for(stand_in: YClientsStandIn, **overrides: Any) -> Settings:
    """The sync tests' settings, with three tries per request so a lasting bad answer fails fast."""
    return sync_settings(stand_in, **{"max_attempts": 3, **overrides})


def sync(settings: Settings, entity: str, company: int = COMPANY, **options: Any) -> SyncSummary:
    """One sync run of `entity` in this process, with a client of its own."""
    client = make_client(settings)
    try:
        return sync_entity(client, settings.yclients, company, entity, **options)
    finally:
        client.close()


@pytest.fixture(scope="module")
def quiet_salon() -> Salon:
    """A salon whose calendar starts empty, so every record in it is one the test can account for."""
    return generate_salon(COMPANY, clients=0, records=0)


@pytest.fixture
def loop_stand_in(quiet_salon: Salon, db: psycopg.Connection, clean_redis: str) -> Iterator[YClientsStandIn]:
    with yclients_stand_in(copy.deepcopy(quiet_salon), per_second=1000, per_minute=100_000) as server:
        open_process_pool(role="test", max_size=3, wait=True)
        settings = sync_settings(server)
        for entity in ("company", "services", "staff", "schedules"):
            assert sync(settings, entity).status == "succeeded"
        close_process_pool()
        yield server


@pytest.fixture
def gateway() -> Iterator[GatewayStandIn]:
    with gateway_stand_in() as stand_in:
        yield stand_in


@pytest.fixture
def loop_env(fleet_env: dict[str, str], loop_stand_in: YClientsStandIn, gateway: GatewayStandIn) -> dict[str, str]:
    return {
        **fleet_env,
        **stand_in_env(loop_stand_in.url, gateway.url, COMPANY),
        "FLEET_YCLIENTS__WEBHOOK_SECRET": WEBHOOK_SECRET,
        "FLEET_GATEWAY__RETRY_BASE_SECONDS": "0.2",
        "FLEET_INBOUND__BURST_WINDOW_SECONDS": "0.1",
    }


@pytest.fixture
def fleet(loop_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, FleetProcess]]:
    with running_workers(("inbound", "yclients"), loop_env, tmp_path) as workers:
        yield workers


@pytest.fixture
def webhook_url(loop_env: dict[str, str]) -> Iterator[str]:
    """The salon's own webhook URL (`/yclients/webhook/<company>/<secret>`), its secret set as an operator does."""
    settings = load_settings(
        redis_url=loop_env["REDIS_URL"], yclients={"company_ids": [COMPANY], "partner_token": "partner-token"}
    )
    server = make_server(
        settings, port=0, enqueue_webhook=lambda event: app.send_task("workers.yclients.apply_webhook", (event,))
    )
    secret = new_secret()
    WebhookSecretRepository().replace(COMPANY, secret, None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/yclients/webhook/{COMPANY}/{secret}"
    finally:
        server.shutdown()
        server.server_close()
        close_process_pool()
