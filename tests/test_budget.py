"""The connection budget: computed from settings, shown as arithmetic, and enforced before start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.core.budget import BudgetExceeded, connection_budget, require_budget
from shared.core.settings import SettingsError, load_settings
from tests.support.processes import ROOT


def test_default_fleet_fits_its_budget() -> None:
    budget = connection_budget(load_settings())
    # 2x3 inbound + 2x3 yclients (one child kept for CRM writes) + 1x3 keys + 1x3 backups + beat 1 + flower 0
    # + health service 1 + reserved 4
    assert budget.total == 24
    assert budget.fits
    assert "total                        24  (limit 25: fits)" in budget.explain()


def test_budget_counts_every_process_of_every_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_WORKERS__YCLIENTS__CONCURRENCY", "4")
    monkeypatch.setenv("FLEET_POOL__MAX_SIZE", "2")
    budget = connection_budget(load_settings())
    lines = {line.name: line.connections for line in budget.lines}
    assert lines["worker yclients"] == 8
    assert budget.total == 2 * 2 + 4 * 2 + 2 + 2 + 1 + 0 + 1 + 4


def test_behind_pgbouncer_the_budget_counts_what_reaches_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty inbound processes with pools of 20 fit behind a pooler: PostgreSQL sees its server pool and one
    session connection per inbound child, not 400 connections."""
    monkeypatch.setenv("FLEET_WORKERS__INBOUND__CONCURRENCY", "20")
    monkeypatch.setenv("FLEET_POOL__MAX_SIZE", "20")
    monkeypatch.setenv("FLEET_BUDGET__LIMIT", "40")
    monkeypatch.setenv("FLEET_POOL__POOLER", "pgbouncer")
    monkeypatch.setenv("FLEET_POOL__SESSION_URL", "postgresql://fleet@db.internal:5432/fleet")
    budget = require_budget(load_settings())
    assert {line.name: line.connections for line in budget.lines} == {
        "PgBouncer server pool": 10,
        "session: inbound answering locks": 20,
        "session: backup (pg_dump)": 2,
        "reserved": 4,
    }
    assert budget.total == 36


def test_a_pooler_without_a_session_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_POOL__POOLER", "pgbouncer")
    with pytest.raises(SettingsError, match="FLEET_POOL__POOLER needs FLEET_POOL__SESSION_URL"):
        load_settings()


def test_oversized_fleet_is_refused_with_the_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_WORKERS__INBOUND__CONCURRENCY", "7")
    monkeypatch.setenv("FLEET_POOL__MAX_SIZE", "20")
    with pytest.raises(BudgetExceeded) as caught:
        require_budget(load_settings())
    message = str(caught.value)
    assert "worker inbound     7 x 20 =  140" in message
    assert "EXCEEDS the limit by" in message


def _fleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_fleet_check_passes_on_the_test_services(fleet_env: dict[str, str], migrated: str) -> None:
    result = _fleet("check", env=fleet_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    assert "schema: at revision" in result.stdout


def test_fleet_check_exits_non_zero_on_an_oversized_fleet(fleet_env: dict[str, str], migrated: str) -> None:
    env = {**fleet_env, "FLEET_WORKERS__INBOUND__CONCURRENCY": "10"}
    result = _fleet("check", env=env)
    assert result.returncode == 1
    assert "worker inbound    10 x  3 =   30" in result.stdout
    assert "PROBLEM: connection budget 48 exceeds the limit 25" in result.stdout


def test_fleet_check_rejects_a_limit_above_the_server(fleet_env: dict[str, str], migrated: str) -> None:
    result = _fleet("check", env={**fleet_env, "FLEET_BUDGET__LIMIT": "100000"})
    assert result.returncode == 1
    assert "exceeds what the server allows" in result.stdout


def test_a_worker_refuses_to_start_over_budget(fleet_env: dict[str, str]) -> None:
    env = {**fleet_env, "FLEET_POOL__MAX_SIZE": "30"}
    result = _fleet("worker", "inbound", env=env)
    assert result.returncode == 2
    assert "refusing to start" in result.stderr
    assert "worker inbound     2 x 30 =   60" in result.stderr


def test_invalid_settings_stop_the_cli_with_every_problem(fleet_env: dict[str, str]) -> None:
    env = {**fleet_env, "FLEET_ENVIRONMENT": "production", "DATABASE_URL": "postgresql://fleet@db/fleet"}
    result = _fleet("check", "--offline", env=env)
    assert result.returncode == 2
    assert "DATABASE_URL has no password" in result.stderr
    assert "SENTRY_DSN is not set" in result.stderr
