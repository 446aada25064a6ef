"""`fleet`: the one command-line entry point for every operator action."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from shared.core.budget import BudgetExceeded, require_budget
from shared.core.settings import ANY_ADDRESS, Settings, SettingsError, WorkerType, get_settings

log = logging.getLogger("fleet")

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.core.migrate import upgrade

    revision = upgrade(settings.database_conninfo)
    print(f"database {settings.database_name} is at revision {revision}")
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from shared.core.preflight import run_preflight

    report = run_preflight(settings, services=not args.offline)
    print(report.render())
    return 0 if report.ok else 1


def _exec_celery(argv: list[str], settings: Settings, worker_type: WorkerType | None = None) -> int:
    """Replace this process with Celery, so signals from honcho or systemd reach it directly."""
    require_budget(settings)
    env = dict(os.environ)
    if worker_type is not None:
        env["FLEET_WORKER_TYPE"] = worker_type.value
    command = [sys.executable, "-m", "celery", "-A", "workers.app", *argv]
    sys.stdout.flush()
    os.execvpe(command[0], command, env)  # noqa: S606 (arguments come from settings, not from users)
    return 0  # pragma: no cover  (execvpe does not return)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from shared.core.topology import QUEUE_OF_WORKER

    worker_type = WorkerType(args.type)
    limits = settings.workers.of(worker_type)
    argv = [
        "worker",
        "--queues",
        QUEUE_OF_WORKER[worker_type].value,
        "--concurrency",
        str(args.concurrency or limits.concurrency),
        "--hostname",
        args.name or f"{worker_type.value}@%h",
        "--pool",
        "prefork",
        "--loglevel",
        args.loglevel,
        "--task-events",
        "--without-gossip",
    ]
    return _exec_celery(argv, settings, worker_type)


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    schedule_file = settings.state_dir / "celerybeat-schedule"
    return _exec_celery(["beat", "--schedule", str(schedule_file), "--loglevel", args.loglevel], settings)


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
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


def cmd_ping(args: argparse.Namespace, settings: Settings) -> int:
    """Send a ping through each queue and wait for the worker's answer from PostgreSQL."""
    from shared.core.topology import QUEUE_OF_WORKER
    from workers.app import app

    failures = 0
    for worker_type in WorkerType:
        module = "workers." + worker_type.value
        started = time.monotonic()
        try:
            answer = app.send_task(f"{module}.ping").get(timeout=args.timeout)
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


