"""Checks run before the fleet starts (`fleet check`, and each launcher): every problem, listed at once."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field

import psycopg
import redis

from shared.core.budget import connection_budget
from shared.core.migrate import current_revision, head_revision
from shared.core.settings import BackupSettings, Settings


@dataclass
class PreflightReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        out = list(self.lines)
        out += [f"PROBLEM: {problem}" for problem in self.problems]
        out.append("all checks passed" if self.ok else f"{len(self.problems)} problem(s) found")
        return "\n".join(out)


def check_pooler(settings: Settings, report: PreflightReport) -> None:
    """Through a transaction-mode pooler the pool sends no start-up options: the role's own statement timeout
    is the only one, so a missing one is said here."""
    try:
        with psycopg.connect(settings.database_conninfo, connect_timeout=5, prepare_threshold=None) as conn:
            row = conn.execute("SELECT current_setting('statement_timeout'), current_user").fetchone()
    except psycopg.Error as exc:
        report.problems.append(f"the pooler at DATABASE_URL is unreachable ({type(exc).__name__}): {exc}".strip())
        return
    assert row is not None
    timeout, user = row
    report.lines.append(f"{settings.pool.pooler}: reachable at DATABASE_URL; statement_timeout there: {timeout}")
    if timeout in ("0", "0ms"):
        report.lines.append(
            f"warning: no statement timeout through the pooler: ALTER ROLE {user} SET statement_timeout ="
            f" '{settings.pool.statement_timeout_ms}ms'"
        )


def check_database(settings: Settings, report: PreflightReport, budget_total: int) -> None:
    try:
        with psycopg.connect(settings.session_conninfo, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT current_setting('max_connections')::int,"
                " current_setting('superuser_reserved_connections')::int,"
                " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
            ).fetchone()
    except psycopg.Error as exc:
        report.problems.append(f"PostgreSQL unreachable ({type(exc).__name__}): {exc}".strip())
        return
    assert row is not None
    max_connections, superuser_reserved, in_use = row
    available = max_connections - superuser_reserved
    report.lines.append(
        f"PostgreSQL: max_connections {max_connections} ({superuser_reserved} reserved for superusers),"
        f" {in_use} client connections open now"
    )
    if settings.budget.limit > available:
        report.problems.append(
            f"FLEET_BUDGET__LIMIT {settings.budget.limit} exceeds what the server allows ({available})"
        )
    elif budget_total > available - in_use:
        report.lines.append(
            f"warning: only {available - in_use} connections are free now; the fleet may take {budget_total}"
        )
    if settings.pool.pooler != "none":
        check_pooler(settings, report)
    revision, head = current_revision(settings.session_conninfo), head_revision()
    if revision != head:
        report.problems.append(f"schema at revision {revision}, code expects {head}: run `fleet migrate`")
    else:
        report.lines.append(f"schema: at revision {revision}")


def check_redis(settings: Settings, report: PreflightReport) -> None:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        report.problems.append(f"Redis unreachable ({type(exc).__name__}): {exc}")
        return
    version = str(client.info("server").get("redis_version", "0"))
    if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < (6, 2):
        report.problems.append(f"Redis {version} is too old: workers pop with BLMOVE (Redis 6.2 or newer)")
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:  # managed Redis often disables CONFIG; the operator must confirm by hand
        report.lines.append("Redis: reachable; CONFIG is disabled, confirm maxmemory-policy noeviction by hand")
    else:
        report.lines.append(f"Redis: reachable, maxmemory-policy {policy}")
        if policy not in (None, "noeviction"):
            report.problems.append(
                f"Redis maxmemory-policy is {policy}: broker keys could be evicted; set it to noeviction"
            )
    check_redis_persistence(settings, client, report)


APPENDONLY_FIX = (
    "turn on the append-only file: `appendonly yes` in redis.conf (on a running Redis: CONFIG SET appendonly yes,"
    " then CONFIG REWRITE), or the managed service's AOF persistence"
)


def check_redis_persistence(settings: Settings, client: redis.Redis, report: PreflightReport) -> None:
    """The queues live in the broker's Redis: without the append-only file a restart loses every message queued
    since the last RDB snapshot (all of them without one). Production refuses that; elsewhere it is a warning."""
    snapshots: str | None = None  # unknown where CONFIG is disabled
    try:
        appendonly = client.config_get("appendonly").get("appendonly") == "yes"
        snapshots = client.config_get("save").get("save") or ""
        seen = f"appendonly {'yes' if appendonly else 'no'}, RDB snapshots {snapshots or 'off'}"
    except redis.ResponseError:  # CONFIG disabled (managed Redis): INFO still tells whether the AOF is on
        try:
            appendonly = int(client.info("persistence").get("aof_enabled", 0)) == 1
        except redis.ResponseError:
            report.lines.append(
                "warning: Redis: CONFIG and INFO are disabled, so its persistence is unknown:"
                " confirm `appendonly yes` by hand (a restart without it loses the queued messages)"
            )
            return
        seen = f"aof_enabled {int(appendonly)} (from INFO persistence: CONFIG is disabled)"
    report.lines.append(f"Redis persistence: {seen}")
    if appendonly:
        return
    lost = "every queued message" if snapshots == "" else "every message queued since the last snapshot"
    problem = f"Redis keeps the broker's queues without the append-only file: a restart loses {lost}; {APPENDONLY_FIX}"
    if settings.environment == "production":
        report.problems.append(problem)
    else:
        report.lines.append(f"warning: {problem}")


def check_backup_tools(report: PreflightReport) -> None:
    """Backups are compressed by the zstd program: without it every backup fails (loudly, but only at 04:00)."""
    if shutil.which("zstd") is None:
        report.lines.append("warning: zstd is not installed, so backups will fail (Debian: apt install zstd)")


def offsite_encryption_problems(backup: BackupSettings) -> list[str]:
    """Off-site copies are only ever encrypted: without gpg or a readable passphrase every backup fails (and
    only at 04:00), and a passphrase file others can read protects nothing. The backup checks the same first."""
    if backup.offsite_directory is None:
        return []
    problems = []
    if shutil.which("gpg") is None:
        problems.append(
            "gpg is not installed, and off-site backup copies are encrypted with it (Debian: apt install gpg)"
        )
    passphrase = backup.offsite_passphrase_file
    if passphrase is None:
        problems.append(
            "FLEET_BACKUP__OFFSITE_DIRECTORY is set without FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE: off-site copies"
            " are only ever encrypted, so none would be made"
        )
        return problems
    where = f"the off-site passphrase file {passphrase} (FLEET_BACKUP__OFFSITE_PASSPHRASE_FILE)"
    try:
        mode = passphrase.stat().st_mode
        if not stat.S_ISREG(mode):
            problems.append(f"{where} is not a regular file")
        elif mode & 0o077:
            problems.append(f"{where} has mode {stat.S_IMODE(mode):04o}: others may read it; chmod 600 it (owner only)")
        else:
            with passphrase.open("rb") as stream:
                if not stream.readline().strip(b"\r\n"):
                    problems.append(f"{where} is empty: gpg reads the passphrase from its first line")
    except FileNotFoundError:
        problems.append(f"{where} does not exist")
    except OSError as exc:
        problems.append(f"{where} cannot be read by this user (uid {os.geteuid()}): {exc.strerror}")
    return problems


def check_offsite_encryption(settings: Settings, report: PreflightReport) -> None:
    problems = offsite_encryption_problems(settings.backup)
    report.problems.extend(problems)
    if settings.backup.offsite_directory is not None and not problems:
        report.lines.append(
            f"off-site backups: encrypted with gpg before they leave, passphrase file"
            f" {settings.backup.offsite_passphrase_file} readable by its owner only"
        )


def run_preflight(settings: Settings, *, services: bool = True) -> PreflightReport:
    report = PreflightReport()
    report.lines.append(f"environment: {settings.environment}")
    budget = connection_budget(settings)
    report.lines.append(budget.explain())
    if not budget.fits:
        report.problems.append(
            f"connection budget {budget.total} exceeds the limit {budget.limit}: lower worker concurrency or"
            " pool max, or raise FLEET_BUDGET__LIMIT"
        )
    if services:
        check_database(settings, report, budget.total)
        check_redis(settings, report)
    check_backup_tools(report)
    check_offsite_encryption(settings, report)
    return report
