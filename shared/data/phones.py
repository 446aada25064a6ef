"""Phone numbers in one canonical form (E.164), so one person is one client whatever the gateway sent."""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "RU"  # salons are in Russia; local forms like 8 911 ... mean +7


class InvalidPhoneError(ValueError):
    """The value cannot be a phone number; the message never repeats the value (it is personal data)."""


def normalize_phone(raw: str | int | None, region: str = DEFAULT_REGION) -> str:
    """`+79112345678` from `89112345678`, `+7 (911) 234-56-78`, `79112345678` (int or str), and so on."""
    if raw is None or isinstance(raw, bool):
        raise InvalidPhoneError("phone is missing")
    text = str(raw).strip()
    if not text:
        raise InvalidPhoneError("phone is empty")
    if text.isdigit() and len(text) > 10 and not text.startswith("8"):
        text = "+" + text  # international digits without the plus, as YClients sends them
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:  # its text never holds the number
        raise InvalidPhoneError("phone is not a number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneError(f"phone has an invalid length or prefix ({len(text)} characters)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
