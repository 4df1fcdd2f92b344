"""The state of stateful rules (SPEC 14) in the store core: throttles, thresholds, absence
timers and runs in order, written once for every backend.

The functions run named queries (``sql/state.sql``) in the caller's transaction, through the
core's :class:`~engine.store.backend.Tx`: the core calls them where it records an event's
matches (throttle, threshold, timers, order) and where a run finishes (the next of its key
starts). :class:`StateMethods` holds the store methods of stateful rules: firing due timers,
skipping a run, and reading what a rule keeps. Where rules keep state, the PostgreSQL
backend's ``state_lock`` makes their recorders take turns (SQLite's writer already does).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Generic

from ..ids import derived_id
from ..rules.stateful import ABSENCE_EVENT, Gate, TimerOp, seconds, timestamp
from ..run.runs import RunStatus
from . import rows as shapes
from .backend import Backend, Tx, TxT
from .contract import Incoming, Matched, NewRun
from .rows import Row


def clock(backend: Backend[Any], db: Tx) -> float:
    """The transaction's time now: the store's clock, or the database's."""
    now = backend.now()
    return now if now is not None else float(db.all("clock", {"now": None})[0]["now"])


def _one(db: Tx, name: str, **params: Any) -> Row | None:
    rows = db.all(name, params)
    return rows[0] if rows else None


def has_state(matches: Sequence[Matched]) -> bool:
    return any(m.timers or any(r.gate is not None or r.order_key is not None for r in m.runs) for m in matches)


def applied(backend: Backend[Any], db: Tx, matches: Sequence[Matched]) -> tuple[Sequence[Matched], float]:
    """``matches`` with their rule state applied (:func:`apply`), and the time it was
    judged by (for :func:`hold`). Recorders of rule state take turns (``state_lock``)."""
    if not has_state(matches):
        return matches, 0.0
    db.all("state_lock", {})
    now = clock(backend, db)
    return [apply(db, m, now) for m in matches], now


# --- recording matches --------------------------------------------------------------------


def apply(db: Tx, match: Matched, now: float) -> Matched:
    """The match with its state applied: runs whose throttle or threshold says no are
    dropped, timers started or cancelled, and the explain record says why. Applied once
    per event: an event already recorded (by a worker whose claim ran out) changes nothing."""
    if not any(r.gate is not None for r in match.runs) and not match.timers:
        return match
    if _one(db, "event_pending", event_id=match.event_id) is None:
        return dataclasses.replace(match, runs=[], timers=())
    explain = [dict(e) for e in match.explain]
    runs = []
    for run in match.runs:
        reason = _gate(db, run.gate, run.id, match.event_id, now) if run.gate is not None else None
        if reason is not None:
            _explain(explain, run.rule, reason)
        if reason is None or reason.startswith("yes"):
            runs.append(run)
    for op in match.timers:
        _explain(explain, op.rule, _timer(db, op, match, now))
    return dataclasses.replace(match, runs=runs, explain=explain, timers=())


def _explain(explain: list[dict[str, Any]], rule: str, reason: str) -> None:
    for entry in explain:
        if entry.get("rule") == rule:
            entry["matched"], entry["reason"] = reason.startswith("yes"), reason


def _gate(db: Tx, gate: Gate, run_id: str, event_id: str, now: float) -> str:
    key = {"rule": gate.rule, "key": gate.key}
    if gate.kind == "throttle":
        if _one(db, "throttle_take", **key, until=now + gate.window, run_id=run_id, now=now) is not None:
            return f"yes: throttle for key {gate.key!r} set until {timestamp(now + gate.window)}"
        held = db.all("throttle_get", key)[0]
        return f"no: throttled until {timestamp(held['until'])} by run {held['run_id']} (key {gate.key!r})"
    db.count("hit_put", {**key, "event_id": event_id, "now": now, "expires_at": now + gate.window})
    count = db.all("hit_count", {**key, "since": now - gate.window})[0]["count"]
    text = f"{count} of {gate.count} within {seconds(gate.window)} (key {gate.key!r})"
    if count < gate.count:
        return f"no: {text}"
    db.count("hit_reset", key)
    return f"yes: {text}"


def _timer(db: Tx, op: TimerOp, match: Matched, now: float) -> str:
    key = {"rule": op.rule, "key": op.key}
    if op.op == "expect":
        if db.count("timer_cancel", {**key, "event_id": match.event_id, "now": now}):
            return f"no: absence timer for key {op.key!r} cancelled: the expected event came in time"
        return f"no: no absence timer pending for key {op.key!r}"
    event = match.event
    timer_id = derived_id("timer", op.rule, op.key, match.event_id)
    db.count("timer_start", {
        **key, "id": timer_id, "due_at": now + op.window, "event_id": match.event_id,
        "type": event.type if event else "", "source": event.source if event else "",
        "body": json.dumps(event.body if event else None, ensure_ascii=False, default=str), "now": now,
    })
    pending = db.all("timer_pending", key)[0]
    what = "started" if pending["id"] == timer_id else "already pending"
    return f"no: absence timer for key {op.key!r} {what}, due {timestamp(pending['due_at'])}"


