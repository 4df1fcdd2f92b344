"""The condition tree of a rule's ``when:`` map (SPEC 5.1): compiled once, at load, and
evaluated per event to an :class:`Outcome` that names the first failing condition and the
value it saw (SPEC 5.4).

Compiling turns the map into a tree of small frozen nodes: field leaves (a pre-split path
and one pre-built check per operator) under ``_All``, ``_Any`` and ``_Not``. Regexes and
globs are compiled, operands checked and every explain text built at compile time, so
evaluation parses nothing and allocates nothing but the failure :class:`Outcome`. Every
problem in a tree is reported at once, in one :class:`ConfigError`.

Choices where SPEC 5.1 is silent:

* ``lt``/``lte``/``gt``/``gte`` take a number or an ISO-8601 date-time (a string, or a
  date/datetime the YAML loader produced). Any other string operand is a compile error, so
  strings are never compared lexically; a field that is not a number (for a number operand)
  or not a date-time string (for a date-time operand) fails. A date-only string is midnight
  UTC, a naive date-time is UTC.
* ``regex``, ``glob``, ``starts_with``, ``ends_with`` and substring ``contains`` apply to
  string fields only; numbers are not turned into text. ``contains`` on an object fails.
* An empty list of values (``state: []``, ``in: []``, ``not_in: []``) is a compile error,
  like every other empty node: it would silently never (or always) hold.
* ``*`` over a missing field or a scalar reaches no element, so the condition fails (even
  ``exists: false``). An element lacking the rest of the path counts as MISSING, so
  ``items.*.sku: {exists: false}`` holds when some item has no ``sku``.
* Only the segment right after ``$headers`` is lower-cased; ``$query`` names keep their
  case. ``$source.x`` (a field under a string) is a compile error.
* A condition key must be a string. ``all``, ``any`` and ``not`` are always combinators, so
  a top-level body field with one of those names cannot be addressed.
* An ``any`` with one branch is that branch (its failure is reported directly).
"""

from __future__ import annotations

import difflib
import fnmatch
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Any, Final, Protocol

from engine.errors import ConfigError, Loc, Problem, format_loc

Check = Callable[[Any], bool]
Getter = Callable[[Any, Mapping[str, Any]], Any]
Segment = tuple[str, "int | None"]


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # copy and pickle hand back the module attribute, so `is MISSING` keeps working.
        return "MISSING"


#: A field the event does not have (distinct from a field holding null).
MISSING: Final = _Missing()

_LIMIT: Final = 80


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of evaluating a condition: matched, or where it failed and what was seen.

    ``path`` names the failing node (``when.state``, ``when.job.city.regex``,
    ``when.all[1].state``, ``when.any``, ``when.not``); ``expected`` says what would have
    held; ``got`` is the value seen (MISSING when absent, the list of values reached for a
    ``*`` path, the branches' failure Outcomes as a tuple for ``any``, a ``{field: value}``
    map for ``not``).
    """

    matched: bool
    path: str = ""
    expected: str = ""
    got: Any = MISSING

    def __str__(self) -> str:
        if self.matched:
            return "yes"
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.expected or 'did not hold'}, got {_render_got(self.got)}"


#: The outcome of every condition that holds.
MATCHED: Final = Outcome(True)

_new = object.__new__
_set_matched = Outcome.matched.__set__  # type: ignore[attr-defined,misc]
_set_path = Outcome.path.__set__  # type: ignore[attr-defined,misc]
_set_expected = Outcome.expected.__set__  # type: ignore[attr-defined,misc]
_set_got = Outcome.got.__set__  # type: ignore[misc]


def _failure(path: str, expected: str, got: Any) -> Outcome:
    """``Outcome(False, path, expected, got)``, built a third faster.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; a
    failure is the usual result when many rules are checked against one event, so this
    sets the slots directly instead. Same object, same invariants.
    """
    outcome = _new(Outcome)
    _set_matched(outcome, False)
    _set_path(outcome, path)
    _set_expected(outcome, expected)
    _set_got(outcome, got)
    return outcome


class Condition(Protocol):
    """A compiled condition tree."""

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        """Evaluate against an event's body and envelope (``Event.envelope()``)."""
        ...


