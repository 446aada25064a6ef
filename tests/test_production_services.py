"""Production runs only on services that keep its data: `fleet check` refuses a broker Redis without the
append-only file (a restart would lose every queued message), and ops/bootstrap.sh starts no PostgreSQL or
Redis for it (what it starts elsewhere has no password, no TLS and no persistence)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from pydantic import SecretStr

from shared.core.preflight import PreflightReport, check_redis, run_preflight
from shared.core.settings import Settings
from tests.support.processes import ROOT
from tests.support.redis_server import OwnRedis, free_port

SECRET = "7f3e9a1b5c2d8e4f6a0b"
PRODUCTION = {
    "FLEET_ENVIRONMENT": "production",
    "SENTRY_DSN": "https://0f1e2d3c4b5a69788796a5b4c3d2e1f0@sentry.example/1",
    "FLEET_FLOWER_USER": "ops",
    "FLEET_FLOWER_PASSWORD": SECRET,
    "FLEET_GATEWAY__TOKEN": SECRET,
}
APPENDONLY_PROBLEM = "Redis keeps the broker's queues without the append-only file"


def _in_production(settings: Settings, redis_url: str | None = None) -> Settings:
    """The test's settings as production would judge them (copied, so the settings' own validation is skipped)."""
    update: dict[str, object] = {"environment": "production"}
    if redis_url is not None:
        update["redis_url"] = SecretStr(redis_url)
    return settings.model_copy(update=update)


def _with_password(url: str) -> str:
    """The test database's URL with a password (the local server trusts 127.0.0.1 and ignores it)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{SECRET}@{host}"))


