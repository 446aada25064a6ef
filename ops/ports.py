"""Before `./ops/run-fleet` starts anything: every port its processes will listen on is free, or the port and
the process holding it are named. (Without this check supervisord restarts the process that cannot bind in a
loop, logging only "exit status 1".)

    python -m ops.ports Procfile [ops/Procfile.demo ...]    # exit 1, one line per taken port

The ports come from the settings (Flower, the health service and its webhook listener) and from `--port N` in
the Procfiles' lines (the demo's stand-ins). A holder is found from the kernel's socket tables
(/proc/net/tcp, tcp6) and the processes' open sockets; a holder this user may not see is said to be unknown.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.core.settings import Settings, get_settings

PORT_ARGUMENT = re.compile(r"--port[ =](\d{1,5})\b")
LISTEN = "0A"  # the state column of a listening socket in /proc/net/tcp


@dataclass(frozen=True)
class Wanted:
    port: int
    address: str
    process: str  # the Procfile process (or the setting) that will listen there


def wanted_ports(settings: Settings, procfiles: list[Path]) -> list[Wanted]:
    names = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for path in procfiles for line in _lines(path)}
    found: list[Wanted] = []
    if "flower" in names:
        found.append(Wanted(settings.flower_port, settings.flower_address, "flower (FLEET_FLOWER_PORT)"))
    if "health" in names:
        found.append(Wanted(settings.health.port, settings.health.address, "health (FLEET_HEALTH__PORT)"))
        if settings.health.webhook_port:
            webhooks = settings.health.webhook_address
            found.append(Wanted(settings.health.webhook_port, webhooks, "health (FLEET_HEALTH__WEBHOOK_PORT)"))
    for name, command in names.items():
        for port in PORT_ARGUMENT.findall(command):
            found.append(Wanted(int(port), "127.0.0.1", f"{name} (--port in its Procfile line)"))
    return found


def _lines(path: Path) -> list[str]:
    return [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if ":" in line and not line.lstrip().startswith("#")
    ]


def is_free(port: int, address: str) -> bool:
    """Whether a listener could bind there now (as the process will, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def holder(port: int, proc: Path = Path("/proc")) -> str:
    """The process listening on `port`: "pid 1234: python -m http.server 8088", or why it is not known."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        path = proc / "net" / table
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            fields = row.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return "a process this check cannot see"
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sockets = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in sockets for inode in inodes):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            return f"pid {entry.name}: {command[:160] or '?'}"
    return "a process of another user (run as root, or `ss -ltnp`, to see which)"


def taken(wanted: list[Wanted]) -> list[str]:
    return [
        f"port {item.port} for {item.process} is taken by {holder(item.port)}"
        for item in wanted
        if not is_free(item.port, item.address)
    ]


def main() -> int:
    problems = taken(wanted_ports(get_settings(), [Path(arg) for arg in sys.argv[1:]]))
    for problem in problems:
        print(f"[run-fleet] {problem}", file=sys.stderr)
    if problems:
        print(
            "[run-fleet] stop that process, or give the fleet another port (the setting named above)", file=sys.stderr
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
