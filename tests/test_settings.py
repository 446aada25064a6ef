"""Settings: typed, validated, secrets hidden, production refuses to start incomplete."""

from __future__ import annotations

import pytest

from shared.core.settings import SettingsError, WorkerType, load_settings

COMPLETE_PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://fleet:s3cret-pw@db.internal:5432/fleet",
    "redis_url": "rediss://:r3dis-pw@redis.internal:6380/0",
    "sentry_dsn": "https://key@sentry.example/1",
    "flower_user": "ops",
    "flower_password": "flower-pw",
    "gateway": {"token": "gateway-t0ken"},
}


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
        ({"redis_url": "redis://:r3dis-pw@redis.internal:6379/0"}, "REDIS_URL reaches another host without TLS"),
        ({"flower_password": "CHANGE-ME"}, "FLEET_FLOWER_PASSWORD is the example's placeholder"),
        ({"health": {"address": "0.0.0.0"}}, "the health service listens on every address without FLEET_HEALTH__TOKEN"),
        ({"gateway": {"token": None}}, "FLEET_GATEWAY__TOKEN is not set"),
        ({"gateway": {"token": "change-me"}}, "FLEET_GATEWAY__TOKEN is the example's placeholder"),
    ],
)
def test_production_refuses_placeholders_and_open_services(unsafe: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(**{**COMPLETE_PRODUCTION, **unsafe})


def test_production_accepts_a_local_redis_with_a_password_and_an_open_health_service_with_a_token() -> None:
    settings = load_settings(
        **{
            **COMPLETE_PRODUCTION,
            "redis_url": "redis://:r3dis-pw@127.0.0.1:6379/0",
            "health": {"address": "0.0.0.0", "token": "h3alth-token"},
        }
    )
    assert settings.health.token is not None


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
