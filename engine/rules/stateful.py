"""Stateful rules (SPEC 14): ``throttle``, ``threshold``, ``absence`` and ``order_by``.

This module holds the rule side and nothing else: the keys as written (pydantic models),
their compiled form (key templates compiled once, at load), and the *state operations* a
matched event asks of the store. No I/O: the store applies the operations inside the
transaction that records the event's matches (:mod:`engine.store.state`), so each event
counts exactly once per rule, whichever worker matched it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, Loc, Problem, RenderError
from ..events import Event
from ..units import Duration
from .conditions import MATCHED, Condition, Outcome, compile_when
from .templates import Compiled, Templates

#: The type of the event a fired absence timer stores (source ``hookwise``).
ABSENCE_EVENT = "rule.absence"
#: Longest key kept in the store; longer keys are refused as the rule's failure to match.
MAX_KEY = 512


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThrottleModel(_Model):
    """After a run for a key, later matches with the same key within the window are skipped."""

    key: str = Field(description='A template: "{{ event.customer.email }}".')
    once_within: Duration


class ThresholdModel(_Model):
    """Fire on the count-th matching event for a key within a sliding window, then start over."""

    key: str
    count: int = Field(ge=1, le=100_000)
    within: Duration


class TriggerModel(_Model):
    """An event an absence rule watches for: its type(s) and conditions."""

    event: str | list[str]
    when: dict[str, Any] | None = None
    source: str | list[str] | None = None


class AbsenceModel(_Model):
    """When ``after`` is seen, wait ``within`` for ``expect`` with the same key; fire if none comes."""

    after: TriggerModel
    expect: TriggerModel
    key: str
    within: Duration


# --- compiled ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key template, compiled once."""

    text: str
    template: Compiled

    def render(self, event: Event) -> str:
        """The key for ``event``; raises :class:`RenderError` (an empty key is one too)."""
        value = self.template.render(event.context())
        key = value if isinstance(value, str) else str(value) if value is not None else ""
        if not key:
            raise RenderError(f"the key {self.text!r} rendered empty")
        if len(key) > MAX_KEY:
            raise RenderError(f"the key {self.text!r} rendered {len(key)} characters, more than {MAX_KEY}")
        return key


@dataclass(frozen=True)
class Throttle:
    key: Key
    window: float


@dataclass(frozen=True)
class Threshold:
    key: Key
    count: int
    window: float


@dataclass(frozen=True)
class Trigger:
    """One side of an absence: event types (exact or globs), sources and a condition."""

    events: frozenset[str]
    glob: re.Pattern[str] | None
    sources: frozenset[str] | None
    when: Condition | None

    def matches(self, event: Event, envelope: Mapping[str, Any]) -> bool:
        if self.sources is not None and event.source not in self.sources:
            return False
        if event.type not in self.events and (self.glob is None or self.glob.match(event.type) is None):
            return False
        return self.when is None or self.when.evaluate(event.body, envelope).matched


@dataclass(frozen=True)
class Absence:
    after: Trigger
    expect: Trigger
    key: Key
    window: float


@dataclass(frozen=True)
class State:
    """The stateful keys of one rule (each None when not given)."""

    throttle: Throttle | None = None
    threshold: Threshold | None = None
    absence: Absence | None = None
    order_by: Key | None = None


# --- the operations a matched event asks of the store ------------------------------------


@dataclass(frozen=True)
class Gate:
    """A throttle or threshold check for one run: applied, once per event, where the run is
    created. ``kind`` is "throttle" or "threshold"; ``count`` is the threshold's."""

    kind: str
    rule: str
    key: str
    window: float
    count: int = 0


@dataclass(frozen=True)
class TimerOp:
    """Start (``after``) or cancel (``expect``) an absence timer of ``rule`` for ``key``."""

    op: str
    rule: str
    key: str
    window: float = 0.0


def compile_state(
    templates: Templates, raw: Mapping[str, Any], loc: Loc, problems: list[Problem]
) -> State | None:
    """Compile the stateful keys of a validated rule model's values (``throttle``,
    ``threshold``, ``absence``, ``order_by``); problems are added to ``problems``."""
    throttle = threshold = absence = order = None
    if (t := raw.get("throttle")) is not None:
        key = _key(templates, t.key, loc + ("throttle", "key"), problems)
        throttle = Throttle(key, _window(t.once_within, loc + ("throttle", "once_within"), problems)) if key else None
    if (t := raw.get("threshold")) is not None:
        key = _key(templates, t.key, loc + ("threshold", "key"), problems)
        window = _window(t.within, loc + ("threshold", "within"), problems)
        threshold = Threshold(key, t.count, window) if key else None
    if (a := raw.get("absence")) is not None:
        absence = _absence(templates, a, loc + ("absence",), problems)
    if (o := raw.get("order_by")) is not None:
        order = _key(templates, o, loc + ("order_by",), problems)
    if throttle is None and threshold is None and absence is None and order is None:
        return None
    return State(throttle, threshold, absence, order)


