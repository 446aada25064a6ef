"""Every benchmark in one command; the figures go to BENCHMARKS.md with the machine, the command and the date.

    .venv/bin/python -m bench.all

Each benchmark runs in its own process, against the fleet_bench database and Redis db 14, and prints its
own figures and ratios, which are copied verbatim.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [
    ("The assistant's understanding of client messages", ["bench.assistant"]),
    ("Inbound messages: saturation and latency", ["bench.inbound", "--burst", "2000", "--seconds", "10"]),
    ("Fairness across salons: a quiet salon during a flood", ["bench.fairness", "--flood", "1500"]),
    ("YClients sync write path", ["bench.sync_upsert", "--existing", "1000000", "--incoming", "100000"]),
    ("WhatsApp key cleanup", ["bench.keys_cleanup", "--keys", "1000000", "--batch", "5000"]),
    ("Backup", ["bench.backup", "--megabytes", "300"]),
    ("Booking loop into YClients under faults", ["bench.booking_loop", "--clients", "40"]),
]


def shell(command: str) -> str:
    result = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip()


def machine() -> str:
    memory = shell("free -g | awk '/Mem:/ {print $2}'")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {memory} GiB memory; Python {platform.python_version()};"
        f" {shell('psql --version')}; {shell('redis-server --version').split(' sha=')[0]}"
    )


def main() -> None:
    sections = []
    for title, args in RUNS:
        print(f"== {title}: python -m {' '.join(args)}", flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        output = "\n".join(line for line in result.stdout.splitlines() if "slow query" not in line)
        print(output, flush=True)
        status = "" if result.returncode == 0 else f"\n(exit {result.returncode}: {result.stderr.strip()[-500:]})"
        sections.append(
            f"## {title}\n\n`.venv/bin/python -m {' '.join(args)}` ({time.monotonic() - started:.0f} s)"
            f"\n\n```\n{output}{status}\n```\n"
        )
    header = (
        f"# Benchmarks\n\nMeasured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.\n\n"
        "Reproduce everything with `.venv/bin/python -m bench.all` (after `./ops/run-tests` has set up the"
        " environment), or one benchmark with the command under its heading. Each compares the fleet's way"
        " with a baseline in the same run; ratios above 1 favour the fleet where they are throughput.\n\n"
    )
    analysis = ROOT / "docs" / "performance.md"  # where the time goes, for the goals not met: kept by hand
    footer = f"\n---\n\n{analysis.read_text(encoding='utf-8')}" if analysis.exists() else ""
    (ROOT / "BENCHMARKS.md").write_text(header + "\n".join(sections) + footer, encoding="utf-8")
    print("written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
