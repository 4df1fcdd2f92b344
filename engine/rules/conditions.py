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

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from engine.errors import ConfigError, Loc, Problem, format_loc

from .condition_paths import MISSING, FieldPath, Getter, Invalid, compile_path
from .operators import OPERATOR_BUILDERS, Built, Check, op_eq, op_in, render_value, type_name, unknown_operator


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


def _render_got(got: Any) -> str:
    if isinstance(got, tuple) and got and all(isinstance(o, Outcome) for o in got):
        return "(" + "; ".join(str(o) for o in got) + ")"
    return render_value(got)


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
            self.fail(loc, f"expected a map of conditions, got {type_name(spec)}")
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
            self.fail((*loc, str(key)), f"a condition key must be a string path, got {render_value(key)}")
            return None
        return self.field(key, value, (*loc, key))

    def branches(self, key: str, value: Any, loc: Loc) -> _Node | None:
        if not isinstance(value, list):
            self.fail(loc, f"{key!r} needs a list of condition maps, got {type_name(value)}")
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
            path: FieldPath | None = compile_path(key)
        except Invalid as exc:
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
        build = op_in if isinstance(value, list) else op_eq
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
        build = OPERATOR_BUILDERS.get(name) if isinstance(name, str) else None
        if build is None:
            self.fail((*loc, str(name)), unknown_operator(str(name), str(loc[-1])))
            return None
        return self.test(build, name, operand, (*loc, name))

    def test(self, build: Callable[[str, Any], Built], name: str, operand: Any, loc: Loc) -> _Test | None:
        try:
            check, phrase = build(name, operand)
        except Invalid as exc:
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
