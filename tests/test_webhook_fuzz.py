"""The webhook door fuzzed from its OpenAPI description (docs/webhook-openapi.json): `fleet health-server` started
as the Procfile starts it, schemathesis generating requests (valid and invalid ones, with the right salon's
secret, another salon's and made-up ones). No answer is a server error, every answer is one the description
documents, and the service's memory stays where it was."""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shared.core.db import transaction
from shared.data.repositories.webhook_events import WebhookSecretRepository
from shared.health.server import OPENAPI_FILE, SECRET_HEADER
from tests.support.processes import ROOT
from tests.support.seed import COMPANY

pytestmark = pytest.mark.slow

OTHER = COMPANY + 1  # a second salon the fleet serves, with a secret of its own
EXAMPLES = 200
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MIB_KIB = 1024


@dataclass
class Service:
    pid: int
    private: int  # /health, /metrics, /openapi.json
    public: int  # /yclients/webhook

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.MULTILINE)[1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def secrets_of_salons(salon: psycopg.Connection) -> dict[int, str]:
    """Each salon's own secret, stored (hashed) as `fleet webhook-secret set` stores it."""
    made = {COMPANY: secrets.token_urlsafe(32), OTHER: secrets.token_urlsafe(32)}
    with transaction():
        for company, secret in made.items():
            WebhookSecretRepository().replace(company, secret, None)
    return made


@pytest.fixture
def service(secrets_of_salons: dict[int, str], fleet_env: dict[str, str]) -> Iterator[Service]:
    env = {
        **fleet_env,
        "FLEET_YCLIENTS__COMPANY_IDS": f"[{COMPANY}, {OTHER}]",
        "FLEET_HEALTH__PORT": str(_free_port()),
        "FLEET_HEALTH__WEBHOOK_ADDRESS": "127.0.0.1",
        "FLEET_HEALTH__WEBHOOK_PORT": "0",
    }
    command = [sys.executable, "-m", "workers.cli", "health-server"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ports = []
        output = []
        while len(ports) < 2:
            line = process.stdout.readline()
            output.append(line)
            assert line, f"the health service exited before it listened: {''.join(output)}"
            if found := re.search(r"on http://[^ ]+:(\d+)/", line):
                ports.append(int(found[1]))
        threading.Thread(target=process.stdout.read, daemon=True).start()  # keep its pipe drained
        yield Service(process.pid, *ports)
    finally:
        process.terminate()
        process.wait(timeout=30)


def strategies(schema: Any, secrets_of_salons: dict[int, str]) -> st.SearchStrategy:
    """Requests of every operation: made-up doors (valid and invalid data), the right salon's door with valid
    and invalid bodies, and the right salon's path with the other salon's secret."""
    mine, theirs = secrets_of_salons[COMPANY], secrets_of_salons[OTHER]
    branches = []
    for result in schema.get_all_operations():
        operation = result.ok()
        in_path = "{secret}" in operation.path
        has_company = "{company}" in operation.path

        def door(secret: str, operation: Any = operation, in_path: bool = in_path, has_company: bool = has_company):
            path = {"company": COMPANY} if has_company else {}
            if in_path:
                return {"path_parameters": {**path, "secret": secret}}
            return {"path_parameters": path or None, "headers": {SECRET_HEADER: secret}}

        branches += [
            operation.as_strategy(),  # made-up secrets and companies
            operation.as_strategy(GenerationMode.NEGATIVE),  # and invalid parameters or bodies
            operation.as_strategy(**door(mine)),
            operation.as_strategy(GenerationMode.NEGATIVE, **door(mine)),
            operation.as_strategy(**door(theirs)),
        ]
    return st.one_of(branches)


def test_fuzzed_webhooks_get_only_documented_answers_and_no_server_error(
    service: Service, secrets_of_salons: dict[int, str]
) -> None:
    served = requests.get(f"http://127.0.0.1:{service.private}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == json.loads(OPENAPI_FILE.read_text()), "the private listener serves the description"

    schema = schemathesis.openapi.from_path(str(OPENAPI_FILE))
    base_url = f"http://127.0.0.1:{service.public}"
    session = requests.Session()
    statuses: Counter[int] = Counter()
    calls = 0

    # A few requests first, so the service's imports, pools and caches are warm before its memory is measured.
    mine = secrets_of_salons[COMPANY]
    for resource_id in range(1, 21):
        event = {"company_id": COMPANY, "resource": "record", "resource_id": resource_id, "status": "create"}
        warm = session.post(f"{base_url}/yclients/webhook/{COMPANY}/{mine}", json=event, timeout=10)
        assert warm.status_code == 202, warm.text
        assert session.post(f"{base_url}/yclients/webhook", json=event, timeout=10).status_code == 403
    # What the fuzzer found first: a newline in a path's secret escaped the router and was answered 404, as text.
    newline = session.post(f"{base_url}/yclients/webhook/{COMPANY}/a%0Ab", json=event, timeout=10)
    assert (newline.status_code, newline.json()) == (403, {"error": "refused"})
    before = service.rss_kib()
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategies(schema, secrets_of_salons), our_company=st.sampled_from([True, True, False]))
    def run(case: schemathesis.Case, our_company: bool) -> None:
        nonlocal calls
        if our_company and isinstance(case.body, dict):
            case.body["company_id"] = COMPANY  # else nearly every event would name a salon the door does not open
        response = case.call(base_url=base_url, session=session, timeout=10)
        calls += 1
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        case.validate_response(response, checks=CHECKS)

    run()
    seconds = time.monotonic() - started
    after = service.rss_kib()
    print(
        f"\n{calls} fuzzed webhooks in {seconds:.1f} s, statuses {dict(sorted(statuses.items()))};"
        f" health service RSS {before / MIB_KIB:.1f} MiB before, {after / MIB_KIB:.1f} MiB after"
    )
    assert calls >= EXAMPLES
    assert set(statuses) <= {200, 202, 400, 403, 408, 411, 413}
    assert {202, 400, 403} <= set(statuses), "the fuzzing reached past the door, and was refused too"
    assert after - before < 4 * MIB_KIB
    session.close()
