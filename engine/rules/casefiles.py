"""Rule test cases for ``hookwise test`` (SPEC 8).

A case file holds ``cases:``, each an event (inline, or ``{file: PATH}`` relative to the
case file), the source and headers it arrives with, stubbed outputs for steps, and what
should happen: exactly which rules match, and a subset of the params of the actions they
would run. Nothing is sent: actions are rendered and compared, never run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, ParamsError, Problem
from ..events import Event
from ..receive.sources import Reader
from ..run.plan import PlannedStep, plan
from . import yamlfile
from .config import locate_all
from .loader import Loaded
from .rule_loader import display_path
from .timeline import Step, parse_at, play
from .validation import pydantic_problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expect(_Model):
    rules: list[str] | None = Field(None, description="Exactly the rules that must match (order does not matter).")
    actions: list[dict[str, Any]] = Field(
        default_factory=list, description="{rule, step, <action>: {params subset}} | {rule, step, skipped: true}"
    )


class Earlier(_Model):
    """An event before the case's own, at its time (stateful rules: throttles, thresholds, absences)."""

    event: Any = Field(description="The event body, or {file: PATH} relative to this file.")
    type: str | None = None
    source: str | None = Field(None, description="Default: the case's source.")
    at: str | float | None = Field(None, description="+DURATION after the case's start, or an ISO time.")


class Case(_Model):
    name: str
    source: str
    event: Any = Field(None, description="The event body, or {file: PATH} relative to this file; leave it out "
                                         "(with at) to test what fires when only time passes.")
    type: str | None = Field(None, description="The event type; default: read as the source reads it.")
    at: str | float | None = Field(None, description="When the event arrives: +2h (after the case's start) or an "
                                                      "ISO time.")
    before: list[Earlier] = Field(default_factory=list, description="Events that came earlier, each at its time.")
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    steps: dict[str, Any] = Field(
        default_factory=dict, description="Outputs of steps by id, used instead of running them."
    )
    expect: Expect


class CaseFile(_Model):
    cases: list[Case] = Field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """The outcome of one case: its failures, empty when it passed."""

    file: str
    name: str
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)

    @property
    def passed(self) -> int:
        return len(self.results) - self.failed


