"""Phone numbers in one canonical form (E.164), so one person is one client whatever the gateway sent."""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "RU"  # salons are in Russia; local forms like 8 911 ... mean +7


class InvalidPhoneError(ValueError):
    """The value cannot be a phone number; the message never repeats the value (it is personal data)."""


def _russian_mobile() -> re.Pattern[str] | None:
    """The common shapes (+79XXXXXXXXX, 79XXXXXXXXX, 89XXXXXXXXX, 9XXXXXXXXX; ASCII digits) holding a valid
    Russian mobile, by phonenumbers' own metadata (its general and mobile patterns); group 1 is the national
    number.

    None (no fast path) if the metadata no longer has the shape this relies on: +7 numbers tried as Russian
    first, 8 the only national prefix, a 10-digit national number starting with 9 possible as a mobile.
    """
    ru = phonenumbers.PhoneMetadata.metadata_for_region(DEFAULT_REGION)
    if ru is None or ru.country_code != 7 or phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(7, ())[:1] != ("RU",):
        return None
    if ru.national_prefix_for_parsing != "8" or ru.national_prefix_transform_rule:
        return None
    if ru.leading_digits is not None and not re.match(ru.leading_digits, "9"):
        return None
    descs = (ru.general_desc, ru.mobile)
    if any(d is None or not d.national_number_pattern or 10 not in d.possible_length for d in descs):
        return None
    general, mobile = (d.national_number_pattern for d in descs)
    return re.compile(rf"(?:\+?7|8)?(?=9[0-9]{{9}}\Z)(?=(?:{general})\Z)((?:{mobile}))\Z", re.ASCII)


_MOBILE = _russian_mobile()


def _fast(text: str) -> str | None:
    """The answer for a valid Russian mobile in a common shape, without the full parser (~15-20 µs a number,
    most of a sync page's validation); None for anything else, which goes to the full parser, so every
    refusal is the parser's own."""
    hit = _MOBILE.fullmatch(text) if _MOBILE is not None else None
    return None if hit is None else "+7" + hit.group(1)


def normalize_phone(raw: str | int | None, region: str = DEFAULT_REGION) -> str:
    """`+79112345678` from `89112345678`, `+7 (911) 234-56-78`, `79112345678` (int or str), and so on."""
    text = _text(raw)
    if region == DEFAULT_REGION:
        fast = _fast(text)
        if fast is not None:
            return fast
    return _parse(text, region)


def normalize_phone_fully(raw: str | int | None, region: str = DEFAULT_REGION) -> str:
    """`normalize_phone` through the full parser only: the reference the fast path is tested against."""
    return _parse(_text(raw), region)


def _text(raw: str | int | None) -> str:
    if raw is None or isinstance(raw, bool):
        raise InvalidPhoneError("phone is missing")
    text = str(raw).strip()
    if not text:
        raise InvalidPhoneError("phone is empty")
    return text


def _parse(text: str, region: str) -> str:
    if text.isdigit() and len(text) > 10 and not text.startswith("8"):
        text = "+" + text  # international digits without the plus, as YClients sends them
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:  # its text never holds the number
        raise InvalidPhoneError("phone is not a number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneError(f"phone has an invalid length or prefix ({len(text)} characters)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def masked_phone(phone: str) -> str:
    """A chat's number as operators may see it in a channel outside the fleet: "+7911*****22"."""
    digits = phone.lstrip("+")
    if len(digits) < 7:
        return "+" + "*" * len(digits)
    return f"+{digits[:4]}{'*' * (len(digits) - 6)}{digits[-2:]}"
