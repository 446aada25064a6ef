"""One check per part of the fleet, each returning a status and the figures behind it (no personal data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import redis
from celery.schedules import crontab

from shared.assistant.model.ledger import Ledger
from shared.core import replica
from shared.core.budget import connection_budget, connections_by_role
from shared.core.kombu_contract import unacked_keys
from shared.core.refused_writes import refusal_code
from shared.core.settings import Settings
from shared.core.topology import QUEUE_OF_WORKER, Queue
from shared.data import dead_letters
from shared.data.dead_letters import SPOOL_KEY
from shared.data.errors import DataLayerError
from shared.data.repositories.alerts import AlertRepository
from shared.data.repositories.backups import BackupRepository
from shared.data.repositories.conversations import OutboxRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.crm_repairs import CrmRepairRepository
from shared.data.repositories.health_checks import HealthCheckRepository
from shared.data.repositories.sync_runs import SyncRunRepository
from shared.data.repositories.webhook_events import WebhookEventRepository
from shared.health.process_stats import read_all
from shared.inbound import lanes
from shared.yclients.sync import ENTITIES
from shared.yclients.timetable import SYNC_RUNS

SEVERITY = {"healthy": 0, "warning": 1, "unhealthy": 2}
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")  # kombu's Redis priority lists


_gaps: dict[str, float] = {}


def largest_gap_hours(schedule: crontab, days: int = 8) -> float:
    """The longest wait between two runs of a crontab over a week (hourly 08-23 waits 9 h overnight)."""
    key = repr(schedule)
    if key not in _gaps:
        _gaps[key] = _largest_gap(schedule, days)
    return _gaps[key]


def _largest_gap(schedule: crontab, days: int) -> float:
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; only the pattern matters, not the date
    runs = []
    for minute in range(days * 24 * 60):
        moment = start + timedelta(minutes=minute)
        if (
            moment.minute in schedule.minute
            and moment.hour in schedule.hour
            and (moment.weekday() + 1) % 7 in schedule.day_of_week
            and moment.day in schedule.day_of_month
            and moment.month in schedule.month_of_year
        ):
            runs.append(moment)
    gaps = [(later - earlier).total_seconds() / 3600 for earlier, later in pairwise(runs)]
    return max(gaps, default=days * 24.0)


def sync_periods() -> dict[str, float]:
    """The longest wait, in hours, between two syncs of each entity, from the times beat schedules them at
    (shared/yclients/timetable.py, the one place they are written)."""
    periods: dict[str, float] = {}
    for run in SYNC_RUNS:
        periods[run.entity] = min(periods.get(run.entity, float("inf")), largest_gap_hours(run.schedule))
    return periods


def worst(statuses: list[str]) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default="healthy")


@dataclass
class Component:
    name: str
    status: str = "healthy"
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def flag(self, status: str, problem: str) -> None:
        self.status = worst([self.status, status])
        self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "problems": self.problems, **self.details}


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def check_heartbeat(settings: Settings) -> Component:
    component = Component("heartbeat")
    age = HealthCheckRepository().seconds_since("heartbeat")
    component.details["seconds_since_heartbeat"] = None if age is None else round(age, 1)
    if age is None:
        component.flag("unhealthy", "no heartbeat recorded yet: is beat running?")
    elif age > settings.health.heartbeat_unhealthy_seconds:
        component.flag("unhealthy", f"no heartbeat for {age:.0f} s: beat or the maintenance worker is down")
    return component


def check_database(settings: Settings, client: redis.Redis) -> Component:
    component = Component("database")
    by_role = connections_by_role()
    budget = connection_budget(settings)
    in_use = sum(by_role.values())
    component.details.update(
        {"connections": by_role, "connections_total": in_use, "budget": budget.total, "limit": budget.limit}
    )
    if in_use > budget.limit:
        component.flag("unhealthy", f"{in_use} fleet connections exceed the limit {budget.limit}")
    processes = []
    for stats in read_all(client):
        pool = stats.get("pool") or {}
        processes.append(
            {
                "role": stats["role"],
                "host": stats["host"],
                "pid": stats["pid"],
                **{
                    k: pool.get(k)
                    for k in ("size", "idle", "in_use", "waiting", "max", "utilisation_percent", "status")
                },
            }
        )
        if pool.get("status") == "at capacity":
            component.flag("unhealthy", f"pool of {stats['role']} pid {stats['pid']} is at capacity")
        elif pool.get("status") == "high":
            component.flag("warning", f"pool of {stats['role']} pid {stats['pid']} is over 80% in use")
    component.details["pools"] = processes
    verdict = replica.probe(settings)
    if verdict is not None:
        component.details["replica"] = verdict.as_dict()
        if not verdict.usable:
            component.flag("warning", f"replica not used, reads go to the primary: {verdict.reason}")
    return component


def query_metrics_report(client: redis.Redis) -> dict[str, Any]:
    return {f"{s['role']}@{s['host']}:{s['pid']}": s["queries"] for s in read_all(client)}


def queue_depths(client: redis.Redis) -> dict[str, dict[str, int]]:
    depths: dict[str, dict[str, Any]] = {}
    for worker_type, queue in QUEUE_OF_WORKER.items():
        waiting = sum(client.llen(queue.value + suffix) for suffix in PRIORITY_SUFFIXES)
        depths[queue.value] = {
            "waiting": int(waiting),
            "unacked": int(client.hlen(unacked_keys(queue.value).hash)),
            "worker_type": worker_type.value,
        }
    # Inbound work waits in the intake, in the salons' lanes, or dealt out in the ready list.
    by_salon = lanes.backlog(client)
    inbound = depths[Queue.INBOUND.value]
    inbound["intake"] = inbound["waiting"]
    inbound["ready"] = int(client.llen(Queue.INBOUND_READY.value))
    inbound["waiting"] += inbound["ready"] + sum(by_salon.values())
    inbound["backlog_by_salon"] = by_salon
    return depths


WRITE_PROBE_KEY = "fleet:health:write-probe"


def _megabytes(value: Any) -> str:
    return f"{int(value or 0) / 2**20:.1f} MB"


def redis_writes(component: Component, client: redis.Redis) -> None:
    """Whether Redis takes writes, tried with one small write, and why not in figures: over its maxmemory
    (noeviction: the fleet's queues and producers stop), a read-only replica, or unable to persist (MISCONF).
    Within 10 % of its maxmemory is a warning: the refusals are near."""
    memory = client.info("memory")
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    policy = memory.get("maxmemory_policy")
    component.details["redis_memory"] = {"used_bytes": used, "maxmemory_bytes": limit, "policy": policy}
    figures = f"used {_megabytes(used)} of maxmemory {_megabytes(limit)}, policy {policy}"
    try:
        client.set(WRITE_PROBE_KEY, "1", px=60_000)
    except redis.exceptions.ResponseError as exc:
        code = refusal_code(exc)
        if code is None:
            raise
        component.details["redis_writes"] = f"refused ({code})"
        if code == "OOM":
            why = f"out of memory ({figures})"
        elif code == "READONLY":
            role = client.info("replication")
            master = f"{role.get('master_host')}:{role.get('master_port')}"
            why = f"read-only replica (role {role.get('role')}, master {master})"
        else:
            saved = client.info("persistence")
            why = (
                f"cannot persist to disk (last RDB save {saved.get('rdb_last_bgsave_status')}, last AOF write"
                f" {saved.get('aof_last_write_status')}: with stop-writes-on-bgsave-error Redis refuses writes)"
            )
        component.flag("unhealthy", f"Redis refuses writes: {why}")
        return
    component.details["redis_writes"] = "accepted"
    if limit and used >= 0.9 * limit:
        component.flag("warning", f"Redis is near its maxmemory ({figures}): at the limit it refuses writes")


def check_queues(settings: Settings, client: redis.Redis) -> Component:
    component = Component("queues")
    redis_writes(component, client)
    depths = queue_depths(client)
    component.details["queues"] = depths
    spooled = int(client.llen(SPOOL_KEY))
    component.details["dead_letter_spool"] = spooled
    if spooled >= settings.health.queue_warning:
        component.flag("warning", f"{spooled} dead letters parked in Redis, not yet filed (is the keys worker up?)")
    for queue, depth in depths.items():
        waiting = depth["waiting"]
        if waiting >= settings.health.queue_unhealthy:
            component.flag("unhealthy", f"{waiting} messages waiting in {queue}")
        elif waiting >= settings.health.queue_warning:
            component.flag("warning", f"{waiting} messages waiting in {queue}")
    return component


def check_whatsapp() -> Component:
    component = Component("whatsapp")
    rows = HealthCheckRepository().latest_per_subject("whatsapp_session")
    component.details["sessions"] = {
        row["subject"]: {"status": row["status"], "checked_at": row["checked_at"], "problems": row["problems"]}
        for row in rows
    }
    for row in rows:
        if row["status"] != "healthy":
            component.flag(row["status"], f"session of {row['subject']} is {row['status']}")
    return component


def check_backups(settings: Settings) -> Component:
    """The newest verified backup's age, and the latest backup and drill: a failed one stays a problem, with
    its cause, until a later one succeeds. A backup that failed only in its off-site copy is a warning: the
    backups already verified stand (and their age still turns it unhealthy after 50 h)."""
    from shared.backups.offsite import COPY_FAILED  # how the `backups` row of a failed off-site copy begins

    def short(reason: Any) -> str:
        line = " | ".join(part.strip() for part in str(reason or "no reason recorded").splitlines() if part.strip())
        return line if len(line) <= 300 else line[:299] + "…"

    component = Component("backups")
    newest = BackupRepository().newest_verified()
    drill_row = HealthCheckRepository().latest("backup_drill")
    drill = [drill_row] if drill_row else []
    failed = BackupRepository().failed_within_days(7)
    latest = BackupRepository().latest_attempt()
    age = float(newest["age"]) if newest else None
    component.details.update(
        {
            "newest_verified_id": newest["id"] if newest else None,
            "newest_verified_hours": _hours(age),
            "newest_verified_bytes": newest["size_bytes"] if newest else None,
            "failed_last_7_days": failed,
            "last_drill": drill[0]["status"] if drill else None,
            "last_attempt": {"id": latest["id"], "status": latest["status"]} if latest else None,
        }
    )
    if age is None:
        component.flag("unhealthy", "no verified backup exists")
    elif age > settings.health.backup_unhealthy_hours * 3600:
        component.flag("unhealthy", f"the newest verified backup is {age / 3600:.0f} h old")
    elif age > settings.health.backup_warning_hours * 3600:
        component.flag("warning", f"the newest verified backup is {age / 3600:.0f} h old")
    # Until a later backup is verified (with an off-site directory configured, that is a later good copy too).
    if latest and latest["status"] == "failed":
        error = str(latest["error"] or "")
        if error.startswith(COPY_FAILED):
            cause = short(error.removeprefix(COPY_FAILED).lstrip(": "))
            component.flag("warning", f"the last backup ({latest['id']}) failed its off-site copy: {cause}")
        else:
            component.flag("unhealthy", f"the last backup ({latest['id']}) failed: {short(error)}")
    if drill and drill[0]["status"] != "healthy":
        details = drill[0]["details"] or {}
        differences = ", ".join(details.get("differences") or {})
        reason = details.get("error") or (f"row counts differ: {differences}" if differences else None)
        component.flag("unhealthy", f"the last restore drill failed: {short(reason)}")
    return component


def check_sync(settings: Settings) -> Component:
    component = Component("sync")
    ages = SyncRunRepository().seconds_since_success()
    companies = sorted(set(settings.yclients.company_ids) | {company for company, _ in ages})
    report: dict[str, dict[str, float | None]] = {}
    for company in companies:
        report[str(company)] = {}
        for entity in ENTITIES:
            age = ages.get((company, entity))
            report[str(company)][entity] = _hours(age)
            period = sync_periods()[entity] * 3600  # stale after 2.5 such periods, warning after 1.5
            if age is None:
                if company in settings.yclients.company_ids:
                    component.flag("unhealthy", f"{entity} of company {company} has never synced")
            elif age > 2.5 * period:
                component.flag("unhealthy", f"{entity} of company {company} is stale ({age / 3600:.1f} h)")
            elif age > 1.5 * period:
                component.flag("warning", f"{entity} of company {company} is late ({age / 3600:.1f} h)")
    failing = SyncRunRepository().failed_within_hours(24)
    partial = SyncRunRepository().partial_within_hours(24)
    component.details.update(
        {"hours_since_success": report, "failed_runs_last_day": failing, "partial_runs_last_day": partial}
    )
    # A partial run read less than YClients claimed (a server that ignores `page`, a total_count its pages do not
    # hold): what it read is saved, but the salon's data may be incomplete until a run succeeds again.
    for row in SyncRunRepository().still_partial(24):
        component.flag("warning", f"{row['entity']} of company {row['company_id']} ended {row['error']}")
    return component


def _backlog(row: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """A work table's backlog (shared/data/work_rows.py) as the report shows it, and the oldest pending row's
    age in seconds."""
    oldest = row["oldest_pending_seconds"]
    shown = {
        "pending": row["pending"],
        "failed": row["failed"],
        "oldest_pending_seconds": None if oldest is None else round(oldest, 1),
    }
    return shown, oldest


def check_outbox(settings: Settings) -> Component:
    component = Component("outbox")
    shown, oldest = _backlog(OutboxRepository().backlog())
    letters = dead_letters.counts()
    component.details.update(
        {
            **shown,
            "dead_letters_total": letters["total"],
            "dead_letters_last_day": letters["day"],
        }
    )
    if oldest is not None and oldest > settings.health.outbox_stuck_minutes * 60:
        component.flag("unhealthy", f"a reply has waited {oldest / 60:.0f} min for delivery")
    if letters["day"] >= settings.health.dead_letters_warning_per_day:
        component.flag("warning", f"{letters['day']} dead letters in the last day")
    if settings.alerts.enabled:
        waiting = AlertRepository().backlog()
        component.details.update(
            {"alerts_pending": waiting["pending"], "alerts_given_up_last_day": waiting["failed_last_day"]}
        )
        oldest_alert = waiting["oldest_pending_seconds"]
        if oldest_alert is not None and oldest_alert > settings.health.outbox_stuck_minutes * 60:
            minutes = oldest_alert / 60
            component.flag("warning", f"an alert has waited {minutes:.0f} min for Telegram (token, chat, network?)")
        if waiting["failed_last_day"]:
            component.flag("warning", f"{waiting['failed_last_day']} alerts could not be delivered to Telegram")
    return component


def check_crm(settings: Settings) -> Component:
    """Chat bookings on their way to YClients, and webhooks on their way in."""
    component = Component("crm")
    shown, oldest = _backlog(CrmOperationRepository().backlog())
    waiting = WebhookEventRepository().backlog()
    repairs = CrmRepairRepository().last_day()
    component.details.update(
        {
            **shown,
            "webhooks_unprocessed": waiting["pending"],
            "webhooks_failed_last_day": waiting["failed_last_day"],
            "disagreements_repaired_last_day": repairs["repaired"],
            "disagreements_left_last_day": repairs["unrepaired"],
        }
    )
    if oldest is not None and oldest > settings.health.crm_stuck_minutes * 60:
        component.flag("unhealthy", f"a booking has waited {oldest / 60:.0f} min to reach YClients")
    if shown["failed"]:
        component.flag("warning", f"{shown['failed']} bookings could not be carried into YClients (dead letters)")
    if waiting["failed_last_day"]:
        component.flag("warning", f"{waiting['failed_last_day']} webhooks failed in the last day")
    if repairs["unrepaired"]:
        component.flag(
            "warning",
            f"{repairs['unrepaired']} bookings disagree with YClients and need an operator (fleet crm --repairs)",
        )
    return component


def check_assistant(settings: Settings, client: redis.Redis) -> Component:
    """The language-model assistant, per salon it answers, today (UTC): turns, tokens against the budget,
    time per turn, tool calls and how many were refused, fallbacks to the rules by reason. A salon whose
    fallbacks pass `FLEET_MODEL__FALLBACK_WARNING_SHARE` of its turns is a warning (Telegram hears of it)."""
    component = Component("assistant")
    model = settings.model
    component.details["salons"] = {}
    if model.api_key is None or not model.company_ids:
        component.details["model"] = "off"
        return component
    component.details["model"] = model.model
    ledger = Ledger(client)
    for company_id in model.company_ids:
        figures = ledger.today(company_id)
        turns = int(figures.get("turns", 0))
        fallbacks = int(figures.get("fallbacks", 0))
        component.details["salons"][str(company_id)] = {
            "turns": turns,
            "tokens": int(figures.get("tokens", 0)),
            "token_budget": model.daily_tokens_per_salon,
            "seconds_per_turn": round(figures.get("seconds", 0.0) / turns, 3) if turns else None,
            "tool_calls": int(figures.get("tool_calls", 0)),
            "tool_calls_refused": int(figures.get("tool_refused", 0)),
            "fallbacks": fallbacks,
            "fallbacks_by_reason": {
                name.removeprefix("fallback:"): int(value)
                for name, value in figures.items()
                if name.startswith("fallback:")
            },
        }
        if turns >= model.fallback_warning_min_turns and fallbacks / turns > model.fallback_warning_share:
            component.flag(
                "warning",
                f"the model of company {company_id} fell back to the rules in {fallbacks} of {turns} turns today",
            )
        if figures.get("tokens", 0) >= model.daily_tokens_per_salon:
            component.flag("warning", f"company {company_id} spent its model tokens for today: the rules answer")
    return component


def safely(name: str, check: Any, *args: Any) -> Component:
    """A check that cannot run is itself unhealthy, with the reason; the others still report."""
    try:
        return check(*args)
    except (DataLayerError, redis.RedisError, OSError) as exc:
        component = Component(name)
        component.flag("unhealthy", f"check failed: {type(exc).__name__}: {exc}"[:300])
        return component
