"""Helpers for testing plugin actions and rules in a plugin's own tests (SPEC 15).

    from engine.testing import event, run_action, render_steps, assert_cases_pass

    def test_it_posts_the_job():
        out = run_action(CrmAction, {"contact": "ann"}, event=event({"job_id": 7}))
        assert out == {"id": "..."}

    def test_the_example_rules():
        assert_cases_pass("example/hookwise.yaml")

:func:`run_action` validates the params as a step's are (an unknown key is refused) and
calls the action's ``run`` with a real :class:`~engine.run.action.Context`; :func:`render_steps`
renders the steps an event's matching rules would run through the real renderer; and
:func:`run_cases` / :func:`assert_cases_pass` run rule test cases (``hookwise test``).
Nothing here is a mock: each helper runs the code ``serve`` runs, minus the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .events import Event
from .ids import derived_id
from .run.action import Action, Context
from .run.registry import Registry

__all__ = ["Emitted", "assert_cases_pass", "context", "event", "render_steps", "run_action", "run_cases"]


def event(
    body: Any = None, *, source: str = "test", type: str = "test", headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None, id: str = "test-event",
) -> Event:
    """An event as the worker hands it to actions."""
    return Event(
        source=source, type=type, body={} if body is None else body, headers=dict(headers or {}),
        query=dict(query or {}), id=id, received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@dataclass
class Emitted:
    """The events an action emitted through ``ctx.emit``: (type, data, source, delay) each."""

    events: list[tuple[str, Any, str, float]] = field(default_factory=list)

    def __call__(self, type_: str, data: Any, source: str, delay: float) -> str:
        self.events.append((type_, data, source, delay))
        return derived_id("test-emit", str(len(self.events)))


def context(
    for_event: Event | None = None, *, run_id: str = "test-run", step_id: str = "step", attempt: int = 1,
    rule: str = "test-rule", timeout: float = 30.0, emitted: Emitted | None = None,
) -> Context:
    """A real :class:`Context`, as the worker builds one (no store, no Hover client)."""
    return Context(
        event=for_event or event(), run_id=run_id, step_id=step_id, attempt=attempt,
        idempotency_key=f"{run_id}-0", logger=logging.getLogger(f"hookwise.action.{step_id}"), rule=rule,
        timeout=timeout, emit=emitted if emitted is not None else Emitted(),
    )


def run_action(
    action: type[Action], params: Mapping[str, Any], *, event: Event | None = None, settings: Any = None,
    ctx: Context | None = None,
) -> Any:
    """Validate ``params`` against ``action.Params`` as a step's rendered params are
    (raises :class:`~engine.errors.ParamsError` naming each problem, an unknown key
    included), run it once with a real context, and return its output, checked to be JSON
    as the worker checks it. The instance is closed afterwards."""
    name = getattr(action, "name", "action")
    model = Registry({name: action}).validate(name, params)
    instance = action(settings)
    try:
        output = instance.run(model, ctx or context(event))
    finally:
        instance.close()
    return None if output is None else json.loads(json.dumps(output))


def render_steps(
    config: str | Path, body: Any, *, source: str | None = None, headers: Mapping[str, str] | None = None,
    outputs: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The steps the rules of ``config`` would run for an event with ``body``, rendered
    through the real renderer and validated (``outputs`` stand in for earlier steps'):
    each ``{rule, step, id, action, params}``, or ``skipped`` / ``error`` instead of params."""
    from .receive.sources import Reader
    from .rules.dryrun import event_source
    from .rules.loader import load
    from .run.plan import plan

    loaded = load(config)
    name = event_source(loaded, source)
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    type_ = Reader.for_source(loaded.config.settings.sources.get(name)).event_type(body, lowered)
    incoming = Event(source=name, type=type_, body=body, headers=lowered, id="test-event")
    return [
        step.record() for rule in loaded.rules.match(incoming).rules
        for step in plan(rule, incoming, loaded.registry, outputs)
    ]


def run_cases(config: str | Path, paths: Iterable[str | Path] = ()) -> Any:
    """Run the rule test cases of ``config`` (those under ``paths``, else the ``tests/``
    folders beside its rule files) as ``hookwise test`` does; the
    :class:`~engine.rules.casefiles.Report`."""
    from .rules.casefiles import Report, case_files, run_file
    from .rules.loader import load

    loaded = load(config)
    report = Report()
    for path in case_files(loaded, list(paths)):
        report.results.extend(run_file(loaded, path))
    return report


def assert_cases_pass(config: str | Path, paths: Iterable[str | Path] = ()) -> None:
    """:func:`run_cases`, failing with every failure when a case fails or none ran."""
    report = run_cases(config, paths)
    failures = [f"{r.file}: {r.name}: {f}" for r in report.results for f in r.failures]
    assert report.results, f"no rule test cases found for {config}"
    assert not failures, "rule test cases failed:\n" + "\n".join(failures)
