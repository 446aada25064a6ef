"""The alert rules and the Grafana dashboard, proven with Debian's Prometheus: promtool checks the rules and
runs their unit tests (every alert firing on its condition and quiet just short of it), and a Prometheus of the
test's own scrapes two "hosts" of a running fleet, loads the rules, fills every panel and raises an alert."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ops.standins.gateway import GatewayStandIn
from shared.core.topology import TaskName
from shared.inbound.payload import TASK_NAME
from shared.yclients.sync import ENTITIES
from tests.support.payloads import inbound_payload
from tests.support.processes import FleetProcess, running_worker, wait_until, worker_is_ready
from tests.support.prometheus import (
    ALERT_RULES,
    ALERT_TESTS,
    DASHBOARD,
    JOB,
    Prometheus,
    concrete_query,
    dashboard_queries,
    has_data,
    promtool,
    running_prometheus,
)
from tests.support.redis_server import free_port
from tests.support.seed import COMPANY
from workers.app import app
from workers.producer import enqueue_message

# Concrete values for the dashboard's own variables (Grafana's built-ins are in tests/support/prometheus.py).
DASHBOARD_VARIABLES = {"datasource": "prometheus", "company": str(COMPANY), "queue": "inbound"}
FIRING_FOR = "2s"  # FleetHealthServiceDown's `for:` in the test's copy of the rule (5m in the shipped file)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERT_RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_alert_rules() -> None:
    checked = promtool("check", "rules", ALERT_RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout, checked.stdout


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    tested = promtool("test", "rules", ALERT_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_case_with_its_labels_and_annotations() -> None:
    """A new rule without unit tests fails here; so does a firing case that does not state what the alert
    carries (promtool compares exactly what is stated)."""
    unit_tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert unit_tests["rule_files"] == [ALERT_RULES.name], "the unit tests test the shipped rules file"
    cases: dict[str, list[dict[str, Any]]] = {}
    for group in unit_tests["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case)
    rules = {rule["alert"]: rule for rule in alert_rules() if "alert" in rule}
    assert len(rules) == len(alert_rules()), "every rule is an alert (a recording rule would need its own test)"
    assert not set(cases) - set(rules), f"unit tests of alerts that do not exist: {sorted(set(cases) - set(rules))}"
    problems = []
    for name, rule in rules.items():
        firing = [case for case in cases.get(name, []) if case.get("exp_alerts")]
        quiet = [case for case in cases.get(name, []) if not case.get("exp_alerts")]
        if not firing:
            problems.append(f"{name}: no case where it fires")
        if not quiet:
            problems.append(f"{name}: no case where it stays quiet")
        for case in firing:
            for alert in case["exp_alerts"]:
                labels, annotations = alert.get("exp_labels", {}), alert.get("exp_annotations", {})
                if any(labels.get(key) != value for key, value in rule.get("labels", {}).items()):
                    problems.append(f"{name} at {case['eval_time']}: exp_labels miss the rule's {rule['labels']}")
                if set(annotations) != set(rule.get("annotations", {})):
                    problems.append(f"{name} at {case['eval_time']}: exp_annotations must state every annotation")
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_has_concrete_values_for_its_variables() -> None:
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 12
    for _, expr in queries:
        assert "$" not in concrete_query(expr, DASHBOARD_VARIABLES)


# A real fleet under a real Prometheus.


def selectors(expr: str) -> list[str]:
    """The series selectors of a rule's expression (`name` or `name{matchers}`)."""
    return [name + matchers for name, matchers in re.findall(r"\b(up|fleet_\w+)(\{[^}]*\})?", expr)]


def firing_copy(directory: Path) -> Path:
    """FleetHealthServiceDown as shipped but with `for:` shortened, in a group and file of the test's own: the
    shipped file is loaded unchanged beside it."""
    (rule,) = [rule for rule in alert_rules() if rule.get("alert") == "FleetHealthServiceDown"]
    path = directory / "firing-copy.yml"
    copy = {"groups": [{"name": "fleet-firing-copy", "rules": [{**rule, "for": FIRING_FOR}]}]}
    path.write_text(yaml.safe_dump(copy, sort_keys=False))
    return path


