"""The operators of a condition leaf (SPEC 5.1): each is compiled from its operand into one
check and the phrase the explain record shows, and the rendering of values in those phrases.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time
from typing import Any, Final

from .condition_paths import MISSING, Invalid, did_you_mean

Check = Callable[[Any], bool]


_LIMIT: Final = 80


# --- rendering ---------------------------------------------------------------------------


def render_value(value: Any, limit: int = _LIMIT) -> str:
    """JSON-like text of ``value`` (strings quoted as Python does, null, true, missing),
    cut to ``limit`` characters."""
    out: list[str] = []
    size = 0
    for token in _tokens(value, limit):
        out.append(token)
        size += len(token)
        if size > limit:
            return "".join(out)[: limit - 3] + "..."
    return "".join(out)


def _tokens(value: Any, limit: int) -> Iterator[str]:
    # A generator, so rendering a huge body stops as soon as the limit is passed.
    if value is MISSING:
        yield "missing"
    elif value is None or isinstance(value, bool):
        yield {None: "null", True: "true", False: "false"}[value]
    elif isinstance(value, str):
        yield repr(value[: limit + 1])
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ", " if i else ""
            yield from _tokens(key, limit)
            yield ": "
            yield from _tokens(item, limit)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        for i, item in enumerate(value):
            yield ", " if i else ""
            yield from _tokens(item, limit)
        yield "]"
    else:
        yield repr(value)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((str, "string"), ((int, float), "number"), (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


# --- checks ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers as numbers (3 == 3.0), booleans apart from numbers, lists and
    objects structurally; across types always false."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a is None and b is None


def _equals_to(x: Any) -> Check:
    """The check "equals x", specialised on x's type so the common cases cost one compare."""
    if x is None or isinstance(x, bool):
        return lambda v: v is x
    if isinstance(x, str):
        return lambda v: v == x  # only a string equals a string; MISSING equals nothing
    if isinstance(x, (int, float)):
        # True == 1 in Python, not in JSON.
        return lambda v: v == x and v is not True and v is not False
    return lambda v: _equal(v, x)


def _one_of(values: list[Any]) -> Check:
    """The check "equals one of values": set look-ups for strings and numbers."""
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if _is_number(v))
    others = tuple(_equals_to(v) for v in values if not isinstance(v, str) and not _is_number(v))

    def check(v: Any) -> bool:
        if isinstance(v, str):
            return v in strings
        if _is_number(v):
            return v in numbers
        return any(other(v) for other in others)

    return check


def _is_empty(v: Any) -> bool:
    return v is MISSING or v is None or (isinstance(v, (str, list, dict)) and not v)


def _instant(text: str) -> datetime | None:
    """The instant an ISO-8601 date-time string names (naive means UTC), or None."""
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _operand_instant(x: Any) -> datetime | None:
    if isinstance(x, datetime):  # YAML loads an unquoted timestamp as a datetime
        return x if x.tzinfo is not None else x.replace(tzinfo=UTC)
    if isinstance(x, date):
        return datetime.combine(x, time(), UTC)
    return _instant(x) if isinstance(x, str) else None


# --- operators: each takes (name, operand), returns (check, phrase) or raises Invalid ----

Built = tuple[Check, str]


def _need_json(x: Any) -> None:
    if x is None or isinstance(x, (str, bool, int, float)):
        return
    if isinstance(x, list):
        for item in x:
            _need_json(item)
        return
    if isinstance(x, dict) and all(isinstance(k, str) for k in x):
        for item in x.values():
            _need_json(item)
        return
    raise Invalid(f"cannot compare with a {type(x).__name__} value ({x!r}); quote it to compare as a string")


