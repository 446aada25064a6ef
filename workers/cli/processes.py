"""Commands that run a long-lived fleet process (worker, beat, Flower, the health service) or ping them."""

from __future__ import annotations

import argparse
import os
import sys
import time

from shared.core.budget import require_budget
from shared.core.settings import ANY_ADDRESS, Settings, SettingsError, WorkerType
from shared.core.topology import CONSUMED_BY_WORKER, PING_OF_WORKER, QUEUE_OF_WORKER, TaskName
from shared.health.server import make_server
from shared.observability.prometheus_metrics import ENV as PROMETHEUS_ENV
from shared.observability.sentry import init_sentry

PRIVATE = 0o077  # the umask of every fleet process: what it writes (state, archives) is its user's alone


def private_state_dir(settings: Settings) -> None:
    """The state directory (beat's schedule, Flower's task history with its arguments) readable by this user
    only, files written earlier included."""
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.state_dir.chmod(0o700)
    for path in settings.state_dir.iterdir():
        if path.is_file():
            path.chmod(0o600)


def _exec_celery(argv: list[str], settings: Settings, worker_type: WorkerType | None = None) -> int:
    """Replace this process with Celery, so signals from honcho or systemd reach it directly; the umask set here
    is inherited by Celery and every file it creates."""
    require_budget(settings)
    os.umask(PRIVATE)
    env = dict(os.environ)
    if worker_type is not None:
        env["FLEET_WORKER_TYPE"] = worker_type.value
        # Worker processes write their Prometheus samples to the host's directory (read when Celery imports
        # prometheus_client); Flower and beat keep theirs in memory, out of the fleet's figures.
        settings.metrics_directory.mkdir(parents=True, exist_ok=True)
        env[PROMETHEUS_ENV] = str(settings.metrics_directory)
    command = [sys.executable, "-m", "celery", "-A", "workers.app", *argv]
    sys.stdout.flush()
    os.execvpe(command[0], command, env)  # noqa: S606 (arguments come from settings, not from users)
    return 0  # pragma: no cover  (execvpe does not return)


def worker(args: argparse.Namespace, settings: Settings) -> int:
    worker_type = WorkerType(args.type)
    limits = settings.workers.of(worker_type)
    argv = [
        "worker",
        "--queues",
        CONSUMED_BY_WORKER[worker_type].value,
        "--concurrency",
        str(args.concurrency or limits.concurrency),
        "--hostname",
        args.name or f"{worker_type.value}@%h",
        "--pool",
        "prefork",
        # A task is written to an idle child only, never queued in a busy child's pipe: a CRM write reserved
        # while a sync runs goes to the child kept free for it (workers/crm_lane.py). Celery 5's default, pinned.
        "--optimization",
        "fair",
        "--loglevel",
        args.loglevel,
        "--task-events",
        "--without-gossip",
    ]
    return _exec_celery(argv, settings, worker_type)


def beat(args: argparse.Namespace, settings: Settings) -> int:
    private_state_dir(settings)
    schedule_file = settings.state_dir / "celerybeat-schedule"
    return _exec_celery(["beat", "--schedule", str(schedule_file), "--loglevel", args.loglevel], settings)


def flower(args: argparse.Namespace, settings: Settings) -> int:
    private_state_dir(settings)
    argv = [
        "flower",
        f"--address={settings.flower_address}",
        f"--port={settings.flower_port}",
        "--persistent=True",
        f"--db={settings.state_dir / 'flower.db'}",
        "--purge_offline_workers=300",
        f"--max_tasks={settings.retention.flower_tasks}",  # Flower's state (and its db file) stays bounded
    ]
    if settings.flower_user and settings.flower_password:
        # Flower reads FLOWER_BASIC_AUTH itself; keeping it out of argv keeps it out of `ps`.
        os.environ["FLOWER_BASIC_AUTH"] = f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
    elif settings.environment == "production" or settings.flower_address in ANY_ADDRESS:
        raise SettingsError(
            "refusing to start Flower without FLEET_FLOWER_USER and FLEET_FLOWER_PASSWORD"
            " (in production, or listening on every address)"
        )
    return _exec_celery(argv, settings)


def health_server(args: argparse.Namespace, settings: Settings) -> int:
    """Serve /health, /health/<part>, /metrics and YClients' webhooks until stopped."""
    init_sentry(settings, component="health")
    from workers.app import app  # only this command sends tasks; a worker's exec never imports it here

    server = make_server(settings, enqueue_webhook=lambda event_id: app.send_task(TaskName.APPLY_WEBHOOK, (event_id,)))
    print(f"health service on http://{settings.health.address}:{server.server_address[1]}/health", flush=True)
    if server.webhook_address != server.server_address:
        print(
            f"YClients webhooks on http://{settings.health.webhook_address}:{server.webhook_address[1]}/yclients/webhook",
            flush=True,
        )
    try:
        server.serve_forever()  # until SIGTERM or Ctrl-C, then answers in flight are finished
    finally:
        server.server_close()
    return 0


def ping(args: argparse.Namespace, settings: Settings) -> int:
    """Send a ping through each queue and wait for the worker's answer from PostgreSQL."""
    from workers.app import app

    failures = 0
    for worker_type in WorkerType:
        started = time.monotonic()
        try:
            answer = app.send_task(PING_OF_WORKER[worker_type]).get(timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001  (any failure is the answer we report)
            failures += 1
            print(f"{worker_type.value:<9} queue {QUEUE_OF_WORKER[worker_type].value:<12} FAILED: {exc!r}")
            continue
        elapsed = (time.monotonic() - started) * 1000
        print(
            f"{worker_type.value:<9} queue {QUEUE_OF_WORKER[worker_type].value:<12} ok in {elapsed:6.1f} ms"
            f" (child pid {answer['pid']}, backend pid {answer['backend_pid']})"
        )
    return 1 if failures else 0
