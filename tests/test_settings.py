"""Settings: typed, validated, secrets hidden, production refuses to start incomplete."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel, SecretStr

from shared.core.settings import Settings, SettingsError, WorkerType, load_settings

COMPLETE_PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://fleet:s3cret-pw-4f9a1c2e@db.internal:5432/fleet?sslmode=verify-full",
    "redis_url": "rediss://:r3dis-pw-8b7d6e5f@redis.internal:6380/0",
    "sentry_dsn": "https://0f1e2d3c4b5a69788796a5b4c3d2e1f0@sentry.example/1",
    "flower_user": "ops",
    "flower_password": "flower-pw-2c4e6a8b",
    "gateway": {"token": "gateway-t0ken-9d8c7b6a"},
}
LONG_SECRET = "7f3e9a1b5c2d8e4f6a0b"


def test_development_defaults_need_nothing() -> None:
    settings = load_settings(environment="development", sentry_dsn=None)
    assert settings.pool.max_size == 3
    assert settings.pool.statement_timeout_ms == 30_000
    assert settings.timezone == "Europe/Moscow"


def test_complete_production_settings_are_accepted() -> None:
    settings = load_settings(**COMPLETE_PRODUCTION)
    assert settings.environment == "production"


def test_production_lists_every_missing_setting_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            environment="production",
            database_url="postgresql://fleet@db/fleet",
            sentry_dsn=None,
            flower_user=None,
            flower_password=None,
        )
    message = str(caught.value)
    for problem in (
        "DATABASE_URL has no password",
        "SENTRY_DSN is not set",
        "FLEET_FLOWER_USER is not set",
        "FLEET_FLOWER_PASSWORD is not set",
    ):
        assert problem in message


@pytest.mark.parametrize(
    ("unsafe", "named"),
    [
        ({"database_url": "postgresql://fleet:CHANGE-ME@db/fleet"}, "DATABASE_URL has the example's placeholder"),
        ({"redis_url": "redis://redis.internal:6379/0"}, "REDIS_URL has no password"),
        ({"redis_url": "rediss://:CHANGE-ME@redis.internal:6380/0"}, "REDIS_URL has the example's placeholder"),
        ({"redis_url": f"redis://:{LONG_SECRET}@redis.internal:6379/0"}, "REDIS_URL reaches another host without TLS"),
        ({"flower_password": "CHANGE-ME"}, "FLEET_FLOWER_PASSWORD is the example's placeholder"),
        (
            {"health": {"address": "0.0.0.0"}},
            "the health service listens on every address (FLEET_HEALTH__ADDRESS='0.0.0.0') without FLEET_HEALTH__TOKEN",
        ),
        ({"gateway": {"token": None}}, "FLEET_GATEWAY__TOKEN is not set"),
        ({"gateway": {"token": "change-me"}}, "FLEET_GATEWAY__TOKEN is the example's placeholder"),
    ],
)
def test_production_refuses_placeholders_and_open_services(unsafe: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        load_settings(**{**COMPLETE_PRODUCTION, **unsafe})


def test_production_accepts_a_local_redis_with_a_password_and_an_open_health_service_with_a_token() -> None:
    settings = load_settings(
        **{
            **COMPLETE_PRODUCTION,
            "redis_url": f"redis://:{LONG_SECRET}@127.0.0.1:6379/0",
            "health": {"address": "0.0.0.0", "token": LONG_SECRET},
        }
    )
    assert settings.health.token is not None


@pytest.mark.parametrize(
    ("unsafe", "named"),
    [
        # The health service off loopback: `0` binds every address, a public or private one is reachable.
        ({"health": {"address": "0"}}, "every address (FLEET_HEALTH__ADDRESS='0') without FLEET_HEALTH__TOKEN"),
        ({"health": {"address": "::"}}, "every address (FLEET_HEALTH__ADDRESS='::') without FLEET_HEALTH__TOKEN"),
        ({"health": {"address": "203.0.113.7"}}, "FLEET_HEALTH__ADDRESS='203.0.113.7') without FLEET_HEALTH__TOKEN"),
        ({"health": {"address": "10.0.0.5"}}, "FLEET_HEALTH__ADDRESS='10.0.0.5') without FLEET_HEALTH__TOKEN"),
        ({"health": {"address": "monitoring.internal"}}, "without FLEET_HEALTH__TOKEN: set the token to"),
        # An empty token would let `Authorization: Bearer ` in; a short one is guessed.
        ({"health": {"address": "0.0.0.0", "token": ""}}, "FLEET_HEALTH__TOKEN is set but empty"),
        ({"health": {"token": ""}}, "FLEET_HEALTH__TOKEN is set but empty"),
        ({"health": {"address": "0.0.0.0", "token": "abc"}}, "FLEET_HEALTH__TOKEN is shorter than 16 characters"),
        ({"health": {"address": "0.0.0.0", "token": "CHANGE-ME"}}, "FLEET_HEALTH__TOKEN is the example's placeholder"),
        # Every secret: placeholder, one character, empty.
        ({"yclients": {"webhook_secret": "CHANGE-ME"}}, "FLEET_YCLIENTS__WEBHOOK_SECRET is the example's placeholder"),
        ({"yclients": {"webhook_secret": "x"}}, "FLEET_YCLIENTS__WEBHOOK_SECRET is shorter than 16 characters"),
        ({"yclients": {"webhook_secret": ""}}, "FLEET_YCLIENTS__WEBHOOK_SECRET is set but empty"),
        # The fleet-wide webhook secret is for a migration outside production: each salon has its own there.
        (
            {"yclients": {"webhook_secret": "a-long-and-random-fleet-wide-secret"}},
            "FLEET_YCLIENTS__WEBHOOK_SECRET is the fleet-wide webhook secret, not taken in production",
        ),
        ({"yclients": {"partner_token": "abc123"}}, "FLEET_YCLIENTS__PARTNER_TOKEN is shorter than 16 characters"),
        ({"alerts": {"telegram_bot_token": "secret"}}, "FLEET_ALERTS__TELEGRAM_BOT_TOKEN is the example's placeholder"),
        ({"flower_password": "short-pw"}, "FLEET_FLOWER_PASSWORD is shorter than 16 characters"),
        ({"gateway": {"token": ""}}, "FLEET_GATEWAY__TOKEN is set but empty"),
        ({"sentry_dsn": "https://KEY@sentry.example/PROJECT"}, "SENTRY_DSN has no real key"),
        # Passwords inside every URL.
        (
            {"database_url": "postgresql://fleet:pw@db.internal/fleet?sslmode=require"},
            "DATABASE_URL's password is shorter than 16 characters",
        ),
        ({"redis_url": "rediss://:r3dis@redis.internal:6380/0"}, "REDIS_URL's password is shorter than 16 characters"),
        (
            {"pool": {"pooler": "pgbouncer", "session_url": "postgresql://fleet:CHANGE-ME@db/fleet?sslmode=require"}},
            "FLEET_POOL__SESSION_URL has the example's placeholder password",
        ),
        (
            {"pool": {"pooler": "pgbouncer", "session_url": "postgresql://fleet@db/fleet?sslmode=require"}},
            "FLEET_POOL__SESSION_URL has no password",
        ),
        (
            {"replica": {"url": "host=replica.internal user=fleet password=change_me sslmode=require"}},
            "FLEET_REPLICA__URL has the example's placeholder password",
        ),
        # PostgreSQL on another host without TLS.
        ({"database_url": f"postgresql://fleet:{LONG_SECRET}@db.internal/fleet"}, "DATABASE_URL reaches PostgreSQL"),
        (
            {"database_url": f"postgresql://fleet:{LONG_SECRET}@db.internal/fleet?sslmode=prefer"},
            "DATABASE_URL reaches PostgreSQL on another host without TLS: add sslmode=require",
        ),
        (
            {"database_url": f"host=/run/postgresql,db.internal user=fleet password={LONG_SECRET}"},
            "DATABASE_URL reaches PostgreSQL on another host without TLS",
        ),
        (
            {"pool": {"pooler": "pgbouncer", "session_url": f"postgresql://fleet:{LONG_SECRET}@10.0.0.2/fleet"}},
            "FLEET_POOL__SESSION_URL reaches PostgreSQL on another host without TLS",
        ),
        (
            {"replica": {"url": f"postgresql://fleet:{LONG_SECRET}@replica.internal/fleet?sslmode=allow"}},
            "FLEET_REPLICA__URL reaches PostgreSQL on another host without TLS",
        ),
        # Plain http to another machine.
        ({"gateway": {"send_url": "http://gateway.internal:3000/send"}}, "FLEET_GATEWAY__SEND_URL is not an https://"),
        ({"yclients": {"base_url": "http://api.yclients.com/api/v1"}}, "FLEET_YCLIENTS__BASE_URL is not an https://"),
        (
            {"alerts": {"telegram_api_url": "http://api.telegram.org"}},
            "FLEET_ALERTS__TELEGRAM_API_URL is not an https://",
        ),
        ({"sentry_dsn": "http://0f1e2d3c4b5a69788796a5b4c3d2e1f0@sentry.internal/1"}, "SENTRY_DSN is not an https://"),
    ],
)
def test_production_refuses_each_unsafe_value_by_name(unsafe: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)) as caught:
        load_settings(**{**COMPLETE_PRODUCTION, **unsafe})
    assert str(caught.value).count("production settings unsafe") == 1


@pytest.mark.parametrize(
    "safe",
    [
        {"health": {"address": "127.0.0.1"}},
        {"health": {"address": "::1"}},
        {"health": {"address": "localhost"}},
        {"health": {"address": "127.0.0.2"}},
        {"health": {"address": "0", "token": LONG_SECRET}},
        {"database_url": f"postgresql://fleet:{LONG_SECRET}@127.0.0.1:5432/fleet"},
        {"database_url": f"postgresql://fleet:{LONG_SECRET}@localhost/fleet"},
        {"database_url": f"postgresql://fleet:{LONG_SECRET}@[::1]/fleet"},
        {"database_url": f"postgresql://fleet:{LONG_SECRET}@/fleet?host=/var/run/postgresql"},
        {"database_url": f"dbname=fleet user=fleet password={LONG_SECRET}"},
        {"database_url": f"postgresql://fleet:{LONG_SECRET}@db.internal/fleet?sslmode=require"},
        {"replica": {"url": f"postgresql://fleet:{LONG_SECRET}@replica.internal/fleet?sslmode=verify-ca"}},
        {"gateway": {"token": LONG_SECRET, "send_url": "http://127.0.0.1:3000/send"}},
        {"gateway": {"token": LONG_SECRET, "send_url": "https://gateway.internal/send"}},
        {"yclients": {"base_url": "http://localhost:8089/api/v1"}},
        {"alerts": {"telegram_api_url": "http://127.0.0.1:8091", "telegram_bot_token": "123456:" + LONG_SECRET}},
    ],
)
def test_production_accepts_what_stays_on_this_machine_or_is_protected(safe: dict) -> None:
    load_settings(**{**COMPLETE_PRODUCTION, **safe})


def _secret_fields(model: type[BaseModel], prefix: str = "FLEET_") -> list[tuple[tuple[str, ...], str]]:
    """Every SecretStr field of the model, by path and by variable: a secret added later is tested too."""
    found: list[tuple[tuple[str, ...], str]] = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found += [
                ((name, *path), var) for path, var in _secret_fields(info.annotation, f"{prefix}{name.upper()}__")
            ]
        elif info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation):
            aliases = getattr(info.validation_alias, "choices", None)
            found.append(((name,), aliases[0] if aliases else f"{prefix}{name.upper()}"))
    return found


URL_SECRETS = {"DATABASE_URL", "REDIS_URL", "SENTRY_DSN", "FLEET_POOL__SESSION_URL", "FLEET_REPLICA__URL"}


@pytest.mark.parametrize(
    ("path", "variable"), [field for field in _secret_fields(Settings) if field[1] not in URL_SECRETS]
)
def test_every_secret_is_refused_as_a_placeholder_or_short(path: tuple[str, ...], variable: str) -> None:
    for value, named in (("CHANGE-ME", "is the example's placeholder"), ("a" * 15, "is shorter than 16")):
        unsafe: dict = {path[-1]: value}
        for part in reversed(path[:-1]):
            unsafe = {part: {**COMPLETE_PRODUCTION.get(part, {}), **unsafe}}
        with pytest.raises(SettingsError, match=re.escape(f"{variable} {named}")):
            load_settings(**{**COMPLETE_PRODUCTION, **unsafe})


def test_every_url_secret_is_checked_where_it_holds_a_password() -> None:
    assert {variable for _, variable in _secret_fields(Settings)} >= URL_SECRETS
    with pytest.raises(SettingsError) as caught:
        load_settings(
            **{
                **COMPLETE_PRODUCTION,
                "database_url": "postgresql://fleet:CHANGE-ME@db.internal/fleet",
                "redis_url": "rediss://:CHANGE-ME@redis.internal:6380/0",
                "pool": {"pooler": "pgbouncer", "session_url": "postgresql://fleet:CHANGE-ME@db/fleet"},
                "replica": {"url": "postgresql://fleet:CHANGE-ME@replica/fleet"},
                "health": {"address": "0"},
                "gateway": {"token": LONG_SECRET, "send_url": "http://gateway.internal/send"},
            }
        )
    message = str(caught.value)
    for named in (
        "DATABASE_URL has the example's placeholder password",
        "DATABASE_URL reaches PostgreSQL on another host without TLS",
        "REDIS_URL has the example's placeholder password",
        "FLEET_POOL__SESSION_URL has the example's placeholder password",
        "FLEET_POOL__SESSION_URL reaches PostgreSQL on another host without TLS",
        "FLEET_REPLICA__URL has the example's placeholder password",
        "FLEET_REPLICA__URL reaches PostgreSQL on another host without TLS",
        "FLEET_HEALTH__ADDRESS='0'",
        "FLEET_GATEWAY__SEND_URL is not an https://",
    ):
        assert named in message  # all at once, so the operator fixes them in one pass
    assert "CHANGE-ME" not in message


def test_the_example_environment_file_is_refused_until_its_placeholders_are_replaced() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "ops" / "systemd" / "fleet.env.example"
    values = dict(line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#"))
    assert "CHANGE-ME" in values["DATABASE_URL"]
    with pytest.raises(SettingsError) as caught:
        load_settings(
            environment="production",
            database_url=values["DATABASE_URL"],
            redis_url=values["REDIS_URL"],
            sentry_dsn=values["SENTRY_DSN"],
            flower_user=values["FLEET_FLOWER_USER"],
            flower_password=values["FLEET_FLOWER_PASSWORD"],
            gateway={"token": values["FLEET_GATEWAY__TOKEN"]},
        )
    for named in ("DATABASE_URL", "REDIS_URL", "FLEET_FLOWER_PASSWORD", "FLEET_GATEWAY__TOKEN"):
        assert f"{named} has the example's placeholder" in str(caught.value) or f"{named} is the example's" in str(
            caught.value
        )
    assert "SENTRY_DSN has no real key" in str(caught.value)
    assert "TLS" not in str(caught.value)  # the example's hosts are reached over TLS already
    # With its placeholders replaced, the example is a production configuration the fleet accepts.
    real = {name: value.replace("CHANGE-ME", LONG_SECRET) for name, value in values.items()}
    load_settings(
        environment="production",
        database_url=real["DATABASE_URL"],
        redis_url=real["REDIS_URL"],
        sentry_dsn=real["SENTRY_DSN"].replace("KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        flower_user=real["FLEET_FLOWER_USER"],
        flower_password=real["FLEET_FLOWER_PASSWORD"],
        gateway={"token": real["FLEET_GATEWAY__TOKEN"]},
    )


def test_flower_is_never_half_protected_in_any_environment() -> None:
    with pytest.raises(SettingsError, match="must be set together"):
        load_settings(environment="development", flower_user="ops", flower_password=None)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"database_url": "postgresql://fleet@db/fleet"}, "DATABASE_URL has no password"),
        ({"sentry_dsn": None}, "SENTRY_DSN is not set"),
        ({"flower_user": None}, "FLEET_FLOWER_USER is not set"),
        ({"flower_password": None}, "FLEET_FLOWER_PASSWORD is not set"),
    ],
)
def test_production_names_each_single_missing_setting(missing: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        load_settings(**{**COMPLETE_PRODUCTION, **missing})
    assert str(caught.value).count("is not set") + str(caught.value).count("has no password") == 1


def test_secrets_never_appear_in_repr_or_errors() -> None:
    settings = load_settings(**COMPLETE_PRODUCTION)
    shown = repr(settings) + str(settings.model_dump())
    assert "s3cret-pw" not in shown
    assert "flower-pw" not in shown
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**COMPLETE_PRODUCTION, "flower_user": None})
    assert "s3cret-pw" not in str(caught.value)


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_WORKERS__INBOUND__CONCURRENCY", "5")
    monkeypatch.setenv("FLEET_POOL__MAX_SIZE", "2")
    monkeypatch.setenv("FLEET_YCLIENTS__COMPANY_IDS", "[962302, 1]")
    settings = load_settings()
    assert settings.workers.of(WorkerType.INBOUND).concurrency == 5
    assert settings.pool.max_size == 2
    assert settings.yclients.company_ids == [962302, 1]


def test_time_limits_must_nest_below_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_WORKERS__BACKUPS__VISIBILITY_TIMEOUT", "3000")
    with pytest.raises(SettingsError, match=r"workers\.backups.*soft_time_limit < time_limit < visibility_timeout"):
        load_settings()


def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("FLEET_POOL__MIN_SIZE", "5")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "timezone: unknown timezone 'Mars/Olympus'" in str(caught.value)
    assert "pool: pool min_size 5 exceeds max_size 3" in str(caught.value)
