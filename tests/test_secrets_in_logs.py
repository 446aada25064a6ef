"""No configured secret reaches a log line, a Sentry event or a breadcrumb.

What is masked, and how, first (in this process). Then real fleet processes run with every secret setting set
to a distinctive value and do work that writes URLs and errors down: an alert to the Bot API stand-in (the
bot's token is part of the request's URL, which the HTTP client logs and Sentry keeps as a breadcrumb), an
alert Telegram refuses until it is given up (an error event carrying those breadcrumbs), a reply through the
gateway (its token in a header), a task that fails into Sentry, and the health service answering with its
token and taking a webhook with its secret.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from ops.standins.gateway import GatewayStandIn
from ops.standins.telegram import TelegramStandIn, telegram_stand_in
from shared.core.kombu_contract import queue_key
from shared.core.settings import Settings, load_settings
from shared.core.topology import Queue, TaskName
from shared.data.repositories.alerts import AlertRepository
from shared.observability import redaction
from shared.observability.redaction import SecretFilter, SecretMasker
from shared.observability.sentry import scrub_breadcrumb, scrub_event
from tests.support.payloads import inbound_payload
from tests.support.processes import INBOUND_LISTS, FleetProcess, running_workers, wait_for_idle, wait_until
from tests.support.sentry_server import RecordedEnvelopes, sentry_stand_in
from workers.app import app
from workers.producer import enqueue_message

# Each secret holds a marker found nowhere else, so a secret that leaks even in part (a scrubber that masks a
# token's digits only, say) is still caught. URL passwords are plain, so they read the same encoded or not.
MARKERS = {
    "DATABASE_URL": "pgpw-marker-q7",
    "REDIS_URL": "redispw-marker-k2",
    "SENTRY_DSN": "dsnkey-marker-v5",
    "FLEET_POOL__SESSION_URL": "sessionpw-marker-z3",
    "FLEET_REPLICA__URL": "replicapw-marker-h8",
    "FLEET_GATEWAY__TOKEN": "gateway-marker-n4",
    "FLEET_ALERTS__TELEGRAM_BOT_TOKEN": "telegram-marker-x9",
    "FLEET_YCLIENTS__PARTNER_TOKEN": "partner-marker-c1",
    "FLEET_YCLIENTS__USER_TOKEN": "usertoken-marker-b6",
    "FLEET_YCLIENTS__WEBHOOK_SECRET": "webhook-marker-m3",
    "FLEET_HEALTH__TOKEN": "healthtoken-marker-f2",
    "FLEET_FLOWER_PASSWORD": "flowerpw-marker-w7",
    "FLEET_MODEL__API_KEY": "modelkey-marker-p8",
}
QUEUES = (*INBOUND_LISTS, queue_key(Queue.MAINTENANCE))
BOT_TOKEN = f"7702914365:AAH-{MARKERS['FLEET_ALERTS__TELEGRAM_BOT_TOKEN']}-Qx81"


def secret_variables(model: type[BaseModel], prefix: str = "FLEET_") -> set[str]:
    """The variable of every SecretStr field of the Settings model, nested settings included."""
    found = set()
    for name, info in model.model_fields.items():
        kinds = typing.get_args(info.annotation) or (info.annotation,)
        if SecretStr in kinds:
            choices = getattr(info.validation_alias, "choices", None)
            found.add(str(choices[0]) if choices else f"{prefix}{name.upper()}")
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= secret_variables(kind, f"{prefix}{name.upper()}__")
    return found


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bot_api() -> Iterator[TelegramStandIn]:
    with telegram_stand_in(token=BOT_TOKEN) as stand_in:
        yield stand_in


def secret_env(base: dict[str, str], dsn: str, bot_api: TelegramStandIn) -> dict[str, str]:
    """`base` with every secret setting set to a distinctive value; each still works against the test services
    (PostgreSQL trusts local connections and Redis's default user takes any password)."""
    database = base["DATABASE_URL"]
    return {
        **base,
        **bot_api.env(),
        "DATABASE_URL": with_password(database, "postgres", MARKERS["DATABASE_URL"]),
        "REDIS_URL": with_password(base["REDIS_URL"], "default", MARKERS["REDIS_URL"]),
        "SENTRY_DSN": dsn.replace("//public@", f"//{MARKERS['SENTRY_DSN']}@"),
        "FLEET_POOL__SESSION_URL": with_password(database, "postgres", MARKERS["FLEET_POOL__SESSION_URL"]),
        "FLEET_REPLICA__URL": with_password(database, "postgres", MARKERS["FLEET_REPLICA__URL"]),
        "FLEET_GATEWAY__TOKEN": f"gw-{MARKERS['FLEET_GATEWAY__TOKEN']}",
        "FLEET_ALERTS__TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "FLEET_ALERTS__MAX_ATTEMPTS": "1",  # a refused alert is given up at once, into Sentry
        "FLEET_YCLIENTS__PARTNER_TOKEN": f"pt-{MARKERS['FLEET_YCLIENTS__PARTNER_TOKEN']}",
        "FLEET_YCLIENTS__USER_TOKEN": f"ut-{MARKERS['FLEET_YCLIENTS__USER_TOKEN']}",
        "FLEET_YCLIENTS__WEBHOOK_SECRET": f"wh-{MARKERS['FLEET_YCLIENTS__WEBHOOK_SECRET']}",
        "FLEET_HEALTH__TOKEN": f"ht-{MARKERS['FLEET_HEALTH__TOKEN']}",
        "FLEET_HEALTH__PORT": str(free_port()),
        "FLEET_FLOWER_USER": "operator",
        "FLEET_FLOWER_PASSWORD": f"fp-{MARKERS['FLEET_FLOWER_PASSWORD']}",
        "FLEET_MODEL__API_KEY": f"sk-{MARKERS['FLEET_MODEL__API_KEY']}",
    }


def leaks(text: str, env: dict[str, str]) -> list[str]:
    """The secret settings whose value, or marker, is in `text`."""
    return [name for name, marker in MARKERS.items() if marker in text or env[name] in text]


def sentry_events(recorded: RecordedEnvelopes, message: str) -> list[dict]:
    return [event for event in recorded.of_type("event") if message in json.dumps(event, ensure_ascii=False)]


@pytest.fixture
def masking(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SecretMasker]:
    """Masks the secrets of settings built from the given overrides; the process's own come back afterwards."""
    monkeypatch.setattr(redaction, "_masker", redaction.current_masker())
    return lambda **overrides: redaction.configure_secrets(load_settings(**overrides))


def test_every_secret_is_masked_in_the_forms_it_travels_in(masking: Callable[..., SecretMasker]) -> None:
    masker = masking(
        database_url="postgresql://fleet:pg%2Fpass-1a@db.internal:5432/fleet",
        redis_url="redis://:redis-pass-2b@127.0.0.1:6379/0",
        sentry_dsn="https://dsnkey3c@o1.ingest.sentry.io/42",
        pool={"session_url": "host=db.internal dbname=fleet user=fleet password=session-pass-4d"},
        replica={"url": "postgresql://fleet@replica.internal/fleet"},
        alerts={"telegram_bot_token": BOT_TOKEN, "telegram_chat_id": "-100"},
    )
    masked = {
        "postgresql://fleet:pg%2Fpass-1a@db.internal:5432/fleet": "[secret]",
        "authentication failed: pg/pass-1a, pg%2Fpass-1a": "authentication failed: [secret], [secret]",
        "redis://:redis-pass-2b@other.host:6379/1": "redis://:[secret]@other.host:6379/1",
        "key dsnkey3c": "key [secret]",
        "password=session-pass-4d": "password=[secret]",
        f"POST http://api/bot{BOT_TOKEN}/sendMessage": "POST http://api/bot[secret]/sendMessage",
        f"?token={BOT_TOKEN.replace(':', '%3A')}": "?token=[secret]",
        # A URL without a password is no secret, and a user name is not a password.
        "postgresql://fleet@replica.internal/fleet": "postgresql://fleet@replica.internal/fleet",
    }
    assert {text: masker.mask(text) for text in masked} == masked


def test_a_log_record_is_masked_in_its_message_arguments_and_traceback(masking: Callable[..., SecretMasker]) -> None:
    masking(gateway={"token": "gw-token-6e"})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretFilter())
    logger = logging.getLogger("tests.secrets_in_logs")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("gateway refused Bearer gw-token-6e")
        except RuntimeError:
            logger.exception("delivery with %s failed", "gw-token-6e")
        logger.error("%s: %d", "gw-token-6e")  # a broken record: logging would print its arguments raw
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "gw-token-6e" not in written
    assert "delivery with [secret] failed" in written
    assert "RuntimeError: gateway refused Bearer [secret]" in written
    assert "%s: %d ('[secret]',)" in written