def seed_a_fleet_in_service(db: psycopg.Connection) -> None:
    """What a fleet in service has that this test's hour cannot make: a verified backup of last night, a sync of
    every entity of the salon and a checked WhatsApp session."""
    db.execute(
        "INSERT INTO backups (status, finished_at, size_bytes, sha256, path) VALUES"
        " ('verified', now() - interval '2 hours', 123456, repeat('a', 64), '/backups/fleet.dump')"
    )
    for entity in ENTITIES:
        db.execute(
            "INSERT INTO sync_runs (company_id, entity, status, finished_at) VALUES (%s, %s, 'succeeded', now())",
            (COMPANY, entity),
        )
    db.execute(
        "INSERT INTO health_checks (check_name, subject, status) VALUES ('whatsapp_session', %s, 'healthy')",
        (str(COMPANY),),
    )


def total(prometheus: Prometheus, expr: str) -> float:
    return sum(float(series["value"][1]) for series in prometheus.query(expr))


def rule_states(prometheus: Prometheus, name: str) -> dict[str, list[str]]:
    """{rule file name: states of the alerts of rule `name` in it}."""
    return {
        Path(group["file"]).name: [alert["state"] for alert in rule.get("alerts", [])]
        for group in prometheus.rule_groups()
        for rule in group["rules"]
        if rule["name"] == name
    }


def started(process: FleetProcess, what: str, ready: Callable[[], object]) -> None:
    try:
        wait_until(lambda: process.proc.poll() is not None or ready(), 30, what)
    except TimeoutError:
        raise AssertionError(f"{what} did not come up:\n{process.output()}") from None
    assert process.proc.poll() is None, f"{what} exited:\n{process.output()}"


