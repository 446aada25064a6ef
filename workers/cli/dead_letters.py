"""`fleet dead-letters`: what the fleet refused or gave up, for an operator to list, read, replay or discard.

Letters still in the Redis spool (PostgreSQL was away when they were written) are listed and shown too, as
`spool:N` (N = 1 is the next to be filed); they get an id, and can be replayed or discarded, once the
maintenance worker files them (every minute). What a replay does per source: `shared/yclients/replay.py`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
from tqdm import tqdm

from shared.core.settings import Settings
from shared.data.dead_letters import spooled_letter, spooled_letters
from shared.data.errors import DataLayerError
from shared.data.repositories.dead_letters import DeadLetterRepository, LetterFilter, State, reason_group
from shared.inbound.replay import Handled, discard_letter, preview_letter, replay_letter
from shared.yclients.replay import replay_planner
from workers.app import app
from workers.producer import enqueue_message

SPOOLED = re.compile(r"^spool:(\d+)$")
AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
REASON_CHARS = 90


class WhenError(ValueError):
    """A time the operator wrote that is not one."""


class WorkerSenders:
    """How a replay hands work to the workers: the producer's path for messages, `send_task` for the rest."""

    def enqueue(self, payload: Mapping[str, Any]) -> str:
        return enqueue_message(payload)

    def send(self, task: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
        return app.send_task(task, args=list(args), kwargs=dict(kwargs or {})).id


def operator() -> str:
    """Who is acting, for the letter's history: the user behind sudo, else the OS user."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def parse_when(text: str, zone: ZoneInfo, now: datetime | None = None) -> datetime:
    """`30m`, `2h`, `3d`, `1w` ago, or an ISO date or time (without an offset: in the fleet's timezone)."""
    now = now or datetime.now(zone)
    match = AGO.match(text.strip())
    if match:
        return now - timedelta(**{UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WhenError(f"{text!r} is neither a time ago (30m, 2h, 3d, 1w) nor an ISO date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _filter(args: argparse.Namespace, zone: ZoneInfo, states: tuple[State, ...] | None) -> LetterFilter:
    return LetterFilter(
        source=args.source,
        reason=args.reason,
        company_id=args.company,
        since=parse_when(args.since, zone) if args.since else None,
        until=parse_when(args.until, zone) if args.until else None,
        states=states,
    )


def _has_filter(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("source", "reason", "company", "since", "until"))


def _time(value: datetime | None, zone: ZoneInfo) -> str:
    return f"{value.astimezone(zone):%Y-%m-%d %H:%M:%S}" if value else "-"


def _short(text: str, limit: int = REASON_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _state(row: Mapping[str, Any]) -> str:
    if row["state"] == "open" and row.get("last_outcome") in ("refused", "failed"):
        return f"open ({row['last_outcome']})"
    return str(row["state"])


def _line(ident: str, when: str, source: str, company: Any, state: str, reason: str) -> str:
    return f"{ident:>8}  {when:<19}  {source:<28}  {company!s:>9}  {state:<15}  {reason}"


def _spooled(where: LetterFilter) -> list[dict[str, Any]]:
    """The spool's letters the filter admits, newest first; a Redis that is away shows as none, with a word."""
    try:
        letters = spooled_letters()
    except redis.RedisError as exc:
        print(f"fleet dead-letters: the Redis spool could not be read ({type(exc).__name__})", file=sys.stderr)
        return []
    return [letter for letter in reversed(letters) if where.admits(letter, "open", letter["spooled_at"])]


def list_letters(args: argparse.Namespace, zone: ZoneInfo) -> int:
    states: tuple[State, ...] | None = (args.state,) if args.state else None
    where = _filter(args, zone, states)
    spool = _spooled(where) if args.state in (None, "open") else []
    status = 0
    try:
        rows = DeadLetterRepository().newest(where, args.limit)
        counts = DeadLetterRepository().count_by_reason(where)
    except DataLayerError as exc:
        print(f"fleet dead-letters: PostgreSQL could not be read ({exc}); the spool only", file=sys.stderr)
        rows, counts, status = [], {}, 1
    print(_line("id", f"created ({zone.key})", "source", "company", "state", "reason"))
    shown = 0
    for letter in spool[: args.limit]:
        ident = f"spool:{letter['position']}"
        when = _time(letter["spooled_at"], zone)
        print(_line(ident, when, letter["source"], letter["company_id"] or "-", "spooled", _short(letter["reason"])))
        shown += 1
    for row in rows[: max(args.limit - shown, 0)]:
        when = _time(row["created_at"], zone)
        print(_line(str(row["id"]), when, row["source"], row["company_id"] or "-", _state(row), _short(row["reason"])))
        shown += 1
    for letter in spool:
        group = reason_group(letter["reason"])
        counts[group] = counts.get(group, 0) + 1
    total = sum(counts.values())
    print(f"\n{total} letter(s) match ({len(spool)} in the spool, not yet filed); {shown} shown")
    if counts:
        print("by reason:")
        for group, letters in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {letters:>6}  {group}")
    return status


def _show_fields(letter: Mapping[str, Any], state: str, created: str, replay: str) -> None:
    for label, value in (
        ("state", state),
        ("source", letter["source"]),
        ("created", created),
        ("company", letter["company_id"]),
        ("reason", letter["reason"]),
        ("error type", letter["error_type"]),
        ("reference", letter["reference"]),
        ("task id", letter["task_id"]),
        ("replay", replay),
    ):
        print(f"{label + ':':<12} {value if value is not None else '-'}")
    print("payload:")
    print(json.dumps(letter["payload"], ensure_ascii=False, indent=2, sort_keys=True, default=str))


def _event_time(stamp: Any, zone: ZoneInfo) -> str:
    try:
        return _time(datetime.fromisoformat(str(stamp)), zone)
    except ValueError:
        return str(stamp)


def show(args: argparse.Namespace, zone: ZoneInfo) -> int:
    spooled = SPOOLED.match(args.id)
    if spooled:
        letter = spooled_letter(int(spooled.group(1)))
        if letter is None:
            print(f"fleet dead-letters: nothing at {args.id} (filed meanwhile? `list` shows its id)", file=sys.stderr)
            return 1
        print(f"dead letter {args.id} (in the Redis spool)")
        replay = "not yet: the maintenance worker files it into the table within a minute; it then has an id"
        _show_fields(letter, "spooled", f"{_time(letter['spooled_at'], zone)} (spooled)", replay)
        return 0
    if not args.id.isdigit():
        print(f"fleet dead-letters: {args.id!r} is not a letter id (a number, or spool:N)", file=sys.stderr)
        return 2
    row = DeadLetterRepository().letter(int(args.id))
    if row is None:
        print(f"fleet dead-letters: no dead letter {args.id}", file=sys.stderr)
        return 1
    print(f"dead letter {row['id']}")
    plan = preview_letter(row["id"], replay_planner(WorkerSenders()), again=True)
    _show_fields(row, _state(row), _time(row["created_at"], zone), plan.detail)
    print("history:")
    if not row["history"]:
        print("  (none: never replayed nor discarded)")
    for event in row["history"]:
        line = f"  {_event_time(event.get('at'), zone)}  {event.get('action', '?'):<8} {event.get('outcome', '?'):<14}"
        line += f" by {event.get('by') or '?'}"
        if event.get("note"):
            line += f"  note: {event['note']}"
        if event.get("detail"):
            line += f"  {event['detail']}"
        print(line)
    return 0


def _report(handled: Handled) -> str:
    return f"{handled.letter_id:>8}  {handled.source or '-':<28}  {handled.outcome}: {handled.detail}"


def replay(args: argparse.Namespace, zone: ZoneInfo) -> int:
    if bool(args.ids) == _has_filter(args):
        print(
            "fleet dead-letters replay: give letter ids, or a filter (--source, --reason, ...), not both",
            file=sys.stderr,
        )
        return 2
    results: list[Handled] = []
    if args.ids:
        ids: list[int] = []
        for ident in args.ids:
            if ident.isdigit():
                ids.append(int(ident))
            elif SPOOLED.match(ident):
                print(f"{ident:>8}  cannot be replayed yet: it is still in the Redis spool; it has an id once filed")
                results.append(Handled(0, None, "refused", "spooled"))
            else:
                print(f"fleet dead-letters: {ident!r} is not a letter id", file=sys.stderr)
                return 2
    else:
        states: tuple[State, ...] = ("open", "replayed", "discarded") if args.again else ("open",)
        where = _filter(args, zone, states)
        ids = DeadLetterRepository().matching_ids(where, args.limit)
        waiting = _spooled(where)
        if waiting:
            print(f"{len(waiting)} matching letter(s) are still in the Redis spool: replay them once filed (a minute)")
    planner = replay_planner(WorkerSenders())
    by = operator()
    for letter_id in tqdm(ids, desc="replay", unit="letter", disable=not sys.stderr.isatty()):
        if args.dry_run:
            handled = preview_letter(letter_id, planner, again=args.again)
        else:
            handled = replay_letter(letter_id, planner, by=by, again=args.again)
        results.append(handled)
        tqdm.write(_report(handled), file=sys.stdout)
    tally: dict[str, int] = {}
    for handled in results:
        tally[handled.outcome] = tally.get(handled.outcome, 0) + 1
    summary = ", ".join(f"{outcome} {count}" for outcome, count in sorted(tally.items())) or "no letters matched"
    print(f"{summary}{' (dry run: nothing changed)' if args.dry_run else ''}")
    return 0 if all(handled.ok or handled.outcome == "skipped" for handled in results) else 1


def discard(args: argparse.Namespace, zone: ZoneInfo) -> int:
    if not args.note.strip():
        print("fleet dead-letters discard: --note must say why the letter needs nothing more", file=sys.stderr)
        return 2
    by = operator()
    results = [discard_letter(letter_id, args.note, by=by) for letter_id in args.ids]
    for handled in results:
        print(_report(handled))
    return 0 if all(handled.ok for handled in results) else 1


def dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """List, show, replay or discard dead letters; every replay and discard is kept on the letter."""
    zone = ZoneInfo(settings.timezone)
    actions = {"list": list_letters, "show": show, "replay": replay, "discard": discard}
    try:
        return actions[args.action](args, zone)
    except WhenError as exc:
        print(f"fleet dead-letters: {exc}", file=sys.stderr)
        return 2
    except DataLayerError as exc:
        print(f"fleet dead-letters: {exc}", file=sys.stderr)
        return 1