def test_sentry_gets_secrets_masked_before_phones(masking: Callable[..., SecretMasker]) -> None:
    masking(alerts={"telegram_bot_token": BOT_TOKEN, "telegram_chat_id": "-100"})
    url = f"http://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    crumb = scrub_breadcrumb({"type": "http", "category": "httplib", "data": {"url": url, "http.method": "POST"}})
    assert crumb["data"]["url"] == "http://api.telegram.org/bot[secret]/sendMessage"
    event = scrub_event(
        {
            "request": {"url": url},
            "tags": {"operation": "alerts.telegram"},
            "exception": {"values": [{"type": "TelegramError", "value": f"{url} for client +79112345678"}]},
        }
    )
    assert BOT_TOKEN.split(":")[1] not in json.dumps(event)
    assert event["exception"]["values"][0]["value"].endswith("/bot[secret]/sendMessage for client [filtered]")


def test_the_test_sets_every_secret_setting() -> None:
    assert secret_variables(Settings) == set(MARKERS), "a new secret setting: give it a distinctive value here"


@pytest.mark.slow
def test_no_secret_reaches_logs_or_sentry(
    inbound_env: dict[str, str], gateway: GatewayStandIn, bot_api: TelegramStandIn, tmp_path: Path
) -> None:
    alerts = AlertRepository()  # this process's pool, opened by the salon fixture
    with sentry_stand_in() as (dsn, recorded):
        env = secret_env(inbound_env, dsn, bot_api)
        health = FleetProcess(["health-server"], env, tmp_path / "health.log")
        try:
            with running_workers(["inbound", "keys"], env, tmp_path) as workers:
                # A reply through the gateway, with its token.
                enqueue_message(inbound_payload("Сколько стоит стрижка?"))
                wait_until(lambda: gateway.count() == 1, 30, "the reply at the gateway")
                # An alert Telegram refuses, given up at once: a Sentry event whose breadcrumbs hold the request.
                bot_api.fail_next(1)
                alerts.add("secrets:refused", "health", "🔴 refused alert")
                app.send_task(TaskName.DELIVER_ALERTS)
                wait_until(lambda: sentry_events(recorded, "Telegram alert given up"), 30, "the given-up event")
                # An alert delivered.
                alerts.add("secrets:delivered", "health", "🔴 delivered alert")
                app.send_task(TaskName.DELIVER_ALERTS)
                wait_until(lambda: bot_api.texts() == ["🔴 delivered alert"], 30, "the alert at the Bot API")
                # A task failing in the inbound worker, into Sentry.
                app.send_task(TaskName.INBOUND_PING, kwargs={"hold_seconds": "soon"})
                wait_until(lambda: sentry_events(recorded, "InvalidTaskArguments"), 30, "the failed task's event")
                # The health service, asked with its token, and a webhook with the fleet-wide secret (a header: the
                # query string is refused).
                base = f"http://127.0.0.1:{env['FLEET_HEALTH__PORT']}"
                wait_until(lambda: "health service on" in health.output(), 30, "the health service")
                token = {"Authorization": f"Bearer {env['FLEET_HEALTH__TOKEN']}"}
                assert httpx.get(f"{base}/health/heartbeat", headers=token, timeout=10).status_code in (200, 503)
                webhook = httpx.post(
                    f"{base}/yclients/webhook",
                    headers={"X-Fleet-Webhook-Secret": env["FLEET_YCLIENTS__WEBHOOK_SECRET"]},
                    json={"company_id": 1, "resource": "record", "resource_id": 1, "status": "update"},
                    timeout=10,
                )
                assert webhook.status_code != 403, webhook.text
                wait_for_idle(list(workers.values()), env["REDIS_URL"], QUEUES, at_least=4)
        finally:
            health.stop()
        outputs = {name: worker.output() for name, worker in workers.items()}
        outputs["health"] = health.output()
        sent_to_sentry = json.dumps(recorded.items, ensure_ascii=False, default=str)

    # No secret, in whole or in part, is in any process's log or in anything Sentry received.
    for name, output in outputs.items():
        lines = [line for line in output.splitlines() if leaks(line, env)]
        assert not lines, f"the {name} process logged {leaks(output, env)}:\n" + "\n".join(lines)
    assert not leaks(sent_to_sentry, env), f"Sentry received {leaks(sent_to_sentry, env)}"
    # Not for want of trying: the work that writes the bot's token down was done, and what it wrote is there,
    # masked (the request's URL in the given-up event's breadcrumbs, the HTTP client's line in the log).
    (given_up,) = sentry_events(recorded, "Telegram alert given up")
    urls = [crumb.get("data", {}).get("url", "") for crumb in given_up["breadcrumbs"]["values"]]
    assert any(url.endswith("/bot[secret]/sendMessage") for url in urls), urls
    assert "/bot[secret]/sendMessage" in outputs["keys"]
