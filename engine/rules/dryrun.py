"""``hookwise dry-run``: match and render one event with no side effects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import RenderError
from ..events import Event
from ..receive.sources import Reader
from ..run.plan import plan
from .config import choose_source
from .loader import Loaded
from .rules import INTERNAL_SOURCE
from .stateful import seconds


def event_source(loaded: Loaded, name: str | None) -> str:
    """The source a dry-run event arrives on: ``name`` when it is configured or hookwise's
    own (emitted events), else the only source configured; raises :class:`UsageError`."""
    return choose_source(loaded.config, name, also=(INTERNAL_SOURCE,))


def dry_run(
    loaded: Loaded, body: Any, source: str, headers: Mapping[str, str], query: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Explain every rule for the event and render the actions of those that match. The
    result is JSON-able, with every secret masked."""
    reader = Reader.for_source(loaded.config.settings.sources.get(source))
    event = Event(
        source=source, type=reader.event_type(body, headers), body=body, headers=dict(headers), query=dict(query or {}),
        id="dry-run"
    )
    match = loaded.rules.match(event, every_rule=True)
    actions = [step.record() for rule in match.rules for step in plan(rule, event, loaded.registry)]
    result = {
        "event": {"source": event.source, "type": event.type},
        "explain": match.explain(),
        "actions": actions,
        "state": consulted(loaded, event, {r.name for r in match.rules}),
    }
    return loaded.masker.mask_value(result)


def consulted(loaded: Loaded, event: Event, matched: set[str]) -> list[dict[str, str]]:
    """What state each stateful rule would consult for ``event`` (those ``matched``, and
    absences whose timers it starts or cancels). A dry-run reads none: its yes for a
    throttled or counted rule means "if the state lets it through"."""
    out = []
    envelope = event.envelope()
    for rule in loaded.rules:
        state = rule.state
        if state is None or (rule.name not in matched and state.absence is None):
            continue
        try:
            if state.throttle is not None:
                key = state.throttle.key.render(event)
                window = seconds(state.throttle.window)
                text = f"the throttle of key {key!r}: skipped if a run of it started within {window}"
            elif state.threshold is not None:
                key, t = state.threshold.key.render(event), state.threshold
                text = f"the counter of key {key!r}: fires on event number {t.count} within {seconds(t.window)}"
            elif state.absence is not None:
                a = state.absence
                if not (a.after.matches(event, envelope) or a.expect.matches(event, envelope)):
                    continue
                side = "starts" if a.after.matches(event, envelope) else "cancels"
                text = f"{side} the absence timer of key {a.key.render(event)!r} ({seconds(a.window)})"
            else:
                assert state.order_by is not None
                text = f"runs after the unfinished runs of order_by key {state.order_by.render(event)!r}"
        except RenderError as exc:
            text = f"its key does not render: {exc}"
        out.append({"rule": rule.name, "consults": text})
    return out


def format_text(result: Mapping[str, Any]) -> str:
    """The dry-run result as a person reads it."""
    event = result["event"]
    lines = [f"event: source={event['source']} type={event['type']}", "", "rules:"]
    width = max((len(r["rule"]) for r in result["explain"]), default=0)
    lines += [f"  {r['rule']:<{width}}  {r['reason']}" for r in result["explain"]] or ["  (no rules)"]
    if result.get("state"):
        lines += ["", "state (not read by a dry-run):"]
        lines += [f"  {s['rule']:<{width}}  {s['consults']}" for s in result["state"]]
    lines += ["", "actions:"] if result["actions"] else ["", "actions: none"]
    for step in result["actions"]:
        lines.append(f"  {step['rule']} step {step['step']} ({step['action']}, id {step['id']}):")
        if step.get("skipped"):
            lines.append("    skipped: its if is false")
        elif "error" in step:
            lines.append(f"    cannot render: {step['error']}")
        else:
            text = json.dumps(step["params"], indent=2, ensure_ascii=False, default=str)
            lines += ["    " + line for line in text.splitlines()]
    return "\n".join(lines)