@contextmanager
def _redis_server(directory: Path, *options: str) -> Iterator[int]:
    """A Redis of this test's own on a free port, with a password and the given options; stopped afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    argv += ["--requirepass", SECRET, "--save", "", "--logfile", str(directory / "redis.log"), *options]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password=SECRET, socket_timeout=0.5).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the test's own Redis did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_fleet_check_in_production_refuses_the_local_redis_that_keeps_nothing_on_disk(
    settings: Settings, migrated: str, clean_redis: str
) -> None:
    if redis.Redis.from_url(clean_redis).config_get("appendonly").get("appendonly") == "yes":
        pytest.skip("this machine's Redis keeps an append-only file")
    report = run_preflight(_in_production(settings))
    assert not report.ok
    assert [problem for problem in report.problems if APPENDONLY_PROBLEM not in problem] == []  # nothing else
    (problem,) = report.problems
    assert "a restart loses every queued message" in problem
    assert "`appendonly yes` in redis.conf" in problem
    assert "Redis persistence: appendonly no, RDB snapshots off" in report.render()

    # Outside production the same Redis is a warning: development machines and the test suite run on it.
    report = run_preflight(settings)
    assert report.ok, report.render()
    assert f"warning: {APPENDONLY_PROBLEM}" in report.render()


def test_a_redis_with_the_append_only_file_passes_in_production(settings: Settings, tmp_path: Path) -> None:
    own = OwnRedis(tmp_path / "redis")
    own.start()
    try:
        report = PreflightReport()
        check_redis(_in_production(settings, own.url), report)
    finally:
        own.stop()
    assert report.ok, report.render()
    assert "Redis persistence: appendonly yes, RDB snapshots off" in report.lines


def test_a_redis_with_config_disabled_is_judged_by_info(settings: Settings, tmp_path: Path) -> None:
    """Managed Redis often disables CONFIG: the check says so and reads INFO persistence instead of crashing."""
    url = f"redis://:{SECRET}@127.0.0.1:{{port}}/0"
    with _redis_server(tmp_path / "without-aof", "--rename-command", "CONFIG", "", "--appendonly", "no") as port:
        refused = PreflightReport()
        check_redis(_in_production(settings, url.format(port=port)), refused)
    with _redis_server(tmp_path / "with-aof", "--rename-command", "CONFIG", "", "--appendonly", "yes") as port:
        passed = PreflightReport()
        check_redis(_in_production(settings, url.format(port=port)), passed)
    assert "Redis: reachable; CONFIG is disabled, confirm maxmemory-policy noeviction by hand" in refused.lines
    assert "Redis persistence: aof_enabled 0 (from INFO persistence: CONFIG is disabled)" in refused.lines
    (problem,) = refused.problems
    assert APPENDONLY_PROBLEM in problem
    assert "appendonly yes" in problem
    assert passed.ok, passed.render()
    assert "Redis persistence: aof_enabled 1 (from INFO persistence: CONFIG is disabled)" in passed.lines


def test_the_fleet_check_command_exits_non_zero_in_production_without_persistence(
    settings: Settings, migrated: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    with _redis_server(tmp_path / "redis", "--appendonly", "no") as port:
        env = {
            **fleet_env,
            **PRODUCTION,
            "DATABASE_URL": _with_password(settings.database_conninfo),
            "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{port}/0",
        }
        result = subprocess.run(
            [sys.executable, "-m", "workers.cli", "check"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "environment: production" in result.stdout
    assert f"PROBLEM: {APPENDONLY_PROBLEM}" in result.stdout
    assert "1 problem(s) found" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def _bootstrap_root(tmp_path: Path) -> Path:
    """ops/bootstrap.sh in a checkout of its own whose .venv is current and runs this one's. The script is the
    same; ops/services.sh (which starts services) is a stand-in that leaves a mark, so a refusal that failed to
    happen starts nothing, and nothing is reinstalled in the real checkout."""
    root = tmp_path / "checkout"
    (root / "ops").mkdir(parents=True)
    shutil.copy2(ROOT / "ops" / "bootstrap.sh", root / "ops" / "bootstrap.sh")
    (root / "ops" / "services.sh").write_text('touch "$(dirname "$0")/services-ran"\nexit 1\n')
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy2(ROOT / name, root / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for program in ("python", "fleet"):
        (bin_dir / program).write_text(f'#!/bin/sh\nexec "{ROOT / ".venv" / "bin" / program}" "$@"\n')
        (bin_dir / program).chmod(0o755)
    locked = (root / "pyproject.toml").read_bytes() + (root / "requirements.lock").read_bytes()
    (root / ".venv" / ".fleet-installed").write_text(hashlib.sha256(locked).hexdigest() + "\n")
    return root


def _bootstrap(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith(("FLEET_", "PYTEST"))}
    for name in ("DATABASE_URL", "REDIS_URL", "SENTRY_DSN"):
        base.pop(name, None)
    return subprocess.run(
        ["bash", "ops/bootstrap.sh"], cwd=root, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("named_in", ["environment", ".env"])
def test_bootstrap_in_production_starts_nothing_and_names_what_is_down(tmp_path: Path, named_in: str) -> None:
    root = _bootstrap_root(tmp_path)
    pg_port, redis_port = free_port(), free_port()
    env = {
        **PRODUCTION,
        "DATABASE_URL": f"postgresql://fleet:{SECRET}@127.0.0.1:{pg_port}/fleet",
        "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{redis_port}/0",
    }
    if named_in == ".env":  # set up as the settings read it, not exported to the shell
        (root / ".env").write_text("FLEET_ENVIRONMENT=production\n")
        del env["FLEET_ENVIRONMENT"]
    result = _bootstrap(root, env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"PostgreSQL at 127.0.0.1:{pg_port} is not reachable: start it, or correct DATABASE_URL" in result.stderr
    assert f"Redis at 127.0.0.1:{redis_port} is not reachable" in result.stderr
    assert "FLEET_ENVIRONMENT=production: bootstrap starts no service here" in result.stderr
    assert "starting" not in result.stdout + result.stderr
    assert not (root / "ops" / "services-ran").exists()
    assert not _listening(pg_port)
    assert not _listening(redis_port)
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.slow
def test_bootstrap_in_production_uses_running_services_as_they_are(
    tmp_path: Path, settings: Settings, migrated: str, clean_redis: str
) -> None:
    root = _bootstrap_root(tmp_path)
    redis_port = urlsplit(clean_redis).port or 6379
    env = {
        **PRODUCTION,
        "DATABASE_URL": _with_password(settings.database_conninfo),
        "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{redis_port}/0",  # only its port is tried: it listens
    }
    result = _bootstrap(root, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using PostgreSQL and Redis as they run (FLEET_ENVIRONMENT=production: bootstrap starts none)" in (
        result.stdout
    )
    assert f"database {settings.database_name} is at revision" in result.stdout
    assert not (root / "ops" / "services-ran").exists()


@pytest.mark.slow
def test_bootstrap_outside_production_still_makes_sure_of_the_services(tmp_path: Path) -> None:
    """Development and test machines keep the one-command set-up: ops/services.sh is still run for them."""
    root = _bootstrap_root(tmp_path)
    result = _bootstrap(root, {"FLEET_ENVIRONMENT": "development"})
    assert result.returncode != 0  # the stand-in of ops/services.sh fails
    assert (root / "ops" / "services-ran").exists()
