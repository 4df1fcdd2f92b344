"""Durations and sizes: the parsers, and the pydantic types built on them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from engine.units import DURATION_PATTERN, SIZE_PATTERN, Duration, Size, parse_duration, parse_size

DURATIONS: list[tuple[Any, float]] = [
    ("500ms", 0.5),
    ("10s", 10.0),
    ("5m", 300.0),
    ("2h", 7200.0),
    ("7d", 604800.0),
    ("1h30m", 5400.0),
    ("1.5s", 1.5),
    ("0", 0.0),
    ("30", 30.0),
    ("2.5", 2.5),
    (0, 0.0),
    (3, 3.0),
    (2.5, 2.5),
]

BAD_DURATIONS: list[tuple[Any, str]] = [
    ("", "invalid duration ''"),
    ("10x", "invalid duration '10x'"),
    ("10 s", "invalid duration '10 s'"),
    ("-1s", "invalid duration '-1s'"),
    ("s", "invalid duration 's'"),
    ("1w", "unit ms, s, m, h or d"),
    (-1, "must be a finite number >= 0, got -1"),
    (float("inf"), "must be a finite number >= 0"),
    (float("nan"), "must be a finite number >= 0"),
    (True, "must be a number or a string, got bool"),
    (None, "must be a number or a string, got NoneType"),
    ([10], "must be a number or a string, got list"),
]

SIZES: list[tuple[Any, int]] = [
    ("512KiB", 512 * 1024),
    ("1MiB", 1024**2),
    ("1GiB", 1024**3),
    ("100B", 100),
    ("2048", 2048),
    ("1.5KiB", 1536),
    (2048, 2048),
    (0, 0),
    (1024.0, 1024),
]

BAD_SIZES: list[tuple[Any, str]] = [
    ("10KB", "unknown size unit 'KB' in '10KB'"),
    ("1mib", "unknown size unit 'mib'"),
    ("1 MiB", "invalid size '1 MiB'"),
    ("abc", "invalid size 'abc'"),
    ("-1", "invalid size '-1'"),
    ("1.1B", "not a whole number of bytes"),
    (1.5, "whole number of bytes, got 1.5"),
    (-1, "must be a finite number >= 0, got -1"),
    (True, "must be a number or a string, got bool"),
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(("value", "message"), BAD_DURATIONS)
def test_parse_duration_refuses(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize(("value", "size"), SIZES)
def test_parse_size(value: Any, size: int) -> None:
    assert parse_size(value) == size
    assert type(parse_size(value)) is int


@pytest.mark.parametrize(("value", "message"), BAD_SIZES)
def test_parse_size_refuses(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


def test_refused_kb_says_what_to_write() -> None:
    with pytest.raises(ValueError) as info:
        parse_size("10KB")
    assert "KiB" in str(info.value) and "1024" in str(info.value)


@pytest.mark.parametrize(("value", "seconds"), [d for d in DURATIONS if isinstance(d[0], str)])
def test_duration_pattern_accepts_what_the_parser_accepts(value: str, seconds: float) -> None:
    assert re.fullmatch(DURATION_PATTERN, value)


@pytest.mark.parametrize("value", [v for v, _ in BAD_DURATIONS if isinstance(v, str)])
def test_duration_pattern_refuses_what_the_parser_refuses(value: str) -> None:
    assert not re.fullmatch(DURATION_PATTERN, value)


@pytest.mark.parametrize("value", [v for v, _ in SIZES if isinstance(v, str)])
def test_size_pattern_accepts_what_the_parser_accepts(value: str) -> None:
    assert re.fullmatch(SIZE_PATTERN, value)


@pytest.mark.parametrize("value", ["10KB", "1mib", "1 MiB", "abc", "-1"])
def test_size_pattern_refuses_unknown_units(value: str) -> None:
    assert not re.fullmatch(SIZE_PATTERN, value)


class Limits(BaseModel):
    timeout: Duration = 30.0
    max_body: Size = 1024
    grace: Duration | None = None


def test_types_convert_in_models() -> None:
    limits = Limits.model_validate({"timeout": "500ms", "max_body": "1MiB", "grace": "2m"})
    assert (limits.timeout, limits.max_body, limits.grace) == (0.5, 1024**2, 120.0)


def test_types_report_the_parser_message() -> None:
    with pytest.raises(ValidationError) as info:
        Limits.model_validate({"timeout": "10 minutes", "max_body": "10KB"})
    errors = {e["loc"]: e["msg"] for e in info.value.errors()}
    assert "invalid duration '10 minutes'" in errors[("timeout",)]
    assert "unknown size unit 'KB'" in errors[("max_body",)]


def test_json_schema_is_string_or_number_with_pattern() -> None:
    props = Limits.model_json_schema()["properties"]
    assert props["timeout"]["anyOf"] == [
        {"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}
    ]
    assert props["max_body"]["anyOf"] == [
        {"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 0}
    ]
    assert props["timeout"]["default"] == 30.0
    assert {"type": "null"} in props["grace"]["anyOf"]
