"""``hookwise dry-run``: match and render one event with no side effects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .config import choose_source
from .events import Event
from .loader import Loaded
from .plan import plan
from .rules import INTERNAL_SOURCE
from .sources import Reader


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
    }
    return loaded.masker.mask_value(result)


def format_text(result: Mapping[str, Any]) -> str:
    """The dry-run result as a person reads it."""
    event = result["event"]
    lines = [f"event: source={event['source']} type={event['type']}", "", "rules:"]
    width = max((len(r["rule"]) for r in result["explain"]), default=0)
    lines += [f"  {r['rule']:<{width}}  {r['reason']}" for r in result["explain"]] or ["  (no rules)"]
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