def _read_jsonl(path: str) -> list[tuple[int, object]]:
    """(line number, parsed value or the parse error text) for every non-empty line."""
    import json

    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    items: list[tuple[int, object]] = []
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                items.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                items.append((number, ValueError(f"not JSON: {exc.msg} at column {exc.colno}")))
    return items


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue one message from the flags, or many from a JSON-lines file; rejected lines become dead letters."""
    import uuid
    from datetime import UTC, datetime

    from shared.data.dead_letters import record_dead_letter
    from shared.data.errors import ValidationFailedError
    from workers.producer import enqueue_message

    if args.file is None:
        if args.company is None or args.chat is None or args.text is None:
            print("fleet enqueue: give --company, --chat and --text, or --file", file=sys.stderr)
            return 2
        payload = {
            "company_id": args.company,
            "chat_id": args.chat,
            "gateway_message_id": args.message_id or f"cli-{uuid.uuid4()}",
            "text": args.text,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        try:
            print(f"enqueued {enqueue_message(payload)}")
        except ValidationFailedError as exc:
            print(f"fleet enqueue: {exc}", file=sys.stderr)
            return 1
        return 0
    enqueued = rejected = 0
    for number, item in _read_jsonl(args.file):
        try:
            if isinstance(item, ValueError):
                raise ValidationFailedError("inbound message", [("line", str(item))])
            if not isinstance(item, dict):
                raise ValidationFailedError("inbound message", [("line", "not a JSON object")])
            enqueue_message(item)
            enqueued += 1
        except ValidationFailedError as exc:
            rejected += 1
            print(f"line {number}: {exc}", file=sys.stderr)
            record_dead_letter(
                "producer.cli",
                str(exc),
                item if not isinstance(item, ValueError) else None,
                error_type="InvalidPayload",
                reference=f"{args.file}:{number}",
            )
    print(f"enqueued {enqueued}, rejected {rejected} (recorded as dead letters)")
    return 1 if rejected else 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    """Run one YClients sync here and now, and print what it did."""
    from shared.yclients.client import YClientsError, make_client
    from shared.yclients.sync import SyncFailedError, sync_entity

    try:
        client = make_client(settings)
    except YClientsError as exc:
        print(f"fleet sync: {exc}", file=sys.stderr)
        return 2
    try:
        summary = sync_entity(
            client,
            settings.yclients,
            args.company,
            args.entity,
            mode="full" if args.full else None,
            allow_mass_delete=args.allow_mass_delete,
        )
    except SyncFailedError as exc:
        print(exc.summary.render(), file=sys.stderr)
        return 1
    finally:
        client.close()
    print(summary.render())
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    """WhatsApp key store: `cleanup [--dry-run]` or `health`."""
    if args.action == "cleanup":
        from shared.whatsapp.cleanup import cleanup_keys

        report = cleanup_keys(settings.keys, dry_run=args.dry_run, time_budget=settings.keys.time_budget_seconds)
        print(report.render())
        return 0
    from shared.whatsapp.health import check_sessions

    results = check_sessions(settings.keys)
    if not results:
        print("no WhatsApp sessions stored")
    for health in results:
        counts = health.details.get("total", 0)
        print(f"{health.company_id:<24} {health.status:<9} {counts:>6} keys  {'; '.join(health.problems) or 'ok'}")
    return 1 if any(h.status == "unhealthy" for h in results) else 0


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """Take a backup now (then prune), list backups, restore one, or run the drill."""
    from zoneinfo import ZoneInfo

    from shared.backups.engine import take_backup
    from shared.backups.restore import drill, restore_backup
    from shared.backups.retention import prune
    from shared.backups.tools import BackupError

    try:
        if args.command == "backup":
            result = take_backup(settings.backup, settings.database_conninfo)
            print(result.render())
            pruned = prune(settings.backup, ZoneInfo(settings.timezone))
            print(f"pruned backups: {pruned or 'none'}")
        elif args.command == "restore":
            backup = restore_backup(
                settings.backup, settings.database_conninfo, args.to, backup_id=args.backup, force=args.force
            )
            print(f"backup {backup['id']} ({backup['finished_at']:%Y-%m-%d %H:%M}) restored into {args.to}")
        elif args.command == "drill":
            result = drill(settings.backup, settings.database_conninfo)
            print(result.render())
            return 0 if result.passed else 1
        else:
            from shared.core.db import run

            for row in run(
                "SELECT id, status, finished_at, size_bytes, path, error FROM backups ORDER BY id DESC LIMIT %s",
                (args.limit,),
                table="backups",
                operation="select",
            ):
                when = f"{row['finished_at']:%Y-%m-%d %H:%M}" if row["finished_at"] else "-"
                print(
                    f"{row['id']:>5} {row['status']:<9} {when:<16} {row['size_bytes'] or 0:>12,}"
                    f"  {row['path'] or row['error'] or ''}"
                )
    except BackupError as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """Print the fleet's health (every part, with reasons); exit 1 when anything is unhealthy."""
    from shared.health.report import build_report

    report = build_report(settings)
    if args.json:
        import json

        print(json.dumps(report, default=str, ensure_ascii=False, indent=2))
    else:
        print(f"fleet: {report['status']}")
        for name, part in report["components"].items():
            print(f"  {name:<10} {part['status']:<9} {'; '.join(part['problems']) or 'ok'}")
    return 1 if report["status"] == "unhealthy" else 0


