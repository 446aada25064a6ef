"""The deployment's systemd units, read by systemd's own tools: valid, and the internet-facing one hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "ops" / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
# The health service answers YClients' webhooks from the internet; 10 is systemd's "UNSAFE" end of the scale.
HEALTH_EXPOSURE_AT_MOST = 2.0


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_every_unit_is_valid_for_systemd(unit: Path) -> None:
    """`systemd-analyze verify` names unknown keys and bad values (the fleet binary is absent here: skipped)."""
    complaints = [
        line
        for line in _analyze("verify", str(unit)).stderr.splitlines()
        if line.strip() and "is not executable" not in line and "/opt/fleet" not in line
    ]
    assert complaints == []


@needs_systemd
def test_the_internet_facing_service_is_hardened() -> None:
    report = _analyze("security", "--offline=true", str(ROOT / "ops" / "systemd" / "fleet-health.service")).stdout
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", report)
    assert found, report[-2000:]
    assert float(found.group(1)) <= HEALTH_EXPOSURE_AT_MOST, report
