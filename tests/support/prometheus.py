"""Debian's Prometheus and promtool, driven by tests: the shipped alert rules checked and unit-tested, and a
Prometheus of the test's own (its own TSDB directory, a free port, a one-second scrape and evaluation interval)
scraping the health services of a running fleet with the health token."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.redis_server import free_port

MONITORING = Path(__file__).resolve().parents[2] / "ops" / "monitoring"
ALERT_RULES = MONITORING / "prometheus-alerts.yml"
ALERT_TESTS = MONITORING / "prometheus-alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
JOB = "fleet-health"  # the scrape job the rules name (docs/health.md)


def binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        raise RuntimeError(f"{name} is not installed (ops/run-tests installs Debian's prometheus package as root)")
    return found


def promtool(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


# Grafana's own variables, as a dashboard at a short range on a 1 s scrape would fill them in.
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def concrete_query(expr: str, variables: Mapping[str, str]) -> str:
    """A panel's query with every Grafana variable replaced (`$name`, `${name}`, `${name:format}`, `[[name]]`):
    Grafana's built-ins by GRAFANA_BUILTINS, the dashboard's own by `variables`. An unknown one is an error, so
    a new dashboard variable needs a value here before the test passes."""
    values = {**GRAFANA_BUILTINS, **variables}

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} in {expr!r} has no concrete value for the test")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, expr) of every query of every panel, rows' collapsed panels included."""
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])
    return [
        (f"{panel['title']} [{target.get('refId', '?')}]", target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def has_data(result: list[dict[str, Any]]) -> bool:
    """An instant vector with at least one series whose value is a number (not NaN: a quantile of no
    observations is NaN)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


@dataclass
class Prometheus:
    url: str
    directory: Path
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"/api/v1/{path} {params}: {answer.status_code} {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets", state="active")["activeTargets"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return self.api("rules")["groups"]

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""


def config(targets: Mapping[str, str], token: str, rule_files: list[Path], interval: str) -> dict[str, Any]:
    """Prometheus' configuration (JSON is YAML): one job scraping every host's health service with the token;
    each target also carries a `host` label with its host's name."""
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials": token},
                "static_configs": [
                    {"targets": [address], "labels": {"host": host}} for host, address in targets.items()
                ],
            }
        ],
    }


@contextmanager
def running_prometheus(
    directory: Path, targets: Mapping[str, str], token: str, rule_files: list[Path], interval: str = "1s"
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` ({host name: "127.0.0.1:port"}), with `rule_files` loaded; stopped and its
    storage left in `directory` for a failing test to look at."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(json.dumps(config(targets, token, rule_files, interval), indent=2))
    checked = promtool("check", "config", directory / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", directory, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{prometheus.log()}")
            time.sleep(0.1)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