def compile_when(spec: Any, *, where: str = "when") -> Condition:
    """Compile a ``when:`` map into a :class:`Condition`.

    Raises :class:`ConfigError` carrying every problem in the tree, each ``loc`` relative
    to the ``when`` node itself (``("job.city", "regex")``, ``("all", 1, "state")``) so the
    rule loader can move it below ``("rules", 3, "when")``. ``where`` prefixes the paths of
    failure Outcomes.
    """
    compiler = _Compiler(where)
    node = compiler.condition_map(spec, ())
    if compiler.problems or node is None:
        raise ConfigError(compiler.problems)
    return node


def required_equalities(cond: Condition) -> dict[str, object]:
    """The simple paths (no ``*``) that ``cond`` requires to equal one string or integer,
    by plain equality or ``eq``, among the conjuncts of its top level (``all`` included).

    ``cond`` cannot hold unless ``resolve(path)`` equals each value (3.0 equals 3), so an
    index may skip it; a path required twice keeps its first value. Paths are normalised
    (header names lower-case).
    """
    found: dict[str, object] = {}
    for node in _conjuncts(cond):
        if isinstance(node, (_Leaf, _Field)) and node.equality is not None:
            found.setdefault(node.text, node.equality)
    return found


def resolve(path: str, body: Any, envelope: Mapping[str, Any]) -> Any:
    """The value at ``path`` (MISSING when absent) or, for a path with ``*``, the list of
    every value it reaches. Raises :class:`ConfigError` for an invalid path.

    Compiled paths are cached, so calling this per event parses a path only once.
    """
    return _cached_path(path).get(body, envelope)


# --- rendering ---------------------------------------------------------------------------


def _render_got(got: Any) -> str:
    if isinstance(got, tuple) and got and all(isinstance(o, Outcome) for o in got):
        return "(" + "; ".join(str(o) for o in got) + ")"
    return _render(got)


