"""Durations, sizes and rates as users write them: ``"500ms"``, ``"10s"``, ``"1MiB"``,
``"50/s"`` or plain numbers.

``Duration``, ``Size`` and ``Rate`` are pydantic field types built on the two parsers, so every
model (settings, rule keys, action params) reads units the same way and documents them
the same way in ``hookwise schema``.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

#: Seconds per duration unit.
DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: Bytes per size unit (binary multiples only: "KB" is ambiguous, so it is refused).
SIZE_UNITS: dict[str, int] = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}

_NUMBER = r"(?:\d+(?:\.\d+)?|\.\d+)"
#: A plain number of seconds, or one or more number+unit parts ("1h30m").
DURATION_PATTERN = rf"^(?:{_NUMBER}|(?:{_NUMBER}(?:ms|s|m|h|d))+)$"
#: A plain number of bytes, or a number with a binary unit.
SIZE_PATTERN = rf"^{_NUMBER}(?:B|KiB|MiB|GiB)?$"

#: Calls per period: "50/s", "600/m", "1000/h", "0.5/s".
RATE_PATTERN = rf"^{_NUMBER}/(?:s|m|h|d)$"
_RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_SIZE = re.compile(rf"({_NUMBER})([A-Za-z]*)")

_DURATION_HELP = (
    "use a number of seconds or a number with a unit ms, s, m, h or d (e.g. '500ms', '10s', '5m', '2h', '7d')"
)
_SIZE_HELP = "use a number of bytes or a number with a unit B, KiB, MiB or GiB (e.g. '512KiB', '1MiB')"


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds (int or float, >= 0) or a string such as
    ``"500ms"``, ``"10s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"1h30m"`` or ``"30"``.

    Raises ``ValueError`` saying what is accepted."""
    if isinstance(value, str):
        return _duration_from_text(value)
    return _non_negative(value, "duration")


def parse_size(value: Any) -> int:
    """Bytes in ``value``: a whole number of bytes or a string such as ``"512KiB"``,
    ``"1MiB"``, ``"1GiB"``, ``"100B"`` or ``"2048"``.

    Raises ``ValueError`` saying what is accepted; ``"10KB"`` is refused as ambiguous."""
    if isinstance(value, str):
        return _size_from_text(value)
    number = _non_negative(value, "size")
    if not number.is_integer():
        raise ValueError(f"a size must be a whole number of bytes, got {value!r}")
    return int(number)


def parse_rate(value: Any) -> float:
    """Calls per second in ``value``: ``"50/s"``, ``"600/m"``, ``"1000/h"``, ``"20000/d"``
    or a number (per second). Raises ``ValueError`` unless it is above 0."""
    if isinstance(value, str):
        if not re.fullmatch(RATE_PATTERN, value.strip()):
            raise ValueError(f"invalid rate {value!r}: use calls per period, e.g. '50/s', '600/m', '1000/h'")
        count, _, period = value.strip().partition("/")
        rate = float(count) / _RATE_PERIODS[period]
    else:
        rate = _non_negative(value, "rate")
    if rate <= 0:
        raise ValueError(f"a rate must be above 0, got {value!r}")
    return rate


def _non_negative(value: Any, what: str) -> float:
    # bool is an int subclass, but `timeout: true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"a {what} must be a number or a string, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"a {what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _duration_from_text(text: str) -> float:
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: {_DURATION_HELP}")
    return sum(float(n) * DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _size_from_text(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size {text!r}: {_SIZE_HELP}")
    number, unit = match.groups()
    if unit and unit not in SIZE_UNITS:
        raise ValueError(f"unknown size unit {unit!r} in {text!r}: {_SIZE_HELP}; 1KiB is 1024 bytes")
    size = float(number) * SIZE_UNITS[unit or "B"]
    if not size.is_integer():
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(size)


def _schema(pattern: str, number: str, description: str) -> dict[str, Any]:
    return {
        "anyOf": [{"type": "string", "pattern": pattern}, {"type": number, "minimum": 0}],
        "description": description,
    }


#: Seconds, as a float; written ``"500ms"``, ``"10s"``, ``"5m"``, ``"2h"``, ``"7d"`` or a number.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        _schema(DURATION_PATTERN, "number", "A duration: 500ms, 10s, 5m, 2h, 7d, or a number of seconds."),
        mode="validation"
    ),
]

#: Bytes, as an int; written ``"512KiB"``, ``"1MiB"``, ``"1GiB"`` or a number of bytes.
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        _schema(SIZE_PATTERN, "integer", "A size: 512KiB, 1MiB, 1GiB, or a number of bytes."), mode="validation"
    ),
]

#: Calls per second, as a float; written ``"50/s"``, ``"600/m"``, ``"1000/h"`` or a number per second.
Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": RATE_PATTERN}, {"type": "number", "exclusiveMinimum": 0}],
         "description": "A rate: calls per period, e.g. 50/s, 600/m, 1000/h, or a number per second."},
        mode="validation",
    ),
]
