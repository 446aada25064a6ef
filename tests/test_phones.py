"""Phone normalisation: the fast path for the common shapes answers exactly as the full parser does."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from shared.data import phones
from shared.data.phones import InvalidPhoneError, normalize_phone, normalize_phone_fully

CANONICAL_SHAPE = re.compile(r"(?:\+?7|8)?9[0-9]{9}", re.ASCII)  # the shapes the fast path takes


def _outcome(normalize: Callable[[str | int | None], str], raw: str | int | None) -> tuple[str, str]:
    """("ok", E.164) or (error type, message), so two paths compare on results and errors alike."""
    try:
        return "ok", normalize(raw)
    except InvalidPhoneError as exc:
        return type(exc).__name__, str(exc)


def _shapes(national: str) -> list[str | int]:
    """A national number in every shape the fast path takes, plus near misses it must leave to the parser."""
    return [
        f"+7{national}",
        f"7{national}",
        f"8{national}",
        national,
        int(f"7{national}"),
        f"  +7{national} ",
        f"+7 {national[:3]} {national[3:6]}-{national[6:8]}-{national[8:]}",
        f"8 ({national[:3]}) {national[3:]}",
        f"+8{national}",
        f"+9{national}",
        f"77{national}",
        f"87{national}",
        f"+7{national}0",
        f"+7{national[:-1]}",
        f"8{national[:-1]}",
        national[:-1],
        f"+7{national}\n",
    ]


def _generated() -> list[str | int]:
    rng = random.Random(17)
    # Every 9XXX prefix; every 930XXX one (where the mobile pattern has its gaps: invalid numbers of the
    # canonical shape); and national numbers that do not start with 9 (landlines, toll-free, Kazakh, junk).
    nationals = [f"9{prefix:03d}{rng.randrange(10**6):06d}" for prefix in range(1000) for _ in range(3)]
    nationals += [f"930{prefix:03d}{rng.randrange(10**4):04d}" for prefix in range(1000)]
    nationals += [f"{first}{rng.randrange(10**9):09d}" for first in "012345678" for _ in range(50)]
    return [raw for national in nationals for raw in _shapes(national)]


def test_fast_path_is_on() -> None:
    assert phones._MOBILE is not None
    for raw in ("+79112345678", "79112345678", "89112345678", "9112345678"):
        assert phones._fast(raw) == "+79112345678"


def test_fast_path_gives_the_full_parsers_answer_for_every_number() -> None:
    answered_fast = valid_canonical = refused = 0
    for raw in _generated():
        full = _outcome(normalize_phone_fully, raw)
        assert _outcome(normalize_phone, raw) == full, repr(raw)
        text = str(raw).strip()
        fast = phones._fast(text)
        if fast is not None:
            answered_fast += 1
            assert full == ("ok", fast), repr(raw)
        refused += full[0] != "ok"
        valid_canonical += full[0] == "ok" and CANONICAL_SHAPE.fullmatch(text) is not None
    assert answered_fast == valid_canonical  # every valid number of a canonical shape took the fast path
    assert refused > 1000  # the comparison covered refusals too, not only valid numbers


@pytest.mark.parametrize(
    "raw",
    [
        "٧٩١١٢٣٤٥٦٧٨",  # Arabic-Indic digits: str.isdigit() says yes, the fast path says no
        "+７９１１２３４５６７８",  # fullwidth
        "+79300000000",  # canonical shape, not a valid mobile
        "+77011234567",  # +7 but Kazakh
        "+78001234567",  # toll-free, not a mobile
        "89300000000",
        "9300000000",
        "",
        "   ",
        None,
        True,
        "не телефон",
    ],
)
def test_odd_inputs_match_the_full_parser(raw: str | None) -> None:
    assert _outcome(normalize_phone, raw) == _outcome(normalize_phone_fully, raw)


def test_other_regions_skip_the_fast_path() -> None:
    for raw in ("9112345678", "89112345678", "+79112345678", "7011234567"):
        assert _outcome(lambda value: normalize_phone(value, "KZ"), raw) == _outcome(
            lambda value: normalize_phone_fully(value, "KZ"), raw
        )
