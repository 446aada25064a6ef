"""Run Procfile processes under supervisord: each restarted when it crashes, all stopped warmly on Ctrl-C.

honcho restarts nothing and signals whole process groups, so Ctrl-C reached every Celery pool child at once
(WorkerLostError instead of a warm shutdown). Here supervisord (a well-kept supervisor) sends SIGTERM to each
program's main process only, waits longer than that worker type's hard time limit, and restarts a process
that exits on its own.

    python -m ops.supervise Procfile [more Procfiles...]   # writes .run/supervisord.conf and runs supervisord
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from shared.core.settings import Settings, WorkerType, get_settings

ROOT = Path(__file__).resolve().parents[1]
WORKER_NAMES = frozenset(worker_type.value for worker_type in WorkerType)
GRACE_SECONDS = 30  # beyond the hard time limit: the task is killed by then, the worker still has to ack and exit


def read_procfiles(paths: list[Path]) -> dict[str, str]:
    processes: dict[str, str] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, command = line.partition(":")
                processes[name.strip()] = command.strip()
    return processes


def stop_wait_seconds(name: str, settings: Settings) -> int:
    """How long a process may take to stop warmly: a worker type's hard time limit plus a margin."""
    if name in WORKER_NAMES:
        return settings.workers.of(WorkerType(name)).time_limit + GRACE_SECONDS
    return 20


def render(processes: dict[str, str], settings: Settings, run_dir: Path) -> str:
    lines = [
        "[supervisord]",
        "nodaemon=true",
        "logfile=/dev/stdout",  # its own lines (started, exited, stopped) beside the programs' output
        "logfile_maxbytes=0",
        "loglevel=info",
        f"pidfile={run_dir / 'supervisord.pid'}",
        f"directory={ROOT}",
        "",
        "[unix_http_server]",
        f"file={run_dir / 'supervisor.sock'}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run_dir / 'supervisor.sock'}",
    ]
    for name, command in processes.items():
        lines += [
            "",
            f"[program:{name}]",
            # bash -c keeps the Procfile's shell syntax; exec makes the program the process supervisord signals.
            f"command=bash -c {shlex.quote(command if any(c in command for c in ';&|') else 'exec ' + command)}",
            f"directory={ROOT}",
            "autostart=true",
            "autorestart=true",
            "startsecs=3",
            "startretries=1000",
            "stopsignal=TERM",
            f"stopwaitsecs={stop_wait_seconds(name, settings)}",
            # A worker: SIGTERM to its main process only, whose warm shutdown stops its children in turn.
            # Anything else (beat, Flower, shell lines of the demo): the whole group.
            f"stopasgroup={'false' if name in WORKER_NAMES else 'true'}",
            "killasgroup=true",  # but a SIGKILL after the wait takes the whole group
            "redirect_stderr=true",
            "stdout_logfile=/dev/stdout",
            "stdout_logfile_maxbytes=0",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("procfiles", nargs="+", type=Path)
    parser.add_argument("--only", nargs="*", help="run only these process names")
    args = parser.parse_args(argv)
    settings = get_settings()
    run_dir = settings.state_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    processes = read_procfiles(args.procfiles)
    if args.only:
        processes = {name: command for name, command in processes.items() if name in args.only}
    config = run_dir / "supervisord.conf"
    config.write_text(render(processes, settings, run_dir))
    supervisord = Path(sys.executable).with_name("supervisord")
    os.execv(supervisord, [str(supervisord), "--configuration", str(config)])  # noqa: S606  (fixed argv, no shell)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