def case_files(loaded: Loaded, paths: Iterable[str | Path] = ()) -> list[Path]:
    """The case files under ``paths``, or under the ``tests/`` folders beside the rule
    files when no path is given."""
    roots = [Path(p) for p in paths]
    if not roots:
        for entry in loaded.config.settings.rules:
            base = loaded.config.resolve(entry)
            roots.append((base if base.is_dir() else base.parent) / "tests")
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found.extend(sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif root.is_file():
            found.append(root)
        elif paths:
            raise ConfigError([Problem("no such file or folder", file=str(root))])
    return list(dict.fromkeys(found))


def run_file(loaded: Loaded, path: Path) -> list[Result]:
    """Run every case of one file. Raises :class:`ConfigError` when the file is invalid."""
    doc = yamlfile.load(path, display=display_path(path))
    try:
        parsed = CaseFile.model_validate(doc.data or {})
    except ValidationError as exc:
        raise ConfigError(locate_all(doc, pydantic_problems(exc, CaseFile))) from None
    problems: list[Problem] = []
    timelines = [_timeline(case, i, path, doc, loaded, problems) for i, case in enumerate(parsed.cases)]
    if problems:
        raise ConfigError(problems)
    cases = zip(parsed.cases, timelines, strict=True)
    return [Result(doc.file, case.name, tuple(run_case(loaded, case, steps))) for case, steps in cases]


def _timeline(
    case: Case, index: int, path: Path, doc: yamlfile.Document, loaded: Loaded, problems: list[Problem]
) -> list[Step]:
    """The case's events, the earlier ones first, each at its time."""
    steps = []
    where: tuple[str | int, ...] = ("cases", index)
    for n, earlier in enumerate(case.before):
        loc = where + ("before", n)
        event = _event(earlier.event, earlier.source or case.source, earlier.type, {}, {}, f"case-{index}-{n}",
                       path, doc, loaded, problems, loc + ("event",))
        steps.append(Step(_at(earlier.at, doc, loc + ("at",), problems), event))
    if case.event is None and case.at is None:
        problems.append(doc.locate(Problem("a case needs an event (or at: the time to look at)", where)))
    own = None if case.event is None else _event(
        case.event, case.source, case.type, case.headers, case.query, f"case-{index}", path, doc, loaded, problems,
        where + ("event",),
    )
    steps.append(Step(_at(case.at, doc, where + ("at",), problems), own))
    return steps


def _at(
    value: str | float | None, doc: yamlfile.Document, loc: tuple[str | int, ...], problems: list[Problem]
) -> float:
    try:
        return parse_at(value)
    except ValueError as exc:
        problems.append(doc.locate(Problem(str(exc), loc)))
        return 0.0


def _event(
    body: Any, source_name: str, type_: str | None, headers: dict[str, str], query: dict[str, str], event_id: str,
    path: Path, doc: yamlfile.Document, loaded: Loaded, problems: list[Problem], loc: tuple[str | int, ...],
) -> Event | None:
    if isinstance(body, dict) and set(body) == {"file"} and isinstance(body["file"], str):
        try:
            body = json.loads((path.parent / body["file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(doc.locate(Problem(f"cannot read event file: {exc}", loc + ("file",))))
            return None
    lowered = {k.lower(): v for k, v in headers.items()}
    source = loaded.config.settings.sources.get(source_name)
    return Event(
        source=source_name, type=type_ or Reader.for_source(source).event_type(body, lowered), body=body,
        headers=lowered, query=query, id=event_id, received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _fired(loaded: Loaded, steps: list[Step]) -> list[tuple[str, Event]]:
    """(rule, the event it fired on) at the case's time. Stateless rule sets match the
    one event directly; with stateful rules the case plays out through a store."""
    if not loaded.rules.stateful and len(steps) == 1 and steps[0].event is not None:
        event = steps[0].event
        return [(r.name, event) for r in loaded.rules.match(event).rules]
    return play(loaded, steps).fired()


def run_case(loaded: Loaded, case: Case, steps: list[Step]) -> list[str]:
    """The ways ``case`` fails (empty when it passes)."""
    fired = _fired(loaded, steps)
    matched = [name for name, _ in fired]
    event = steps[-1].event
    failures = []
    if case.expect.rules is not None and sorted(case.expect.rules) != sorted(matched):
        failures.append(f"rules: expected {sorted(case.expect.rules)}, got {sorted(matched)}")
        if event is not None:  # to say why an expected rule did not match
            every = loaded.rules.match(event, every_rule=True)
            failures.extend(f"  {v.rule.name}: {v.reason()}" for v in every.verdicts
                            if v.rule.name in case.expect.rules and not v.matched and v.rule.name not in matched)
        unknown = sorted(set(case.expect.rules) - {r.name for r in loaded.rules})
        failures.extend(f"  {name}: no such rule" for name in unknown)
    planned = {}
    for name, on in fired:
        rule = loaded.rules.get(name)
        if rule is not None:
            planned[name] = plan(rule, on, loaded.registry, case.steps)
    for i, expected in enumerate(case.expect.actions):
        failures.extend(_check_action(loaded, i, expected, planned))
    return failures


def _check_action(
    loaded: Loaded, index: int, expected: dict[str, Any], planned: dict[str, list[PlannedStep]]
) -> list[str]:
    where = f"expect.actions[{index}]"
    rule, step = expected.get("rule"), expected.get("step", 0)
    if rule not in planned:
        return [f"{where}: rule {rule!r} did not match"]
    steps = planned[rule]
    found = next((s for s in steps if s.index == step or s.id == step), None)
    if found is None:
        return [f"{where}: rule {rule!r} has no step {step!r}"]
    label = f"{rule} step {found.index} ({found.action})"
    if expected.get("skipped"):
        return [] if found.skipped else [f"{label}: expected it to be skipped, but it runs"]
    if found.skipped:
        return [f"{label}: skipped (its if is false)"]
    if found.error is not None:
        return [f"{label}: {found.error}"]
    actions = [k for k in expected if k not in ("rule", "step")]
    if actions and actions != [found.action]:
        return [f"{label}: expected action {actions[0]!r}, got {found.action!r}"]
    want = expected.get(found.action, {})
    diffs = subset_diff(want, found.params, found.action)
    if diffs and not subset_diff(want, _validated(loaded, found), found.action):
        diffs = []  # it matches what the action receives after validation ("5s" -> 5.0, 42 -> "42")
    return [f"{label}: {d}" for d in diffs]


def _validated(loaded: Loaded, step: PlannedStep) -> Any:
    try:
        model = loaded.registry.validate(step.action, step.params)
    except ParamsError:
        return None
    return model.model_dump(mode="json", by_alias=True)


def subset_diff(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from ``expected``: every key of an expected mapping must be
    in the actual one with a matching value; lists match element by element."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, got {_show(actual)}"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: expected {_show(value)}, got nothing")
            else:
                out.extend(subset_diff(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {_show(expected)}, got {_show(actual)}"]
        return [
            d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in subset_diff(e, a, f"{path}[{i}]")
        ]
    if _same(expected, actual):
        return []
    return [f"{path}: expected {_show(expected)}, got {_show(actual)}"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _show(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."