def _render(value: Any, limit: int = _LIMIT) -> str:
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


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((str, "string"), ((int, float), "number"), (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _did_you_mean(word: str, options: Any, aliases: Mapping[str, str] | None = None) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    # Names from other tools (JSON Schema, Python) that no spelling distance finds.
    guess = (aliases or {}).get(word.lower()) or (close[0] if close else None)
    return f" (did you mean {guess!r}?)" if guess else ""


# --- paths -------------------------------------------------------------------------------

ENVELOPE_FIELDS: Final = ("headers", "query", "source", "type", "event_id", "received_at")
_ENVELOPE_MAPS: Final = frozenset({"headers", "query"})
_STAR: Final[Segment] = ("*", None)


class _Invalid(Exception):
    """A spec fragment is invalid; the message says why (turned into a Problem)."""


@dataclass(frozen=True, slots=True)
class _Path:
    """A compiled field path: its normalised text and how to read it."""

    text: str
    get: Getter
    fans_out: bool


def _compile_path(key: str) -> _Path:
    parts = key.split(".")
    if not all(parts):
        raise _Invalid(f"empty segment in path {key!r}" if key else "empty path")
    envelope = None
    if parts[0].startswith("$"):
        envelope = _envelope_name(parts[0], len(parts) > 1)
        parts = parts[1:]
        if envelope == "headers" and parts:
            parts[0] = parts[0].lower()
    segments = tuple(_segment(part) for part in parts)
    text = ".".join(([f"${envelope}"] if envelope else []) + parts)
    fans_out = any(seg is _STAR for seg in segments)
    return _Path(text, _getter(envelope, segments, fans_out), fans_out)


def _envelope_name(head: str, has_fields: bool) -> str:
    name = head[1:]
    if name not in ENVELOPE_FIELDS:
        valid = ", ".join(f"${n}" for n in ENVELOPE_FIELDS)
        hint = _did_you_mean(head, (f"${n}" for n in ENVELOPE_FIELDS))
        raise _Invalid(f"unknown envelope field {head!r}{hint}; valid: {valid}")
    if has_fields and name not in _ENVELOPE_MAPS:
        raise _Invalid(f"{head!r} is a string and has no fields")
    return name


def _segment(part: str) -> Segment:
    if part == "*":
        return _STAR
    # isascii: str.isdigit accepts '²' and other digits int() would refuse.
    return (part, int(part) if part.isascii() and part.isdigit() else None)


def _getter(envelope: str | None, segments: tuple[Segment, ...], fans_out: bool) -> Getter:
    groups = _star_groups(segments)
    if envelope is not None:
        name = envelope
        if fans_out:
            return lambda body, env: _fan_out(env.get(name, MISSING), groups)
        return lambda body, env: _walk(env.get(name, MISSING), segments)
    if fans_out:
        return lambda body, env: _fan_out(body, groups)
    if len(segments) == 1 and segments[0][1] is None:
        key = segments[0][0]  # the fast path: one plain key on the body
        return lambda body, env: body.get(key, MISSING) if isinstance(body, dict) else MISSING
    return lambda body, env: _walk(body, segments)


def _walk(value: Any, segments: tuple[Segment, ...]) -> Any:
    for key, index in segments:
        if isinstance(value, dict):
            value = value.get(key, MISSING)  # on an object a numeric segment is a key
        elif index is not None and isinstance(value, list) and index < len(value):
            value = value[index]
        else:
            return MISSING
    return value


def _fan_out(value: Any, groups: tuple[tuple[Segment, ...], ...]) -> list[Any]:
    """Every value a ``*`` path reaches, one per combination of ``*`` choices; ``groups``
    are the plain segments between the stars."""
    out: list[Any] = []
    _collect(value, groups, 0, out)
    return out


def _collect(value: Any, groups: tuple[tuple[Segment, ...], ...], i: int, out: list[Any]) -> None:
    value = _walk(value, groups[i])
    if i + 1 == len(groups):
        out.append(value)
        return
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    for item in items:
        _collect(item, groups, i + 1, out)


def _star_groups(segments: tuple[Segment, ...]) -> tuple[tuple[Segment, ...], ...]:
    groups: list[tuple[Segment, ...]] = [()]
    for seg in segments:
        if seg is _STAR:
            groups.append(())
        else:
            groups[-1] += (seg,)
    return tuple(groups)


@lru_cache(maxsize=1024)
def _cached_path(path: str) -> _Path:
    try:
        return _compile_path(path)
    except _Invalid as exc:
        raise ConfigError([Problem(str(exc))]) from None


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


# --- operators: each takes (name, operand), returns (check, phrase) or raises _Invalid ----

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
    raise _Invalid(f"cannot compare with a {type(x).__name__} value ({x!r}); quote it to compare as a string")


def _need(name: str, x: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(x, kind):
        raise _Invalid(f"{name!r} needs {what}, got {_type_name(x)}")


def _need_values(name: str, x: Any) -> None:
    _need(name, x, list, "a list")
    if not x:
        raise _Invalid(f"empty condition: {name!r} needs at least one value")
    _need_json(x)


def _op_eq(name: str, x: Any) -> Built:
    _need_json(x)
    return _equals_to(x), _render(x)


def _op_ne(name: str, x: Any) -> Built:
    _need_json(x)
    equal = _equals_to(x)
    return (lambda v: v is not MISSING and not equal(v)), f"not {_render(x)}"


def _op_in(name: str, x: Any) -> Built:
    _need_values(name, x)
    return _one_of(x), f"one of {_render(x)}"


def _op_not_in(name: str, x: Any) -> Built:
    _need_values(name, x)
    inside = _one_of(x)
    return (lambda v: v is not MISSING and not inside(v)), f"none of {_render(x)}"


_ORDER: Final = {
    "lt": (operator.lt, "<"), "lte": (operator.le, "<="), "gt": (operator.gt, ">"), "gte": (operator.ge, ">=")
}


def _op_compare(name: str, x: Any) -> Built:
    holds, symbol = _ORDER[name]
    if _is_number(x):
        return (lambda v: _is_number(v) and holds(v, x)), f"{symbol} {_render(x)}"
    instant = _operand_instant(x)
    if instant is None:
        raise _Invalid(f"{name!r} needs a number or an ISO-8601 date-time, got {_render(x)}")

    def check(v: Any) -> bool:
        seen = _instant(v) if isinstance(v, str) else None
        return seen is not None and holds(seen, instant)

    shown = x if isinstance(x, str) else x.isoformat()
    return check, f"{symbol} {_render(shown)}"


def _op_regex(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    try:
        search = re.compile(x).search
    except re.error as exc:
        raise _Invalid(f"invalid regex {x!r}: {exc}") from None
    return (lambda v: isinstance(v, str) and search(v) is not None), f"to match /{x}/"


def _op_glob(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    match = re.compile(fnmatch.translate(x)).match  # what fnmatchcase does, compiled once
    return (lambda v: isinstance(v, str) and match(v) is not None), f"to match glob {_render(x)}"


def _op_contains(name: str, x: Any) -> Built:
    _need_json(x)
    equal = _equals_to(x)
    text = x if isinstance(x, str) else None

    def check(v: Any) -> bool:
        if isinstance(v, str):
            return text is not None and text in v
        return isinstance(v, list) and any(equal(item) for item in v)

    return check, f"to contain {_render(x)}"


def _op_starts_with(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    return (lambda v: isinstance(v, str) and v.startswith(x)), f"to start with {_render(x)}"


def _op_ends_with(name: str, x: Any) -> Built:
    _need(name, x, str, "a string")
    return (lambda v: isinstance(v, str) and v.endswith(x)), f"to end with {_render(x)}"


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
        raise _Invalid("'type' needs a type name or a non-empty list of them")
    for n in names:
        if n not in _TYPES:
            hint = _did_you_mean(n, _TYPES, _TYPE_ALIASES)
            raise _Invalid(f"unknown type {n!r}{hint}; types are: {', '.join(_TYPES)}")
    checks = tuple(_TYPES[n] for n in names)
    phrase = f"type {names[0]}" if len(names) == 1 else f"type one of {_render(names)}"
    return (lambda v: any(c(v) for c in checks)), phrase


_OPERATORS: Final[dict[str, Callable[[str, Any], Built]]] = {
    "eq": _op_eq,
    "ne": _op_ne,
    "in": _op_in,
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
OPERATORS: Final = tuple(_OPERATORS)


# --- nodes -------------------------------------------------------------------------------


class _Node:
    """Base of the compiled nodes."""

    __slots__ = ()

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        raise NotImplementedError("each node evaluates itself")

    def leaves(self) -> Iterator[_Leaf | _Field | _FanField]:
        """The field leaves under this node (for the explanation of a failed ``not``)."""
        raise NotImplementedError("each node lists its leaves")


@dataclass(frozen=True, slots=True)
class _Test:
    """One operator of a field, with its explain texts built at compile time."""

    check: Check
    path: str
    phrase: str
    expected: str


@dataclass(frozen=True, slots=True)
class _Leaf(_Node):
    """A field with one check: the common case, kept to two calls."""

    text: str
    get: Getter
    check: Check
    path: str
    expected: str
    equality: object = None

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        value = self.get(body, envelope)
        if self.check(value):
            return MATCHED
        return _failure(self.path, self.expected, value)

    def leaves(self) -> Iterator[_Leaf]:
        yield self


@dataclass(frozen=True, slots=True)
class _Field(_Node):
    """A field with several operators, checked in the file's order."""

    text: str
    get: Getter
    tests: tuple[_Test, ...]
    equality: object = None

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        value = self.get(body, envelope)
        for test in self.tests:
            if not test.check(value):
                return _failure(test.path, test.expected, value)
        return MATCHED

    def leaves(self) -> Iterator[_Field]:
        yield self


@dataclass(frozen=True, slots=True)
class _FanField(_Node):
    """A ``*`` field: holds when one reached value passes every check."""

    text: str
    get: Getter
    check: Check
    path: str
    expected: str

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        values = self.get(body, envelope)
        check = self.check
        for value in values:
            if check(value):
                return MATCHED
        return _failure(self.path, self.expected, values)

    def leaves(self) -> Iterator[_FanField]:
        yield self


@dataclass(frozen=True, slots=True)
class _All(_Node):
    children: tuple[_Node, ...]

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        for child in self.children:
            outcome = child.evaluate(body, envelope)
            if not outcome.matched:
                return outcome
        return MATCHED

    def leaves(self) -> Iterator[_Leaf | _Field | _FanField]:
        for child in self.children:
            yield from child.leaves()


@dataclass(frozen=True, slots=True)
class _Any(_Node):
    branches: tuple[_Node, ...]
    path: str
    expected: str

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        failures = []
        for branch in self.branches:
            outcome = branch.evaluate(body, envelope)
            if outcome.matched:
                return MATCHED
            failures.append(outcome)
        return _failure(self.path, self.expected, tuple(failures))

    def leaves(self) -> Iterator[_Leaf | _Field | _FanField]:
        for branch in self.branches:
            yield from branch.leaves()


@dataclass(frozen=True, slots=True)
class _Not(_Node):
    inner: _Node
    path: str
    fields: tuple[tuple[str, Getter], ...]

    def evaluate(self, body: Any, envelope: Mapping[str, Any]) -> Outcome:
        if not self.inner.evaluate(body, envelope).matched:
            return MATCHED
        seen = {text: get(body, envelope) for text, get in self.fields}
        return _failure(self.path, "expected not to match", seen)

    def leaves(self) -> Iterator[_Leaf | _Field | _FanField]:
        yield from self.inner.leaves()


def _conjuncts(node: Any) -> Iterator[Any]:
    if isinstance(node, _All):
        for child in node.children:
            yield from _conjuncts(child)
    else:
        yield node


# --- the compiler ------------------------------------------------------------------------


def _required_value(value: Any) -> object:
    candidate = value.get("eq") if isinstance(value, dict) else value
    # bool is an int subclass, and float keys would blur 1.0/1: both are left out.
    return candidate if type(candidate) in (str, int) else None


class _Compiler:
    """Builds nodes from a when-map, collecting every problem instead of stopping at one."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def fail(self, loc: Loc, message: str) -> None:
        self.problems.append(Problem(message, loc))

    def path(self, loc: Loc) -> str:
        return ".".join(p for p in (self.where, format_loc(loc)) if p)

    def condition_map(self, spec: Any, loc: Loc) -> _Node | None:
        if not isinstance(spec, dict):
            self.fail(loc, f"expected a map of conditions, got {_type_name(spec)}")
            return None
        if not spec:
            self.fail(loc, "empty condition: a condition map needs at least one entry")
            return None
        nodes = [self.entry(key, value, loc) for key, value in spec.items()]
        return _combine(nodes)

    def entry(self, key: Any, value: Any, loc: Loc) -> _Node | None:
        if key in ("all", "any"):
            return self.branches(key, value, (*loc, key))
        if key == "not":
            return self.negation(value, (*loc, key))
        if not isinstance(key, str):
            self.fail((*loc, str(key)), f"a condition key must be a string path, got {_render(key)}")
            return None
        return self.field(key, value, (*loc, key))

    def branches(self, key: str, value: Any, loc: Loc) -> _Node | None:
        if not isinstance(value, list):
            self.fail(loc, f"{key!r} needs a list of condition maps, got {_type_name(value)}")
            return None
        if not value:
            self.fail(loc, f"empty condition: {key!r} needs at least one condition map")
            return None
        nodes = [self.condition_map(item, (*loc, i)) for i, item in enumerate(value)]
        if key == "all" or len(nodes) == 1:
            return _combine(nodes)
        if any(node is None for node in nodes):
            return None
        expected = f"expected any of {len(nodes)} conditions to hold"
        return _Any(tuple(n for n in nodes if n is not None), self.path(loc), expected)

    def negation(self, value: Any, loc: Loc) -> _Node | None:
        inner = self.condition_map(value, loc)
        if inner is None:
            return None
        fields = {leaf.text: leaf.get for leaf in inner.leaves()}
        return _Not(inner, self.path(loc), tuple(fields.items()))

    def field(self, key: str, value: Any, loc: Loc) -> _Node | None:
        try:
            path: _Path | None = _compile_path(key)
        except _Invalid as exc:
            self.fail(loc, str(exc))
            path = None
        tests = self.tests(value, loc)
        if path is None or tests is None:
            return None
        if path.fans_out:
            expected = "expected " + " and ".join(t.phrase for t in tests) + " for some element"
            return _FanField(path.text, path.get, _all_of(tuple(t.check for t in tests)), self.path(loc), expected)
        equality = _required_value(value)
        if len(tests) == 1:
            only = tests[0]
            return _Leaf(path.text, path.get, only.check, only.path, only.expected, equality)
        return _Field(path.text, path.get, tests, equality)

    def tests(self, value: Any, loc: Loc) -> tuple[_Test, ...] | None:
        # A map value is always an operator map: a literal object is compared with eq.
        if isinstance(value, dict):
            return self.operators(value, loc)
        if value == []:
            self.fail(loc, "empty condition: a list of values needs at least one value")
            return None
        build = _op_in if isinstance(value, list) else _op_eq
        test = self.test(build, "in" if isinstance(value, list) else "eq", value, loc)
        return None if test is None else (test,)

    def operators(self, spec: dict[Any, Any], loc: Loc) -> tuple[_Test, ...] | None:
        if not spec:
            self.fail(loc, "empty condition: an operator map needs at least one operator")
            return None
        tests = [self.operator(name, operand, loc) for name, operand in spec.items()]
        if any(test is None for test in tests):
            return None
        return tuple(t for t in tests if t is not None)

    def operator(self, name: Any, operand: Any, loc: Loc) -> _Test | None:
        build = _OPERATORS.get(name) if isinstance(name, str) else None
        if build is None:
            self.fail((*loc, str(name)), _unknown_operator(str(name), str(loc[-1])))
            return None
        return self.test(build, name, operand, (*loc, name))

    def test(self, build: Callable[[str, Any], Built], name: str, operand: Any, loc: Loc) -> _Test | None:
        try:
            check, phrase = build(name, operand)
        except _Invalid as exc:
            self.fail(loc, str(exc))
            return None
        return _Test(check, self.path(loc), phrase, "expected " + phrase)


def _all_of(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def _combine(nodes: list[_Node | None]) -> _Node | None:
    if any(node is None for node in nodes):
        return None
    present = tuple(node for node in nodes if node is not None)
    return present[0] if len(present) == 1 else _All(present)


_OPERATOR_ALIASES: Final = {"not": "ne", "equals": "eq", "matches": "regex", "match": "regex", "like": "glob"}


def _unknown_operator(name: str, key: str) -> str:
    hint = _did_you_mean(name, _OPERATORS, _OPERATOR_ALIASES)
    if hint:
        return f"unknown operator {name!r}{hint}"
    # Most often a nested field written as a nested map: say how to write it instead.
    return (
        f"unknown operator {name!r}: a map value is a map of operators ({', '.join(_OPERATORS)}); "
        f"write a nested field as a dotted key ('{key}.{name}') and compare with an object using 'eq'"
    )
