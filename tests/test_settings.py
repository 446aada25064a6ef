"""Settings: typed, validated, secrets hidden, production refuses to start incomplete."""

from __future__ import annotations

import pytest

from shared.settings import SettingsError, WorkerType, load_settings

COMPLETE_PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://fleet:s3cret-pw@db.internal:5432/fleet",
    "sentry_dsn": "https://key@sentry.example/1",
    "flower_user": "ops",
    "flower_password": "flower-pw",
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