def cmd_health_server(args: argparse.Namespace, settings: Settings) -> int:
    """Serve /health, /health/<part> and /metrics until stopped."""
    from shared.health.server import make_server
    from shared.observability.sentry import init_sentry

    init_sentry(settings, component="health")
    server = make_server(settings)
    print(f"health service on http://{settings.health.address}:{server.server_address[1]}/health", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_services(args: argparse.Namespace, settings: Settings) -> int:
    """Where the fleet expects PostgreSQL and Redis (read by ops/services.sh), without credentials."""
    from urllib.parse import urlsplit

    from psycopg.conninfo import conninfo_to_dict

    db = conninfo_to_dict(settings.database_conninfo)
    host = str(db.get("host") or "127.0.0.1")
    redis_url = urlsplit(settings.redis_url.get_secret_value())
    print(f"postgres {host} {db.get('port') or 5432} {db.get('dbname', '')}")
    print(f"redis {redis_url.hostname or '127.0.0.1'} {redis_url.port or 6379}")
    print(f"yclients {'configured' if settings.yclients.partner_token else 'standin'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("migrate", cmd_migrate, "create the database if needed and apply every migration")
    check = add("check", cmd_check, "validate settings, the connection budget, PostgreSQL and Redis")
    check.add_argument("--offline", action="store_true", help="skip the PostgreSQL and Redis checks")
    worker = add("worker", cmd_worker, "run one worker type, consuming only its own queue")
    worker.add_argument("type", choices=[wt.value for wt in WorkerType])
    worker.add_argument("--concurrency", type=int, help="override the configured process count")
    worker.add_argument("--name", help="node name (default TYPE@HOST); unique per worker on a host")
    worker.add_argument("--loglevel", default="INFO")
    beat = add("beat", cmd_beat, "run the scheduler (exactly one per fleet)")
    beat.add_argument("--loglevel", default="INFO")
    add("flower", cmd_flower, "run the Flower dashboard")
    enqueue = add("enqueue", cmd_enqueue, "enqueue inbound chat messages (one from flags, or a JSON-lines file)")
    enqueue.add_argument("--company", type=int, help="YClients company id")
    enqueue.add_argument("--chat", help="the client's phone")
    enqueue.add_argument("--text", help="the message text")
    enqueue.add_argument("--message-id", help="gateway message id (default: a new unique id)")
    enqueue.add_argument("--file", help="JSON lines, one payload per line ('-' reads standard input)")
    from shared.yclients.sync import ENTITIES

    sync = add("sync", cmd_sync, "run one YClients sync now and print its figures")
    sync.add_argument("entity", choices=ENTITIES)
    sync.add_argument("--company", type=int, required=True, help="YClients company id")
    sync.add_argument("--full", action="store_true", help="records: walk everything (the only run that may delete)")
    sync.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="confirm a deletion the sync refused as too large (the salon really removed those rows)",
    )
    keys = add("keys", cmd_keys, "WhatsApp key store: cleanup by policy, or session health")
    keys.add_argument("action", choices=["cleanup", "health"])
    keys.add_argument("--dry-run", action="store_true", help="cleanup: report what would be deleted, delete nothing")
    add("backup", cmd_backup, "take a verified backup now (then prune by retention)")
    listing = add("backups", cmd_backup, "list the latest backups")
    listing.add_argument("--limit", type=int, default=20)
    restore = add("restore", cmd_backup, "restore a verified backup (default: the newest) into a database")
    restore.add_argument("--backup", type=int, help="backup id (default: the newest verified)")
    restore.add_argument("--to", required=True, help="target database name")
    restore.add_argument("--force", action="store_true", help="replace a non-empty target database")
    add("drill", cmd_backup, "restore the newest verified backup into a scratch database and compare row counts")
    health = add("health", cmd_health, "print the fleet's health; exit 1 when anything is unhealthy")
    health.add_argument("--json", action="store_true")
    add("health-server", cmd_health_server, "serve /health, /health/<part> and /metrics over HTTP")
    add("services", cmd_services, "print where PostgreSQL and Redis are expected (host, port)")
    ping = add("ping", cmd_ping, "send a ping through every queue and report the answers")
    ping.add_argument("--timeout", type=float, default=10.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        return args.handler(args, settings)
    except (SettingsError, BudgetExceeded) as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
