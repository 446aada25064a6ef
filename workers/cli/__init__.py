"""`fleet`: the one command-line entry point for every operator action."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from shared.core.budget import BudgetExceeded
from shared.core.settings import Settings, SettingsError, WorkerType, get_settings
from shared.observability.redaction import install_secret_filter
from shared.yclients.sync import ENTITIES

log = logging.getLogger("fleet")

Command = Callable[[argparse.Namespace, Settings], int]


def _handler(name: str) -> Command:
    """`module:function` in this package, imported when the command runs: `fleet services` (called by the
    shell scripts) does not import Celery, and a worker's exec does not import the backup engine."""
    module, function = name.split(":")
    return getattr(importlib.import_module(f"workers.cli.{module}"), function)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    add("migrate", "database:migrate", "create the database if needed and apply every migration")
    check = add("check", "database:check", "validate settings, the connection budget, PostgreSQL and Redis")
    check.add_argument("--offline", action="store_true", help="skip the PostgreSQL and Redis checks")
    worker = add("worker", "processes:worker", "run one worker type, consuming only its own queue")
    worker.add_argument("type", choices=[wt.value for wt in WorkerType])
    worker.add_argument("--concurrency", type=int, help="override the configured process count")
    worker.add_argument("--name", help="node name (default TYPE@HOST); unique per worker on a host")
    worker.add_argument("--loglevel", default="INFO")
    beat = add("beat", "processes:beat", "run the scheduler (exactly one per fleet)")
    beat.add_argument("--loglevel", default="INFO")
    add("flower", "processes:flower", "run the Flower dashboard")
    enqueue = add("enqueue", "jobs:enqueue", "enqueue inbound chat messages (one from flags, or a JSON-lines file)")
    enqueue.add_argument("--company", type=int, help="YClients company id")
    enqueue.add_argument("--chat", help="the client's phone")
    enqueue.add_argument("--text", help="the message text")
    enqueue.add_argument("--message-id", help="gateway message id (default: a new unique id)")
    enqueue.add_argument("--file", help="JSON lines, one payload per line ('-' reads standard input)")
    sync = add("sync", "jobs:sync", "run one YClients sync now and print its figures")
    sync.add_argument("entity", choices=ENTITIES)
    sync.add_argument("--company", type=int, required=True, help="YClients company id")
    sync.add_argument("--full", action="store_true", help="records: walk everything (the only run that may delete)")
    sync.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="confirm a deletion the sync refused as too large (the salon really removed those rows)",
    )
    keys = add("keys", "jobs:keys", "WhatsApp key store: cleanup by policy, or session health")
    keys.add_argument("action", choices=["cleanup", "health"])
    keys.add_argument("--dry-run", action="store_true", help="cleanup: report what would be deleted, delete nothing")
    add("backup", "jobs:backup", "take a verified backup now (then prune by retention)")
    listing = add("backups", "jobs:backup", "list the latest backups")
    listing.add_argument("--limit", type=int, default=20)
    restore = add("restore", "jobs:backup", "restore a verified backup (default: the newest) into a database")
    restore.add_argument("--backup", type=int, help="backup id (default: the newest verified)")
    restore.add_argument("--to", required=True, help="target database name")
    restore.add_argument("--force", action="store_true", help="replace a non-empty target database")
    add("drill", "jobs:backup", "restore the newest verified backup into a scratch database and compare row counts")
    crm = add("crm", "jobs:crm", "list chat bookings on their way to YClients (CRM operations), or retry a failed one")
    crm.add_argument("--status", choices=["pending", "done", "failed"])
    crm.add_argument("--limit", type=int, default=20)
    crm.add_argument("--retry", type=int, metavar="ID", help="try a failed operation again from its first attempt")
    crm.add_argument(
        "--repairs", action="store_true", help="what the reconciliation found between bookings and YClients, and did"
    )
    salon = add("salon", "assistant:salon", "a salon's own words and information for the assistant")
    salon.add_argument("action", choices=["show", "set"])
    salon.add_argument("--company", type=int, required=True, help="YClients company id")
    salon.add_argument("--file", help="set: a TOML file with [information], [services] and [masters]")
    handover = add("handover", "assistant:handover", "chats handed to the salon's administrator: list, or hand back")
    handover.add_argument("action", choices=["list", "end"])
    handover.add_argument("--company", type=int, help="YClients company id")
    handover.add_argument("--chat", help="end: the client's phone, as `fleet handover list` prints it")
    door = add(
        "webhook-secret", "webhooks:webhook_secret", "a salon's own YClients webhook secret: set, rotate, revoke"
    )
    door.add_argument("action", choices=["set", "rotate", "revoke"])
    door.add_argument("--company", type=int, required=True, help="YClients company id")
    letters = add("dead-letters", "dead_letters:dead_letters", "list, show, replay or discard dead letters")
    letter_actions = letters.add_subparsers(dest="action", required=True)
    which = argparse.ArgumentParser(add_help=False)  # the filter list and replay share
    which.add_argument("--source", help="a source; ending in *, every source it starts (task.*)")
    which.add_argument("--reason", help="a part of the reason, in any case")
    which.add_argument("--company", type=int, help="YClients company id")
    which.add_argument("--since", help="created at or after: 30m, 2h, 3d, 1w ago, or an ISO date or time")
    which.add_argument("--until", help="created before: the same forms as --since")
    listed = letter_actions.add_parser("list", parents=[which], help="letters, newest first, and counts by reason")
    listed.add_argument("--state", choices=["open", "replayed", "discarded"])
    listed.add_argument("--limit", type=int, default=50)
    shown = letter_actions.add_parser("show", help="one letter: its payload, reason and history")
    shown.add_argument("id", help="a letter id, or spool:N for one still in the Redis spool")
    replayed = letter_actions.add_parser("replay", parents=[which], help="hand letters back to the fleet's own path")
    replayed.add_argument("ids", nargs="*", metavar="ID", help="letter ids (or a filter instead)")
    replayed.add_argument("--dry-run", action="store_true", help="print what would be replayed and how; change nothing")
    replayed.add_argument("--again", action="store_true", help="replay letters replayed or discarded before too")
    replayed.add_argument("--limit", type=int, help="with a filter: at most this many, oldest first")
    dropped = letter_actions.add_parser("discard", help="close letters without replaying them (kept, with the note)")
    dropped.add_argument("ids", nargs="+", type=int, metavar="ID")
    dropped.add_argument("--note", required=True, help="why the letter needs nothing more (kept in its history)")
    health = add("health", "jobs:health", "print the fleet's health; exit 1 when anything is unhealthy")
    health.add_argument("--json", action="store_true")
    add("health-server", "processes:health_server", "serve /health, /health/<part> and /metrics over HTTP")
    add("services", "database:services", "print where PostgreSQL and Redis are expected (host, port)")
    ping = add("ping", "processes:ping", "send a ping through every queue and report the answers")
    ping.add_argument("--timeout", type=float, default=10.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        install_secret_filter(settings)  # the CLI's own lines and the health service's; Celery's processes below
        return _handler(args.handler)(args, settings)
    except (SettingsError, BudgetExceeded) as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 2
