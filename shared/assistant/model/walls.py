"""The walls between the client and the model: what leaves for the model carries no phone number and no
client name, and what comes back is sent only as short Russian plain text with the client's name put back.

A phone number in the client's text is replaced by a placeholder before it leaves (the model never needs
one: the tools act for this client only); the client's own name by `{имя}`, which the model may use and the
reply gets back. A reply is refused (and the rule-based assistant answers instead) when it is empty, longer
than the cap, not mostly Cyrillic, carries markup a chat does not render, or carries a phone number that is
not the salon's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME = "{имя}"
PHONE = "[телефон]"
# Seven or more digits, with the separators people type between them (+7 (911) 000-11-22, 8 911 0001122).
PHONE_NUMBER = re.compile(r"(?<![\w])\+?\d(?:[\s\-().]{0,3}\d){6,14}(?![\w])")
MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>|```|^\s*#{1,6}\s", re.MULTILINE)
EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
LATIN = re.compile(r"[a-z]", re.IGNORECASE)


class ReplyRefused(Exception):
    """The model's text may not be sent to the client; `reason` names why (for the fallback counters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Walls:
    """One client's walls: their name, and the salon's own phone (the only number a reply may carry)."""

    client_name: str | None
    client_phone: str | None
    salon_phone: str | None
    max_chars: int

    def outgoing(self, text: str) -> str:
        """The client's text as the model may see it: no phone number of anyone, not the client's name."""
        return self.private(PHONE_NUMBER.sub(PHONE, text))

    def private(self, text: str) -> str:
        """Any text (a tool's result) without the client's own name and phone number; the salon's data stays."""
        own = _digits(self.client_phone or "")[-10:]
        if len(own) == 10:
            text = PHONE_NUMBER.sub(lambda found: PHONE if _digits(found.group())[-10:] == own else found.group(), text)
        for part in self._name_parts():
            text = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", NAME, text, flags=re.IGNORECASE)
        return text

    def incoming(self, text: str | None) -> str:
        """The model's text as the client may get it, or `ReplyRefused`."""
        reply = (text or "").strip()
        if not reply:
            raise ReplyRefused("empty")
        if len(reply) > self.max_chars:
            raise ReplyRefused("too_long")
        if MARKUP.search(reply):
            raise ReplyRefused("markup")
        reply = EMPHASIS.sub("", reply)
        cyrillic, latin = len(CYRILLIC.findall(reply)), len(LATIN.findall(reply))
        if cyrillic < 2 * latin or cyrillic == 0:
            raise ReplyRefused("not_russian")
        salon = _digits(self.salon_phone or "")
        for number in PHONE_NUMBER.findall(reply):
            if not salon or _digits(number)[-10:] != salon[-10:]:
                raise ReplyRefused("personal_data")
        return reply.replace(NAME, self.client_name or "").replace(" ,", ",").strip()

    def _name_parts(self) -> list[str]:
        return [part for part in re.split(r"\s+", self.client_name or "") if len(part) >= 3]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
