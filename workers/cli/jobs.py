"""One-off operator jobs: enqueue messages, sync now, key cleanup and health, backups, the health report."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from shared.backups.engine import BACKUP_PHASES, take_backup
from shared.backups.restore import DRILL_PHASES, RESTORE_PHASES, drill, restore_backup
from shared.backups.retention import prune
from shared.backups.tools import BackupError, reason_of
from shared.core.periods import BACKUP_NIGHTLY, KEYS_CLEANUP, RESTORE_DRILL
from shared.core.settings import Settings
from shared.core.topology import TaskName
from shared.data.dead_letters import record_dead_letter
from shared.data.errors import ValidationFailedError
from shared.data.repositories.backups import BackupRepository
from shared.data.repositories.crm_operations import CrmOperationRepository
from shared.data.repositories.crm_repairs import CrmRepairRepository
from shared.health.report import build_report
from shared.whatsapp.cleanup import cleanup_keys
from shared.whatsapp.health import check_sessions
from shared.yclients.client import YClientsError, make_client
from shared.yclients.push import RetryRefusedError, retry_given_up
from shared.yclients.sync import SyncFailedError, sync_entity
from workers.app import app
from workers.cli.progress import PhaseBar, SyncBar
from workers.periodic import by_hand
from workers.producer import BrokerError, enqueue_message

BROKER_UNAVAILABLE = 75  # EX_TEMPFAIL: nothing wrong with the input, send it again later


def _read_jsonl(path: str) -> list[tuple[int, object]]:
    """(line number, parsed value or the parse error text) for every non-empty line."""
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


def enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue one message from the flags, or many from a JSON-lines file; rejected lines become dead letters."""
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
        except BrokerError as exc:
            print(f"fleet enqueue: {exc}", file=sys.stderr)
            return BROKER_UNAVAILABLE
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
        except BrokerError as exc:  # every later line would meet the same broker: stop here, say where
            print(
                f"fleet enqueue: stopped at line {number}: {exc} (before it: {enqueued} enqueued, {rejected} rejected)",
                file=sys.stderr,
            )
            return BROKER_UNAVAILABLE
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


def sync(args: argparse.Namespace, settings: Settings) -> int:
    """Run one YClients sync here and now, and print what it did."""
    try:
        client = make_client(settings)
    except YClientsError as exc:
        print(f"fleet sync: {exc}", file=sys.stderr)
        return 2
    try:
        with SyncBar(args.entity) as progress:  # drawn on a terminal only
            summary = sync_entity(
                client,
                settings.yclients,
                args.company,
                args.entity,
                mode="full" if args.full else None,
                allow_mass_delete=args.allow_mass_delete,
                on_progress=progress,
            )
    except SyncFailedError as exc:
        print(exc.summary.render(), file=sys.stderr)
        return 1
    finally:
        client.close()
    print(summary.render())
    return 0 if summary.status == "succeeded" else 3  # partial: saved what it read, read less than YClients said


def keys(args: argparse.Namespace, settings: Settings) -> int:
    """WhatsApp key store: `cleanup [--dry-run]` or `health`."""
    if args.action == "cleanup":
        # By hand: an extra run, never blocked by the nightly one, journaled in periodic_runs (a dry run deletes
        # nothing and is not).
        with nullcontext() if args.dry_run else by_hand(KEYS_CLEANUP, "fleet keys cleanup"):
            report = cleanup_keys(settings.keys, dry_run=args.dry_run, time_budget=settings.keys.time_budget_seconds)
        print(report.render())
        return 0
    results = check_sessions(settings.keys)
    if not results:
        print("no WhatsApp sessions stored")
    for health in results:
        counts = health.details.get("total", 0)
        print(f"{health.company_id:<24} {health.status:<9} {counts:>6} keys  {'; '.join(health.problems) or 'ok'}")
    return 1 if any(h.status == "unhealthy" for h in results) else 0


