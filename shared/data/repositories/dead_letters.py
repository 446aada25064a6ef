"""`dead_letters` for operators: find letters, read one, and keep every replay and discard on the letter.

A letter is `open` until a replay hands it back to the fleet (`replayed_at`) or an operator discards it
(`discarded_at`, with a note); both keep the letter, and `history` says who did what, when, and how it ended.
The same filter (`LetterFilter`) selects letters in the table and, in Python, letters still in the Redis spool,
so a listing shows both. `MessageReplayRepository` and `ReplyReplayRepository` hold what a replay asks of the
chat tables (has the conversation moved on since, and reopening a failed message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb

from shared.core.db import Connection, run
from shared.data.repository import Repository, Row

State = Literal["open", "replayed", "discarded"]
STATES: tuple[State, ...] = ("open", "replayed", "discarded")
Mark = Literal["replayed", "discarded"]

_DIGITS = re.compile(r"\d+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_SPOOLED_AT = re.compile(r" \(spooled at [^)]*\)$")
_SPACE = re.compile(r"\s+")
REASON_GROUP_CHARS = 100


def reason_group(reason: str) -> str:
    """The reason with what differs between letters of one cause taken out (numbers, quoted values, the time a
    letter was spooled), so a count by reason shows causes, not ids. Applying it twice changes nothing."""
    text = _SPOOLED_AT.sub("", reason)
    text = _QUOTED.sub("'…'", _DIGITS.sub("N", text))
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= REASON_GROUP_CHARS else text[: REASON_GROUP_CHARS - 1] + "…"


@dataclass(frozen=True)
class LetterFilter:
    """Which letters: `source` exactly, or every source it starts with when it ends in `*` (`task.*`); `reason`
    as a case-insensitive part; the company's id; created in [since, until); in one of `states`."""

    source: str | None = None
    reason: str | None = None
    company_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    states: tuple[State, ...] | None = None

    def params(self) -> dict[str, Any]:
        prefix = self.source[:-1] if self.source and self.source.endswith("*") else None
        return {
            "source": None if prefix is not None else self.source,
            "prefix": prefix,
            "reason": self.reason,
            "company": self.company_id,
            "since": self.since,
            "until": self.until,
            "states": list(self.states) if self.states is not None else None,
        }

    def admits(self, letter: dict[str, Any], state: str, created_at: datetime | None) -> bool:
        """The same test in Python, for letters outside the table (the spool)."""
        source = str(letter.get("source") or "")
        if self.source is not None and not (
            source.startswith(self.source[:-1]) if self.source.endswith("*") else source == self.source
        ):
            return False
        if self.reason is not None and self.reason.lower() not in str(letter.get("reason") or "").lower():
            return False
        if self.company_id is not None and letter.get("company_id") != self.company_id:
            return False
        if (self.since is not None or self.until is not None) and created_at is None:
            return False
        if self.since is not None and created_at is not None and created_at < self.since:
            return False
        if self.until is not None and created_at is not None and created_at >= self.until:
            return False
        return self.states is None or state in self.states


_STATE = (
    "CASE WHEN discarded_at IS NOT NULL THEN 'discarded' WHEN replayed_at IS NOT NULL THEN 'replayed' ELSE 'open' END"
)
_MATCHES = (
    "(%(source)s::text IS NULL OR source = %(source)s)"
    " AND (%(prefix)s::text IS NULL OR starts_with(source, %(prefix)s))"
    " AND (%(reason)s::text IS NULL OR strpos(lower(reason), lower(%(reason)s)) > 0)"
    " AND (%(company)s::bigint IS NULL OR company_id = %(company)s)"
    " AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)"
    " AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)"
    f" AND (%(states)s::text[] IS NULL OR ({_STATE}) = ANY(%(states)s))"
)
_SUMMARY = (
    f"id, created_at, source, reason, error_type, company_id, reference, task_id, ({_STATE}) AS state,"
    " replayed_at, discarded_at, jsonb_array_length(history) AS events, history -> -1 ->> 'outcome' AS last_outcome"
)