def hold(db: Tx, run: NewRun, now: float) -> str | None:
    """Enter ``run`` in its key's order; the reason it waits, or None when it may start now."""
    assert run.order_key is not None
    key = {"rule": run.rule, "key": run.order_key}
    head = _one(db, "order_head", **key)
    db.count("order_put", {**key, "run_id": run.id, "now": now})
    if head is None or head["run_id"] == run.id:
        return None
    reason = f"waiting for run {head['run_id']}: runs of order_by key {run.order_key!r} start one at a time, in order"
    db.count("run_wait", {"run_id": run.id, "reason": reason, "now": now})
    return reason


def release_all(backend: Backend[Any], db: Tx, run_ids: Sequence[str]) -> None:
    """Runs of order_by keys have finished: the next run of each key starts. In turn with
    matching (``state_lock``), so that a run created meanwhile behind one of them is seen."""
    if run_ids:
        db.all("state_lock", {})
        now = clock(backend, db)
        for run_id in run_ids:
            release(db, run_id, now)


def release(db: Tx, run_id: str, now: float) -> str | None:
    """``run_id`` has finished (or was skipped): its key's next run starts. That run's id,
    or None."""
    row = _one(db, "order_done", run_id=run_id)
    if row is None:
        return None
    head = _one(db, "order_head", rule=row["rule"], key=row["key"])
    if head is None or not db.count("run_release", {"run_id": head["run_id"], "now": now}):
        return None
    db.count("step_release", {"run_id": head["run_id"], "now": now})
    return str(head["run_id"])


# --- timers, retention ------------------------------------------------------------------


def fire_due(db: Tx, now: float, limit: int) -> list[Incoming]:
    """Take up to ``limit`` due timers, mark them fired, and return the ``rule.absence``
    events to store in the same transaction (one per timer: its id is derived from it)."""
    events, fired = [], []
    for t in db.all("timers_due", {"now": now, "limit": limit}):
        event_id = derived_id(ABSENCE_EVENT, t["id"])
        body = {
            "rule": t["rule"], "key": t["key"], "due_at": timestamp(t["due_at"]),
            "started_at": timestamp(t["created_at"]),
            "after": {"id": t["after_event"], "type": t["after_type"], "source": t["after_source"],
                      "body": json.loads(t["after_body"])},
        }
        fired.append({"id": t["id"], "event_id": event_id, "now": now})
        events.append(Incoming(
            source="hookwise", type=ABSENCE_EVENT, body=json.dumps(body, ensure_ascii=False), headers={}, query={},
            received_at=now, id=event_id,
        ))
    db.many("timer_fired", fired)
    return events


def prune(db: Tx, now: float, before: float) -> int:
    """Delete ended throttles and hits, and finished timers and order entries older than ``before``."""
    names = ("prune_throttles", "prune_hits", "prune_timers", "prune_order")
    return sum(db.count(name, {"now": now, "before": before}) for name in names)


def reason_for(waiting: dict[str, Any]) -> str:
    """Why a waiting run waits, in words."""
    head, status = waiting["run_id"], waiting["status"]
    if status == RunStatus.DEAD.value:
        return (f"waiting: run {head} of order_by key {waiting['key']!r} is dead; "
                f"retry it (hookwise runs retry {head}) or skip it (hookwise runs skip {head})")
    return f"waiting for run {head} ({status}) of order_by key {waiting['key']!r}"


class StateMethods(Generic[TxT]):
    """The store methods of stateful rules, on the core's backend (a base of
    :class:`~engine.store.core.StoreCore`)."""

    backend: Backend[TxT]

    def fire_timers(self, limit: int = 100) -> int:
        if self.backend.look_before_claim:
            with self.backend.read() as db:
                due = db.all("next_timer_due", {})[0]["due"]
                if due is None or due > clock(self.backend, db):
                    return 0
        with self.backend.transaction() as db:
            events = fire_due(db, clock(self.backend, db), limit)
            db.many("put_event", [shapes.event_row(e) for e in events])
            if events:
                self.backend.notify(db)
        return len(events)

    def skip_run(self, run_id: str) -> dict[str, Any] | None:
        with self.backend.transaction() as db:
            db.all("state_lock", {})
            now = clock(self.backend, db)
            if not db.count("run_skip", {"run_id": run_id, "now": now}):
                return None
            db.count("steps_skip", {"run_id": run_id})
            release(db, run_id, now)
            return shapes.run(db.all("get_run", {"id": run_id})[0])

    def rule_state(self, rule: str, limit: int = 50) -> dict[str, Any]:
        with self.backend.read() as db:
            p = {"rule": rule, "now": clock(self.backend, db), "limit": limit}
            return {
                "throttled": db.all("list_throttles", p), "counters": db.all("list_counters", p),
                "timers": db.all("list_timers", p), "ordered": db.all("list_waiting", p),
            }

    def event_timers(self, event_id: str) -> list[dict[str, Any]]:
        with self.backend.read() as db:
            return db.all("timers_of_event", {"event_id": event_id})

    def run_waiting_for(self, run_id: str) -> dict[str, Any] | None:
        with self.backend.read() as db:
            row = _one(db, "order_of_run", run_id=run_id)
            if row is None:
                return None
            head = _one(db, "order_head", rule=row["rule"], key=row["key"])
            if head is None or row["done"] or head["run_id"] == run_id:
                return {"key": row["key"], "run_id": None, "status": None}
            status = _one(db, "get_run_status", run_id=head["run_id"])
            return {"key": row["key"], "run_id": head["run_id"], "status": status["status"] if status else None}