def backup(args: argparse.Namespace, settings: Settings) -> int:
    """Take a backup now (then prune), list backups, restore one, or run the drill."""
    try:
        if args.command == "backup":
            # By hand: an extra run, never blocked by the nightly one, journaled in periodic_runs.
            with by_hand(BACKUP_NIGHTLY, "fleet backup"):
                with PhaseBar("backup", BACKUP_PHASES) as progress:  # drawn on a terminal only, like the others
                    result = take_backup(settings.backup, settings.session_conninfo, on_progress=progress)
                    progress.finish()
                print(result.render())
                pruned = prune(settings.backup, ZoneInfo(settings.timezone))
            print(f"pruned backups: {pruned or 'none'}")
        elif args.command == "restore":
            with PhaseBar("restore", RESTORE_PHASES) as progress:
                backup = restore_backup(
                    settings.backup,
                    settings.session_conninfo,
                    args.to,
                    backup_id=args.backup,
                    force=args.force,
                    on_progress=progress,
                )
                progress.finish()
            print(f"backup {backup['id']} ({backup['finished_at']:%Y-%m-%d %H:%M}) restored into {args.to}")
        elif args.command == "drill":
            with by_hand(RESTORE_DRILL, "fleet drill") as journal, PhaseBar("drill", DRILL_PHASES) as progress:
                result = drill(settings.backup, settings.session_conninfo, on_progress=progress)
                if result.passed:
                    progress.finish()
                else:
                    journal.failure = result.render()
            print(result.render(), file=sys.stdout if result.passed else sys.stderr)  # a failure: its cause, one line
            return 0 if result.passed else 1
        else:
            for row in BackupRepository().newest(args.limit):
                when = f"{row['finished_at']:%Y-%m-%d %H:%M}" if row["finished_at"] else "-"
                print(
                    f"{row['id']:>5} {row['status']:<9} {when:<16} {row['size_bytes'] or 0:>12,}"
                    f"  {row['path'] or row['error'] or ''}"
                )
    except BackupError as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  (the cause in one line, as for our own errors; no traceback)
        print(f"fleet {args.command}: {reason_of(exc, settings.backup.directory)}", file=sys.stderr)
        return 1
    return 0


def health(args: argparse.Namespace, settings: Settings) -> int:
    """Print the fleet's health (every part, with reasons); exit 1 when anything is unhealthy."""
    report = build_report(settings)
    if args.json:
        print(json.dumps(report, default=str, ensure_ascii=False, indent=2))
    else:
        print(f"fleet: {report['status']}")
        for name, part in report["components"].items():
            print(f"  {name:<10} {part['status']:<9} {'; '.join(part['problems']) or 'ok'}")
    return 1 if report["status"] == "unhealthy" else 0


def crm(args: argparse.Namespace, settings: Settings) -> int:
    """List the CRM operations (chat bookings on their way to YClients), or try a given-up one again."""
    if args.retry is not None:
        try:
            retry_given_up(args.retry)
        except RetryRefusedError as exc:
            print(f"fleet crm: {exc}", file=sys.stderr)
            return 1
        app.send_task(TaskName.PUSH_BOOKING, (args.retry,))
        print(f"operation {args.retry} reopened and sent to the yclients worker")
        return 0
    if args.repairs:
        for repair in CrmRepairRepository().find_many(None, order_by=["-id"], limit=args.limit):
            print(
                f"{repair['created_at']:%Y-%m-%d %H:%M} company {repair['company_id']} booking {repair['booking_id']}"
                f" record {repair['record_id']}: {repair['found']} -> {repair['repair']}"
            )
        return 0
    for row in CrmOperationRepository().recent(args.status, args.limit):
        print(
            f"{row['id']:>6} {row['kind']:<10} {row['status']:<8} company {row['company_id']}"
            f" booking {row['booking_id']} attempts {row['attempts']}  {row['note'] or ''}"
        )
    return 0
