"""Rendering a matched rule's steps into concrete action calls.

The worker renders one step at a time, right before running it, with the outputs of the
steps before it; ``dry-run`` and rule test cases render them all at once with outputs
given in advance (or none). Both go through :func:`step_context` and :func:`render_step`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ParamsError, RenderError
from ..events import Event
from ..rules.rules import Rule, Step
from .registry import Registry


@dataclass(frozen=True)
class PlannedStep:
    """One step as it would run: its rendered params, or why it would not."""

    rule: str
    index: int
    id: str
    action: str
    params: Any = None
    #: the step's ``if`` was false
    skipped: bool = False
    error: str | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "step": self.index, "id": self.id, "action": self.action}
        if self.skipped:
            out["skipped"] = True
        elif self.error is not None:
            out["error"] = self.error
        else:
            out["params"] = self.params
        return out


def step_context(event: Event, rule: Rule, outputs: Mapping[str, Any], attempt: int = 1) -> dict[str, Any]:
    """The template context of SPEC 5.3 for a step of ``rule``."""
    context = event.context()
    context["rule"] = {"name": rule.name, "version": rule.version}
    context["steps"] = dict(outputs)
    context["attempt"] = attempt
    return context


def should_run(step: Step, context: Mapping[str, Any]) -> bool:
    """Whether the step's ``if`` holds (a step without one always runs)."""
    if step.condition is None:
        return True
    try:
        return bool(step.condition.evaluate(context))
    except RenderError as exc:
        raise RenderError(f"if: {exc}") from None


def render_step(step: Step, context: Mapping[str, Any], registry: Registry) -> Any:
    """The step's params rendered and validated. Raises :class:`RenderError` or
    :class:`ParamsError`."""
    rendered = step.params.render(context)
    registry.validate(step.action, rendered)
    return rendered


def plan(rule: Rule, event: Event, registry: Registry, outputs: Mapping[str, Any] | None = None) -> list[PlannedStep]:
    """Render every step of ``rule`` for ``event``, using ``outputs`` (by step id) as the
    results of earlier steps."""
    given = dict(outputs or {})
    known: dict[str, Any] = {}
    planned = []
    for step in rule.steps:
        context = step_context(event, rule, known)
        planned.append(_plan_step(rule, step, context, registry))
        if step.id in given:
            known[step.id] = given[step.id]
    return planned


def _plan_step(rule: Rule, step: Step, context: Mapping[str, Any], registry: Registry) -> PlannedStep:
    base = PlannedStep(rule=rule.name, index=step.index, id=step.id, action=step.action)
    try:
        if not should_run(step, context):
            return replace(base, skipped=True)
        return replace(base, params=render_step(step, context, registry))
    except (RenderError, ParamsError) as exc:
        return replace(base, error=str(exc))


def apply_overrides(params: Any, overrides: Mapping[str, Any]) -> Any:
    """``params`` with each ``{"dotted.path": value}`` of ``overrides`` set (``runs retry
    --set STEP.PARAM=VALUE``); missing mappings on the way are created."""
    if not overrides:
        return params
    out = json.loads(json.dumps(params))  # a deep copy of plain JSON data
    for path, value in overrides.items():
        target = out
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[last] = value
    return out
