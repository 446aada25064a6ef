"""The health report as Prometheus text (prometheus_client builds and escapes it), with the histograms and
counters every worker process of this host wrote to the metrics directory (summed by prometheus_client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

STATUS_VALUE = {"healthy": 0, "warning": 1, "unhealthy": 2}


def render(report: dict[str, Any], metrics: dict[str, Any], samples_directory: Path | None = None) -> bytes:
    registry = CollectorRegistry()
    if samples_directory is not None and samples_directory.is_dir():
        MultiProcessCollector(registry, path=str(samples_directory))
    parts = report["components"]

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    gauge("fleet_health_status", "0 healthy, 1 warning, 2 unhealthy").set(STATUS_VALUE[report["status"]])
    component = gauge("fleet_component_status", "0 healthy, 1 warning, 2 unhealthy", ("component",))
    for name, part in parts.items():
        component.labels(name).set(STATUS_VALUE[part["status"]])
    if "queues" in parts.get("queues", {}):
        waiting = gauge("fleet_queue_waiting", "messages waiting in a queue", ("queue",))
        unacked = gauge("fleet_queue_unacked", "messages taken but not yet acknowledged", ("queue",))
        backlog = gauge("fleet_inbound_backlog", "inbound messages waiting in a salon's lane", ("company",))
        for queue, depth in parts["queues"]["queues"].items():
            waiting.labels(queue).set(depth["waiting"])
            unacked.labels(queue).set(depth["unacked"])
            for company, count in depth.get("backlog_by_salon", {}).items():
                backlog.labels(company).set(count)
    database = parts.get("database", {})
    if "connections" in database:
        connections = gauge("fleet_db_connections", "PostgreSQL connections by fleet role", ("role",))
        for role, count in database["connections"].items():
            connections.labels(role).set(count)
        gauge("fleet_db_connection_limit", "the fleet's connection budget limit").set(database["limit"])
        pool = gauge("fleet_pool_in_use", "connections in use in one process's pool", ("role", "host", "pid"))
        pool_max = gauge("fleet_pool_max", "pool size limit of one process", ("role", "host", "pid"))
        for process in database.get("pools", []):
            labels = (process["role"], process["host"], str(process["pid"]))
            pool.labels(*labels).set(process.get("in_use") or 0)
            pool_max.labels(*labels).set(process.get("max") or 0)
    statements = gauge("fleet_queries_total", "statements executed by one process, by type", ("process", "type"))
    p95 = gauge("fleet_query_p95_ms", "95th percentile statement time over the last 1,000", ("process",))
    for process, snapshot in metrics.items():
        for kind, figures in snapshot.get("by_type", {}).items():
            statements.labels(process, kind).set(figures["count"])
        if snapshot.get("percentiles_ms", {}).get("p95") is not None:
            p95.labels(process).set(snapshot["percentiles_ms"]["p95"])
    if "dead_letter_spool" in parts.get("queues", {}):
        gauge("fleet_dead_letter_spool", "dead letters parked in Redis, not yet filed").set(
            parts["queues"]["dead_letter_spool"]
        )
    outbox = parts.get("outbox", {})
    if "pending" in outbox:
        gauge("fleet_outbox_pending", "replies waiting for delivery").set(outbox["pending"])
        gauge("fleet_dead_letters_last_day", "rejected inputs in the last day").set(outbox["dead_letters_last_day"])
    crm = parts.get("crm", {})
    if "pending" in crm:
        gauge("fleet_crm_pending", "chat bookings, moves and cancellations not yet in YClients").set(crm["pending"])
        gauge("fleet_crm_failed", "CRM operations given up (kept as dead letters)").set(crm["failed"])
        gauge("fleet_webhooks_unprocessed", "YClients webhook events not handled yet").set(crm["webhooks_unprocessed"])
    backups = parts.get("backups", {})
    if backups.get("newest_verified_hours") is not None:
        gauge("fleet_backup_age_hours", "age of the newest verified backup").set(backups["newest_verified_hours"])
    sync = gauge("fleet_sync_age_hours", "hours since the last successful sync", ("company", "entity"))
    for company, entities in parts.get("sync", {}).get("hours_since_success", {}).items():
        for entity, hours in entities.items():
            if hours is not None:
                sync.labels(company, entity).set(hours)
    sessions = gauge("fleet_whatsapp_session_status", "0 healthy, 1 warning, 2 unhealthy", ("company",))
    for company, session in parts.get("whatsapp", {}).get("sessions", {}).items():
        sessions.labels(company).set(STATUS_VALUE[session["status"]])
    standby = database.get("replica")
    if standby is not None:
        gauge("fleet_replica_in_use", "1 when reads that tolerate lag go to the replica, 0 when skipped").set(
            int(standby["in_use"])
        )
        if standby["lag_seconds"] is not None:
            gauge("fleet_replica_lag_seconds", "the replica's replay lag").set(standby["lag_seconds"])
    salons = parts.get("assistant", {}).get("salons", {})
    if salons:
        turns = gauge("fleet_model_turns_today", "turns the model was asked to answer today", ("company",))
        tokens = gauge("fleet_model_tokens_today", "model tokens spent today", ("company",))
        seconds = gauge("fleet_model_seconds_per_turn", "mean time of a model turn today", ("company",))
        calls = gauge("fleet_model_tool_calls_today", "tool calls by the model today", ("company", "outcome"))
        fallbacks = gauge("fleet_model_fallbacks_today", "turns the rules answered instead", ("company", "reason"))
        for company, figures in salons.items():
            turns.labels(company).set(figures["turns"])
            tokens.labels(company).set(figures["tokens"])
            seconds.labels(company).set(figures["seconds_per_turn"] or 0)
            calls.labels(company, "run").set(figures["tool_calls"] - figures["tool_calls_refused"])
            calls.labels(company, "refused").set(figures["tool_calls_refused"])
            for reason, count in figures["fallbacks_by_reason"].items():
                fallbacks.labels(company, reason).set(count)
    heartbeat = parts.get("heartbeat", {}).get("seconds_since_heartbeat")
    if heartbeat is not None:
        gauge("fleet_heartbeat_age_seconds", "seconds since the last beat heartbeat reached PostgreSQL").set(heartbeat)
    return generate_latest(registry)