def _need(name: str, x: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(x, kind):
        raise Invalid(f"{name!r} needs {what}, got {type_name(x)}")


def _need_values(name: str, x: Any) -> None:
    _need(name, x, list, "a list")
    if not x:
        raise Invalid(f"empty condition: {name!r} needs at least one value")
    _need_json(x)


def op_eq(name: str, x: Any) -> Built:
    _need_json(x)
    return _equals_to(x), render_value(x)


def _op_ne(name: str, x: Any) -> Built:
    _need_json(x)
    equal = _equals_to(x)
    return (lambda v: v is not MISSING and not equal(v)), f"not {render_value(x)}"


def op_in(name: str, x: Any) -> Built:
    _need_values(name, x)
    return _one_of(x), f"one of {render_value(x)}"


def _op_not_in(name: str, x: Any) -> Built:
    _need_values(name, x)
    inside = _one_of(x)
    return (lambda v: v is not MISSING and not inside(v)), f"none of {render_value(x)}"


_ORDER: Final = {
    "lt": (operator.lt, "<"), "lte": (operator.le, "<="), "gt": (operator.gt, ">"), "gte": (operator.ge, ">=")
}


def _op_compare(name: str, x: Any) -> Built:
    holds, symbol = _ORDER[name]
    if _is_number(x):
        return (lambda v: _is_number(v) and holds(v, x)), f"{symbol} {render_value(x)}"
    instant = _operand_instant(x)
    if instant is None:
        raise Invalid(f"{name!r} needs a number or an ISO-8601 date-time, got {render_value(x)}")

    def check(v: Any) -> bool:
        seen = _instant(v) if isinstance(v, str) else None
        return seen is not None and holds(seen, instant)

    shown = x if isinstance(x, str) else x.isoformat()
    return check, f"{symbol} {render_value(shown)}"


def _op_regex(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    try:
        search = re.compile(x).search
    except re.error as exc:
        raise Invalid(f"invalid regex {x!r}: {exc}") from None
    return (lambda v: isinstance(v, str) and search(v) is not None), f"to match /{x}/"


def _op_glob(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    match = re.compile(fnmatch.translate(x)).match  # what fnmatchcase does, compiled once
    return (lambda v: isinstance(v, str) and match(v) is not None), f"to match glob {render_value(x)}"


def _op_contains(name: str, x: Any) -> Built:
    _need_json(x)
    equal = _equals_to(x)
    text = x if isinstance(x, str) else None

    def check(v: Any) -> bool:
        if isinstance(v, str):
            return text is not None and text in v
        return isinstance(v, list) and any(equal(item) for item in v)

    return check, f"to contain {render_value(x)}"


def _op_starts_with(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    return (lambda v: isinstance(v, str) and v.startswith(x)), f"to start with {render_value(x)}"


def _op_ends_with(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    return (lambda v: isinstance(v, str) and v.endswith(x)), f"to end with {render_value(x)}"


def _op_exists(name: str, x: Any) -> Built:
    _need(name, x, bool, "true or false")
    if x:
        return (lambda v: v is not MISSING), "to exist"
    return (lambda v: v is MISSING), "to be absent"


def _op_empty(name: str, x: Any) -> Built:
    _need(name, x, bool, "true or false")
    if x:
        return _is_empty, "to be empty"
    return (lambda v: not _is_empty(v)), "not to be empty"


_TYPES: Final[dict[str, Check]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


_TYPE_ALIASES: Final = {
    "str": "string",
    "int": "number",
    "integer": "number",
    "float": "number",
    "bool": "boolean",
    "array": "list",
    "dict": "object",
    "map": "object",
    "none": "null",
}


def _op_type(name: str, x: Any) -> Built:
    names = [x] if isinstance(x, str) else x
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise Invalid("'type' needs a type name or a non-empty list of them")
    for n in names:
        if n not in _TYPES:
            hint = did_you_mean(n, _TYPES, _TYPE_ALIASES)
            raise Invalid(f"unknown type {n!r}{hint}; types are: {', '.join(_TYPES)}")
    checks = tuple(_TYPES[n] for n in names)
    phrase = f"type {names[0]}" if len(names) == 1 else f"type one of {render_value(names)}"
    return (lambda v: any(c(v) for c in checks)), phrase


OPERATOR_BUILDERS: Final[dict[str, Callable[[str, Any], Built]]] = {
    "eq": op_eq,
    "ne": _op_ne,
    "in": op_in,
    "not_in": _op_not_in,
    "lt": _op_compare,
    "lte": _op_compare,
    "gt": _op_compare,
    "gte": _op_compare,
    "regex": _op_regex,
    "glob": _op_glob,
    "contains": _op_contains,
    "starts_with": _op_starts_with,
    "ends_with": _op_ends_with,
    "exists": _op_exists,
    "empty": _op_empty,
    "type": _op_type,
}
OPERATORS: Final = tuple(OPERATOR_BUILDERS)


_OPERATOR_ALIASES: Final = {"not": "ne", "equals": "eq", "matches": "regex", "match": "regex", "like": "glob"}


def unknown_operator(name: str, key: str) -> str:
    hint = did_you_mean(name, OPERATOR_BUILDERS, _OPERATOR_ALIASES)
    if hint:
        return f"unknown operator {name!r}{hint}"
    # Most often a nested field written as a nested map: say how to write it instead.
    return (
        f"unknown operator {name!r}: a map value is a map of operators ({', '.join(OPERATOR_BUILDERS)}); "
        f"write a nested field as a dotted key ('{key}.{name}') and compare with an object using 'eq'"
    )