def _key(templates: Templates, text: str, loc: Loc, problems: list[Problem]) -> Key | None:
    if not text.strip():
        problems.append(Problem('a key is a template, e.g. "{{ event.job_id }}"; it is empty', loc))
        return None
    try:
        return Key(text, templates.compile_value(text))
    except ConfigError as exc:
        problems.extend(p.under(loc) for p in exc.problems)
        return None


def _window(seconds: float, loc: Loc, problems: list[Problem]) -> float:
    if seconds <= 0:
        problems.append(Problem("a window is a duration above 0 (e.g. 1h)", loc))
    return seconds


def _absence(templates: Templates, model: AbsenceModel, loc: Loc, problems: list[Problem]) -> Absence | None:
    after = _trigger(model.after, loc + ("after",), problems)
    expect = _trigger(model.expect, loc + ("expect",), problems)
    key = _key(templates, model.key, loc + ("key",), problems)
    window = _window(model.within, loc + ("within",), problems)
    if after is None or expect is None or key is None:
        return None
    return Absence(after, expect, key, window)


def _trigger(model: TriggerModel, loc: Loc, problems: list[Problem]) -> Trigger | None:
    from fnmatch import translate

    names = [model.event] if isinstance(model.event, str) else list(model.event)
    if not names:
        problems.append(Problem("name at least one event type", loc + ("event",)))
        return None
    globs = [n for n in names if any(c in n for c in "*?[")]
    when = None
    if model.when is not None:
        try:
            when = compile_when(model.when)
        except ConfigError as exc:
            problems.extend(p.under(loc + ("when",)) for p in exc.problems)
            return None
    sources = None if model.source is None else frozenset([model.source] if isinstance(model.source, str)
                                                          else model.source)
    return Trigger(
        events=frozenset(n for n in names if n not in globs),
        glob=re.compile("|".join(f"(?:{translate(g)})" for g in globs)) if globs else None,
        sources=sources, when=when,
    )


# --- matching -----------------------------------------------------------------------------


class Rule(Protocol):
    """What matching asks of a rule here: its name and compiled state. (engine.rules.rules.Rule
    is one; naming it would make rules and this module import each other.)"""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> State | None: ...


def absence_outcome(rule_name: str, event: Event) -> Outcome:
    """An absence rule matches only the ``rule.absence`` events of its own timers."""
    if event.source == "hookwise" and event.type == ABSENCE_EVENT and isinstance(event.body, dict) \
            and event.body.get("rule") == rule_name:
        return MATCHED
    return Outcome(False, "absence", f"expected a {ABSENCE_EVENT} event of this rule's timers", event.type)


def gate_of(rule: Rule, event: Event) -> Gate | RenderError | None:
    """The throttle or threshold check a match of ``rule`` asks for (a key that does not
    render is returned as the error: the rule does not fire)."""
    state = rule.state
    if state is None:
        return None
    try:
        if state.throttle is not None:
            return Gate("throttle", rule.name, state.throttle.key.render(event), state.throttle.window)
        if state.threshold is not None:
            t = state.threshold
            return Gate("threshold", rule.name, t.key.render(event), t.window, t.count)
    except RenderError as exc:
        return exc
    return None


def order_key(rule: Rule, event: Event) -> str | None:
    """The ``order_by`` key of a run of ``rule`` for ``event``. A key that does not render
    is the empty string: such runs are still ordered, among themselves."""
    if rule.state is None or rule.state.order_by is None:
        return None
    try:
        return rule.state.order_by.render(event)
    except RenderError:
        return ""


def timer_ops(rules: Sequence[Rule], event: Event, envelope: Mapping[str, Any]) -> list[TimerOp | tuple[str, str]]:
    """The timers ``event`` starts or cancels among the absence ``rules``; a key that does
    not render is returned as (rule, reason) for the explain record. An event that is both
    an ``expect`` and an ``after`` cancels first, then starts a new timer."""
    ops: list[TimerOp | tuple[str, str]] = []
    for rule in rules:
        absence = rule.state.absence if rule.state is not None else None
        if absence is None or event.type == ABSENCE_EVENT:
            continue
        expect, after = absence.expect.matches(event, envelope), absence.after.matches(event, envelope)
        if not (expect or after):
            continue
        try:
            key = absence.key.render(event)
        except RenderError as exc:
            ops.append((rule.name, f"no: absence key: {exc}"))
            continue
        if expect:
            ops.append(TimerOp("expect", rule.name, key))
        if after:
            ops.append(TimerOp("after", rule.name, key, absence.window))
    return ops


def describe(state: State) -> list[str]:
    """What a stateful rule keeps, in words (dry-run, the rule page)."""
    out = []
    if state.throttle is not None:
        out.append(f"throttle: once per key {state.throttle.key.text} within {seconds(state.throttle.window)}")
    if state.threshold is not None:
        t = state.threshold
        out.append(f"threshold: the {t.count}th event per key {t.key.text} within {seconds(t.window)}")
    if state.absence is not None:
        out.append(f"absence: a timer per key {state.absence.key.text}, {seconds(state.absence.window)}")
    if state.order_by is not None:
        out.append(f"order_by: runs of one key {state.order_by.text} one at a time, in order")
    return out


def seconds(value: float) -> str:
    """A window as written: ``1d``, ``2h``, ``90s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def timestamp(value: float) -> str:
    """A time in explain texts: ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