@pytest.fixture
def hosts(inbound_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Two hosts on one Redis and one database, each with its state (and metrics) directory and its health
    service on its own port behind the token: host-a runs an inbound worker, host-b a keys worker."""
    token = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        running: dict[str, dict[str, Any]] = {}
        for host, worker_type in (("host-a", "inbound"), ("host-b", "keys")):
            env = {
                **inbound_env,
                "FLEET_STATE_DIR": str(tmp_path / host),
                "FLEET_HEALTH__PORT": str(free_port()),
                "FLEET_HEALTH__TOKEN": token,
            }
            health = FleetProcess(["health-server"], env, tmp_path / f"health-{host}.log")
            stack.callback(health.stop)
            node = f"{worker_type}@{host}"
            worker = stack.enter_context(
                running_worker(worker_type, env, tmp_path, concurrency=2, ready=False, node=node)
            )
            running[host] = {"env": env, "health": health, "worker": worker, "node": node, "token": token}
        for host, parts in running.items():  # started side by side, waited for together
            health, node = parts["health"], parts["node"]
            started(health, f"{host}'s health service", lambda h=health: "health service on" in h.output())
            started(parts["worker"], node, lambda n=node: worker_is_ready(inbound_env["REDIS_URL"], n))
        for parts in running.values():  # at the end, every process asked to stop first, then each waited for
            stack.callback(parts["worker"].terminate)
            stack.callback(parts["health"].terminate)
        yield running


@pytest.mark.slow
def test_prometheus_scrapes_two_hosts_loads_every_rule_fills_every_panel_and_fires_an_alert(
    hosts: dict[str, dict[str, Any]], db: psycopg.Connection, gateway: GatewayStandIn, tmp_path: Path
) -> None:
    began = time.monotonic()
    seed_a_fleet_in_service(db)
    address = {host: f"127.0.0.1:{parts['env']['FLEET_HEALTH__PORT']}" for host, parts in hosts.items()}
    token = hosts["host-a"]["token"]
    rule_files = [ALERT_RULES, firing_copy(tmp_path)]
    with running_prometheus(tmp_path / "prometheus", address, token, rule_files) as prometheus:
        # Both hosts scraped with the token.
        def both_up() -> bool:
            return sorted(t["labels"]["host"] for t in prometheus.targets() if t["health"] == "up") == sorted(hosts)

        try:
            wait_until(both_up, 30, "both health services up in Prometheus", interval=0.25)
        except TimeoutError:
            raise AssertionError(f"targets: {prometheus.targets()}\n{prometheus.log()}") from None
        assert {t["labels"]["job"] for t in prometheus.targets()} == {JOB}

        # Work for the fleet in two rounds, each seen by a scrape, so every counter moves under Prometheus' eyes:
        # replies (host-a), the heartbeat (host-b), and a ping with arguments it refuses (failed, dead-lettered).
        answered = f'sum(fleet_task_outcomes_total{{task="{TASK_NAME}", outcome="succeeded"}})'
        for round_ in (1, 2):
            for n in range(3):
                enqueue_message(inbound_payload(f"Привет {round_}", chat=f"+7911555{round_}{n:03d}"))
            app.send_task(TaskName.HEARTBEAT)
            wait_until(lambda r=round_: gateway.count() == 3 * r, 60, f"round {round_}: three replies")
            wait_until(lambda r=round_: total(prometheus, answered) == 3 * r, 30, f"round {round_} in Prometheus")
        app.send_task(TaskName.INBOUND_PING, kwargs={"hold_seconds": "soon"})
        refused = 'fleet_task_outcomes_total{outcome="dead_lettered"}'
        wait_until(lambda: total(prometheus, refused) >= 1, 30, "the refused ping in Prometheus")
        heartbeat = f'sum(fleet_task_outcomes_total{{task="{TaskName.HEARTBEAT}", outcome="succeeded"}})'
        wait_until(lambda: total(prometheus, heartbeat) >= 2, 30, "both heartbeats in Prometheus")
        wait_until(lambda: prometheus.query("fleet_heartbeat_age_seconds"), 30, "the heartbeat's age")

        # Every rule of the shipped file loaded and evaluated without error, and every series it reads served by
        # this fleet with the labels it selects on (a misspelt metric or label would select nothing, forever).
        shipped = [g for g in prometheus.rule_groups() if Path(g["file"]) == ALERT_RULES]
        loaded = {rule["name"]: rule for group in shipped for rule in group["rules"]}
        assert sorted(loaded) == sorted(rule["alert"] for rule in alert_rules())
        wait_until(
            lambda: all(r["health"] == "ok" for g in prometheus.rule_groups() for r in g["rules"]),
            10,
            "every rule evaluated",
        )
        for name, rule in loaded.items():
            assert rule["type"] == "alerting", name
            assert rule["health"] == "ok", (name, rule.get("lastError"))
        unserved = [
            (rule["alert"], selector)
            for rule in alert_rules()
            for selector in selectors(rule["expr"])
            if not prometheus.query(f"count({selector})")
        ]
        assert not unserved, f"series the rules read but the fleet does not serve: {unserved}"
        # Each host serves its own workers' figures: the replies on host-a's target, the heartbeats on host-b's.
        by_host = f'sum by (host, task) (fleet_task_outcomes_total{{task=~"{TASK_NAME}|{TaskName.HEARTBEAT}"}})'
        assert {(s["metric"]["host"], s["metric"]["task"]) for s in prometheus.query(by_host)} == {
            ("host-a", TASK_NAME),
            ("host-b", TaskName.HEARTBEAT),
        }
        firing = [a["labels"] for a in prometheus.alerts() if a["state"] == "firing"]
        assert not firing, f"a fleet at work raises no alert: {firing}"

        # Every query of every panel of the dashboard returns data from this fleet.
        queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
        empty = []
        for panel, expr in queries:
            result = prometheus.query(concrete_query(expr, DASHBOARD_VARIABLES))
            if not has_data(result):
                empty.append(f"{panel}: {expr} -> {result}")
        assert not empty, "panels without data:\n" + "\n".join(empty)
        print(f"\n{len(queries)} dashboard queries with data, {len(loaded)} rules loaded")

        # host-b's health service stops: up == 0, the shipped rule pending (for: 5m), the copy firing.
        hosts["host-b"]["health"].stop()
        stopped = {"alertname": "FleetHealthServiceDown", "job": JOB, "instance": address["host-b"], "host": "host-b"}

        def fired() -> list[dict[str, Any]]:
            return [
                alert
                for alert in prometheus.alerts()
                if alert["state"] == "firing" and stopped.items() <= alert["labels"].items()
            ]

        down_at = time.monotonic()
        wait_until(fired, 30, "FleetHealthServiceDown firing", interval=0.25)
        (alert,) = fired()
        print(f"FleetHealthServiceDown firing {time.monotonic() - down_at:.1f} s after host-b's health service stopped")
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == f"the fleet's health service on {address['host-b']} does not answer"
        wait_until(
            lambda: rule_states(prometheus, "FleetHealthServiceDown")[ALERT_RULES.name] == ["pending"],
            10,
            "the shipped rule pending",
        )
        assert rule_states(prometheus, "FleetHealthServiceDown") == {
            ALERT_RULES.name: ["pending"],
            "firing-copy.yml": ["firing"],
        }
        assert total(prometheus, f'up{{job="{JOB}"}}') == 1, "host-a still answers"
    print(f"Prometheus part of the test: {time.monotonic() - began:.1f} s")
