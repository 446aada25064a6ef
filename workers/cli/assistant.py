"""The assistant's operator commands: a salon's own words and information, and chats handed to a person."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from shared.assistant.handover import chats_with_people, hand_back
from shared.assistant.salon_settings import SalonSettingsError, apply_salon_file, describe_salon_settings
from shared.core.settings import Settings
from shared.data.repositories.conversations import MessageRepository


def salon(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "show":
        print(describe_salon_settings(args.company))
        return 0
    if args.file is None:
        print("fleet salon set: give --file SALON.toml (docs/assistant.md shows one)", file=sys.stderr)
        return 2
    try:
        apply_salon_file(args.company, Path(args.file))
    except SalonSettingsError as exc:
        print(f"fleet salon set: nothing changed: {exc}", file=sys.stderr)
        return 1
    print(describe_salon_settings(args.company))
    return 0


def handover(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "end":
        if args.company is None or args.chat is None:
            print("fleet handover end: give --company and --chat", file=sys.stderr)
            return 2
        if not hand_back(args.company, args.chat):
            print(f"fleet handover end: chat {args.chat} of company {args.company} is not handed over", file=sys.stderr)
            return 1
        print(f"chat {args.chat} of company {args.company}: the assistant answers again")
        return 0
    now = datetime.now(UTC)
    rows = chats_with_people(args.company)
    if not rows:
        print("no chat is handed over")
    for row in rows:
        until = row["data"].get("until", "")
        over = until and datetime.fromisoformat(until) <= now
        held = MessageRepository().held_count(row["company_id"], row["chat_id"])
        status = "the assistant answers again (time is up)" if over else f"with a person until {until}"
        print(f"{row['company_id']}  {row['chat_id']}  {status}; {held} messages kept for the administrator")
    return 0
