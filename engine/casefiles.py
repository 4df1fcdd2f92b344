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

from . import yamlfile
from .config import locate_all
from .errors import ConfigError, ParamsError, Problem
from .events import Event
from .loader import Loaded
from .plan import PlannedStep, plan
from .rule_loader import display_path
from .sources import Reader
from .validation import pydantic_problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expect(_Model):
    rules: list[str] | None = Field(None, description="Exactly the rules that must match (order does not matter).")
    actions: list[dict[str, Any]] = Field(
        default_factory=list, description="{rule, step, <action>: {params subset}} | {rule, step, skipped: true}"
    )


class Case(_Model):
    name: str
    source: str
    event: Any = Field(description="The event body, or {file: PATH} relative to this file.")
    type: str | None = Field(None, description="The event type; default: read as the source reads it.")
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
    events = [_event(case, i, path, doc, loaded, problems) for i, case in enumerate(parsed.cases)]
    if problems:
        raise ConfigError(problems)
    cases = zip(parsed.cases, events, strict=True)
    return [Result(doc.file, case.name, tuple(run_case(loaded, case, event))) for case, event in cases]


def _event(
    case: Case, index: int, path: Path, doc: yamlfile.Document, loaded: Loaded, problems: list[Problem]
) -> Event | None:
    body = case.event
    if isinstance(body, dict) and set(body) == {"file"} and isinstance(body["file"], str):
        try:
            body = json.loads((path.parent / body["file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(doc.locate(Problem(f"cannot read event file: {exc}", ("cases", index, "event", "file"))))
            return None
    headers = {k.lower(): v for k, v in case.headers.items()}
    source = loaded.config.settings.sources.get(case.source)
    type_ = case.type or Reader.for_source(source).event_type(body, headers)
    return Event(
        source=case.source, type=type_, body=body, headers=headers, query=case.query,
        id=f"case-{index}", received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def run_case(loaded: Loaded, case: Case, event: Event | None) -> list[str]:
    """The ways ``case`` fails (empty when it passes)."""
    assert event is not None
    match = loaded.rules.match(event)
    matched = [r.name for r in match.rules]
    failures = []
    if case.expect.rules is not None and sorted(case.expect.rules) != sorted(matched):
        failures.append(f"rules: expected {sorted(case.expect.rules)}, got {sorted(matched)}")
        every = loaded.rules.match(event, every_rule=True)  # to say why an expected rule did not match
        failures.extend(f"  {v.rule.name}: {v.reason()}" for v in every.verdicts
                        if v.rule.name in case.expect.rules and not v.matched)
        unknown = sorted(set(case.expect.rules) - {r.name for r in loaded.rules})
        failures.extend(f"  {name}: no such rule" for name in unknown)
    planned = {r.name: plan(r, event, loaded.registry, case.steps) for r in match.rules}
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
