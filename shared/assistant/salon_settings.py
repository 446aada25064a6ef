"""A salon's own settings for the assistant, from a TOML file an operator keeps (docs/assistant.md):

    [information]            # what the assistant tells clients; YClients' address and phone otherwise
    address = "ул. Пушкина, 10, 2 этаж"
    hours = "ежедневно с 10:00 до 21:00"
    payment = "наличные, карты, СБП"

    [services]               # the salon's own words -> its services, by their title in YClients
    "френч" = ["Маникюр с покрытием"]

    [masters]                # nicknames -> masters, by their name in YClients
    "Ленуся" = "Елена Кузнецова"

Titles and names are resolved against the synced catalogue when the file is applied: an unknown one is
refused with its name, and nothing is changed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from shared.data.errors import ValidationFailedError
from shared.data.repositories.catalogue import ServiceRepository, StaffRepository
from shared.data.repositories.salon_assistant import SalonAssistantRepository
from shared.data.repository import Row


class SalonSettingsError(ValueError):
    """The file cannot be applied; the message names every problem."""


def _plain(text: str) -> str:
    return " ".join(text.lower().replace("ё", "е").split())


def apply_salon_file(company_id: int, path: Path) -> Row:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SalonSettingsError(f"{path}: {exc}") from None
    return apply_salon_settings(company_id, data)


def apply_salon_settings(company_id: int, data: dict[str, Any]) -> Row:
    problems = [f"unknown section [{key}]" for key in data if key not in ("information", "services", "masters")]
    services = {_plain(s["title"]): s["id"] for s in ServiceRepository().active(company_id)}
    staff = {_plain(m["name"]): m["id"] for m in StaffRepository().bookable(company_id)}
    service_words: dict[str, list[int]] = {}
    for phrase, titles in (data.get("services") or {}).items():
        titles = [titles] if isinstance(titles, str) else titles
        ids = [services.get(_plain(str(title))) for title in titles]
        unknown = [str(t) for t, i in zip(titles, ids, strict=True) if i is None]
        if unknown:
            problems.append(f"services: {phrase!r} names services the salon does not offer: {unknown}")
        service_words[phrase] = [i for i in ids if i is not None]
    master_words: dict[str, int] = {}
    for nickname, name in (data.get("masters") or {}).items():
        staff_id = staff.get(_plain(str(name)))
        if staff_id is None:
            problems.append(f"masters: {nickname!r} names {name!r}, who is not one of the salon's masters")
        else:
            master_words[nickname] = staff_id
    if problems:
        raise SalonSettingsError("; ".join(problems))
    try:
        return SalonAssistantRepository().upsert(
            {
                "company_id": company_id,
                "information": data.get("information") or {},
                "service_words": service_words,
                "master_words": master_words,
            }
        )
    except ValidationFailedError as exc:
        raise SalonSettingsError(str(exc)) from None


def describe_salon_settings(company_id: int) -> str:
    row = SalonAssistantRepository().of(company_id)
    titles = {s["id"]: s["title"] for s in ServiceRepository().active(company_id)}
    names = {m["id"]: m["name"] for m in StaffRepository().bookable(company_id)}
    lines = ["[information]"]
    lines += [f"{topic} = {text!r}" for topic, text in sorted(row["information"].items())]
    lines.append("\n[services]")
    lines += [
        f"{phrase!r} = {[titles.get(i, f'#{i} (no longer offered)') for i in ids]}"
        for phrase, ids in sorted(row["service_words"].items())
    ]
    lines.append("\n[masters]")
    lines += [f"{nick!r} = {names.get(i, f'#{i} (no longer bookable)')!r}" for nick, i in row["master_words"].items()]
    return "\n".join(lines)
