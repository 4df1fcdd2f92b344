"""Matching one event (SPEC 5, 14): its explain record, the runs it creates (with the
throttle or threshold each must pass and its order_by key) and the absence timers it starts
or cancels. No I/O: the store applies the state where it records the matches.
"""

from __future__ import annotations

import logging
from typing import Any

from ..events import Event
from ..ids import derived_id
from ..ops.metrics import Metrics
from ..rules.loader import Loaded
from ..rules.ruleset import Match
from ..rules.stateful import TimerOp, gate_of, order_key, timer_ops
from ..store import Matched, NewRun

log = logging.getLogger("hookwise.worker")


def match_or_note(loaded: Loaded, event: Event, metrics: Metrics | None = None) -> Matched:
    """Match ``event``; if matching itself fails (a bug), the event is recorded with
    the error as its explain and no run, rather than holding back every event claimed
    with it, again and again. It stays stored: ``hookwise replay`` runs it after a fix."""
    try:
        matched = match_event(loaded, event)
    except Exception as exc:
        log.exception("matching event %s failed", event.id, extra={"event": event.id})
        return Matched(event.id, [{"error": f"matching failed: {type(exc).__name__}: {exc}"}], [], event)
    for run in matched.runs:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "event %s matched rule %s: run %s", event.id, run.rule, run.id,
                extra={"event": event.id, "rule": run.rule, "run": run.id}
            )
        if metrics is not None:
            metrics.matched(run.rule, shadow=run.shadow)
    return matched


def match_event(loaded: Loaded, event: Event) -> Matched:
    """Match ``event``: its explain record, the runs to create (with the throttle or
    threshold each must pass, and its order_by key) and the absence timers it starts or
    cancels. The store applies the state where it records them."""
    match = loaded.rules.match(event)
    if event.only_rules is not None:  # a replay for some rules
        match = Match(tuple(v for v in match.verdicts if v.rule.name in event.only_rules))
    explain = match.explain()
    runs = []
    for rule in match.rules:
        gate = gate_of(rule, event) if rule.state is not None else None
        if isinstance(gate, Exception):  # a key that does not render: the rule does not fire
            _reason(explain, rule.name, f"no: key: {gate}")
            continue
        runs.append(NewRun(
            id=derived_id(event.id, rule.name), rule=rule.name, version=rule.version, rule_file=rule.file,
            rule_text=rule.text, steps=[(s.index, s.id, s.action) for s in rule.steps],
            first_delay=rule.steps[0].delay if rule.steps else 0.0,
            gate=gate, order_key=order_key(rule, event) if rule.state is not None else None, shadow=rule.shadow,
        ))
    timers = _timers(loaded, match, event, explain)
    return Matched(event.id, loaded.masker.mask_value(explain), runs, event, timers)


def _timers(loaded: Loaded, match: Match, event: Event, explain: list[dict[str, Any]]) -> list[TimerOp]:
    """The absence timers ``event`` starts or cancels (rules stopped by a ``stop`` rule,
    or left out of a replay, take no part)."""
    if not loaded.rules.absences:
        return []
    considered = {v.rule.name for v in match.verdicts if v.stopped_by is None}
    rules = [r for r in loaded.rules.absences if r.name in considered]
    ops = []
    for op in timer_ops(rules, event, event.envelope()):
        if isinstance(op, TimerOp):
            ops.append(op)
        else:
            _reason(explain, *op)
    return ops


def _reason(explain: list[dict[str, Any]], rule: str, reason: str) -> None:
    """Set the explain record of ``rule``: not matched, for ``reason``."""
    for entry in explain:
        if entry["rule"] == rule:
            entry["matched"], entry["reason"] = False, reason