class DeadLetterRepository(Repository):
    """Letters are written by `shared.data.dead_letters.record_dead_letter`; here they are read and acted on."""

    table = "dead_letters"
    columns = frozenset(
        {
            "id",
            "source",
            "reason",
            "error_type",
            "company_id",
            "reference",
            "task_id",
            "payload",
            "created_at",
            "history",
            "replayed_at",
            "discarded_at",
        }
    )

    def newest(self, where: LetterFilter, limit: int) -> list[Row]:
        """The newest matching letters, without their payloads (a listing of thousands stays light)."""
        return run(
            f"SELECT {_SUMMARY} FROM dead_letters WHERE {_MATCHES} ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
            {**where.params(), "limit": limit},
            table=self.table,
            operation="select",
        )

    def matching_ids(self, where: LetterFilter, limit: int | None = None) -> list[int]:
        """Ids of every matching letter, oldest first: replays go in the order the letters were written."""
        rows = run(
            f"SELECT id FROM dead_letters WHERE {_MATCHES} ORDER BY id LIMIT %(limit)s",
            {**where.params(), "limit": limit},
            table=self.table,
            operation="select",
        )
        return [row["id"] for row in rows]

    def count_by_reason(self, where: LetterFilter) -> dict[str, int]:
        """How many matching letters each cause has (`reason_group`), largest first. The numbers are taken out
        in the query already, so ids do not make one group per letter on the way."""
        rows = run(
            "SELECT regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason, count(*) AS letters"
            f" FROM dead_letters WHERE {_MATCHES} GROUP BY 1",
            where.params(),
            table=self.table,
            operation="select",
        )
        counts: dict[str, int] = {}
        for row in rows:
            group = reason_group(row["reason"])
            counts[group] = counts.get(group, 0) + row["letters"]
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def letter(self, letter_id: int, *, conn: Connection | None = None) -> Row | None:
        """One letter whole: payload and history too, with its state."""
        rows = run(
            f"SELECT *, ({_STATE}) AS state FROM dead_letters WHERE id = %s",
            (letter_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return rows[0] if rows else None

    def lock(self, letter_id: int, *, conn: Connection) -> Row | None:
        """The letter whole, locked until the caller's transaction ends: two operators replaying one letter at
        once take turns, and the second sees what the first did."""
        rows = run(
            f"SELECT *, ({_STATE}) AS state FROM dead_letters WHERE id = %s FOR UPDATE",
            (letter_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return rows[0] if rows else None

    def record(
        self,
        letter_id: int,
        *,
        action: str,
        outcome: str,
        detail: str,
        by: str,
        note: str | None = None,
        mark: Mark | None = None,
        conn: Connection | None = None,
    ) -> None:
        """One event appended to the letter's history (the database's clock), and with `mark` its new state:
        `replayed` (which also lifts a discard) or `discarded`."""
        event = {"action": action, "outcome": outcome, "detail": detail[:2000], "by": by[:200], "note": note}
        run(
            "UPDATE dead_letters SET history = history || jsonb_build_array("
            "jsonb_build_object('at', now()) || %(event)s::jsonb),"
            " replayed_at = CASE WHEN %(mark)s::text = 'replayed' THEN now() ELSE replayed_at END,"
            " discarded_at = CASE WHEN %(mark)s::text = 'replayed' THEN NULL"
            " WHEN %(mark)s::text = 'discarded' THEN now() ELSE discarded_at END"
            " WHERE id = %(id)s",
            {"id": letter_id, "event": Jsonb(event), "mark": mark},
            table=self.table,
            operation="update",
            conn=conn,
        )


class MessageReplayRepository(Repository):
    """What a replay asks of `messages`: where a message stands, whether its chat moved on, and reopening one
    the answering gave up on."""

    table = "messages"
    columns = frozenset({"id", "company_id", "chat_id", "gateway_message_id", "chat_seq", "status", "sent_at"})

    def standing(self, message_id: int, *, conn: Connection | None = None) -> Row | None:
        rows = run(
            "SELECT id, company_id, chat_id, chat_seq, status FROM messages WHERE id = %s",
            (message_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return rows[0] if rows else None

    def stored(self, company_id: int, gateway_message_id: str, *, conn: Connection | None = None) -> Row | None:
        """The message stored under this gateway id, if any (a replay of it would be a re-delivery)."""
        rows = run(
            "SELECT id, status FROM messages WHERE company_id = %s AND gateway_message_id = %s",
            (company_id, gateway_message_id),
            table=self.table,
            operation="select",
            conn=conn,
        )
        return rows[0] if rows else None

    def answered_after(self, company_id: int, chat_id: str, chat_seq: int, *, conn: Connection | None = None) -> bool:
        """Whether a later message of the chat has been answered (or handed to a person) since."""
        return run(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE company_id = %s AND chat_id = %s AND chat_seq > %s"
            " AND status IN ('answered', 'merged', 'held')) AS later",
            (company_id, chat_id, chat_seq),
            table=self.table,
            operation="select",
            conn=conn,
        )[0]["later"]

    def sent_after(self, company_id: int, chat_id: str, sent_at: datetime, *, conn: Connection | None = None) -> bool:
        """Whether the chat holds a message sent after `sent_at`."""
        return run(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE company_id = %s AND chat_id = %s AND sent_at > %s) AS later",
            (company_id, chat_id, sent_at),
            table=self.table,
            operation="select",
            conn=conn,
        )[0]["later"]

    def reopen_failed(self, message_id: int, *, conn: Connection | None = None) -> Row | None:
        """A given-up message pending again from its first attempt (its chat and company returned, for the drain);
        None unless it had failed."""
        rows = run(
            "UPDATE messages SET status = 'pending', attempts = 0, error = NULL"
            " WHERE id = %s AND status = 'failed' RETURNING company_id, chat_id",
            (message_id,),
            table=self.table,
            operation="update",
            conn=conn,
        )
        return rows[0] if rows else None


class ReplyReplayRepository(Repository):
    """What a replay asks of `outbox`: whether the chat got a later reply since the one that was not delivered."""

    table = "outbox"
    columns = frozenset({"id", "company_id", "chat_id", "status"})

    def delivered_after(self, outbox_id: int, *, conn: Connection | None = None) -> bool:
        return run(
            "SELECT EXISTS (SELECT 1 FROM outbox later JOIN outbox this ON this.id = %s"
            " WHERE later.company_id = this.company_id AND later.chat_id = this.chat_id AND later.id > this.id"
            " AND later.status = 'done') AS later",
            (outbox_id,),
            table=self.table,
            operation="select",
            conn=conn,
        )[0]["later"]
