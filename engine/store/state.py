"""The state of stateful rules (SPEC 14), written once for both backends.

Every function takes a DB-API connection inside the caller's transaction and the
backend's queries (:func:`queries`): the text of ``sql/state.sql`` with only the dialect
bits differing (placeholders, ``SKIP LOCKED``). The backends call in from the transactions
they already run: recording an event's matches (throttle, threshold, timers, order), a run
finishing (the next of its key starts), firing due timers, pruning and reading.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Sequence
from typing import Any

from ..ids import derived_id
from ..runs import RunStatus
from ..stateful import ABSENCE_EVENT, Gate, TimerOp, seconds, timestamp
from . import Incoming, Matched, NewRun
from .queries import load_queries

Queries = dict[str, str]

#: The tables of the state, created by both backends' migrations.
TABLES = ("rule_throttles", "rule_hits", "rule_timers", "run_order")


@functools.cache
def queries(dialect: str) -> Queries:
    """The state queries for ``dialect`` ("sqlite" or "postgres")."""
    out = {}
    for name, sql in load_queries("state").items():
        sql = sql.replace("{skip_locked}", "FOR UPDATE SKIP LOCKED" if dialect == "postgres" else "")
        if dialect == "postgres":
            sql = re.sub(r"(?<![:\w]):([a-z_]+)", r"%(\1)s", sql)
        out[name] = sql
    return out


def _one(db: Any, q: Queries, name: str, **params: Any) -> Any:
    return db.execute(q[name], params).fetchone()


# --- recording matches --------------------------------------------------------------------


def apply(db: Any, q: Queries, match: Matched, now: float) -> Matched:
    """The match with its state applied: runs whose throttle or threshold says no are
    dropped, timers started or cancelled, and the explain record says why. Applied once
    per event: an event already recorded (by a worker whose claim ran out) changes nothing."""
    if not any(r.gate is not None for r in match.runs) and not match.timers:
        return match
    if _one(db, q, "event_pending", event_id=match.event_id) is None:
        return dataclasses.replace(match, runs=[], timers=())
    explain = [dict(e) for e in match.explain]
    runs = []
    for run in match.runs:
        reason = _gate(db, q, run.gate, run.id, match.event_id, now) if run.gate is not None else None
        if reason is not None:
            _explain(explain, run.rule, reason)
        if reason is None or reason.startswith("yes"):
            runs.append(run)
    for op in match.timers:
        _explain(explain, op.rule, _timer(db, q, op, match, now))
    return dataclasses.replace(match, runs=runs, explain=explain, timers=())


def _explain(explain: list[dict[str, Any]], rule: str, reason: str) -> None:
    for entry in explain:
        if entry.get("rule") == rule:
            entry["matched"], entry["reason"] = reason.startswith("yes"), reason


def _gate(db: Any, q: Queries, gate: Gate, run_id: str, event_id: str, now: float) -> str:
    if gate.kind == "throttle":
        key = {"rule": gate.rule, "key": gate.key}
        if _one(db, q, "throttle_take", **key, until=now + gate.window, run_id=run_id, now=now) is not None:
            return f"yes: throttle for key {gate.key!r} set until {timestamp(now + gate.window)}"
        until, holder = _one(db, q, "throttle_get", **key)
        return f"no: throttled until {timestamp(until)} by run {holder} (key {gate.key!r})"
    key = {"rule": gate.rule, "key": gate.key}
    db.execute(q["hit_put"], {**key, "event_id": event_id, "now": now, "expires_at": now + gate.window})
    (count,) = _one(db, q, "hit_count", **key, since=now - gate.window)
    text = f"{count} of {gate.count} within {seconds(gate.window)} (key {gate.key!r})"
    if count < gate.count:
        return f"no: {text}"
    db.execute(q["hit_reset"], key)
    return f"yes: {text}"


def _timer(db: Any, q: Queries, op: TimerOp, match: Matched, now: float) -> str:
    key = {"rule": op.rule, "key": op.key}
    if op.op == "expect":
        if db.execute(q["timer_cancel"], {**key, "event_id": match.event_id, "now": now}).rowcount:
            return f"no: absence timer for key {op.key!r} cancelled: the expected event came in time"
        return f"no: no absence timer pending for key {op.key!r}"
    event = match.event
    db.execute(q["timer_start"], {
        **key, "id": derived_id("timer", op.rule, op.key, match.event_id), "due_at": now + op.window,
        "event_id": match.event_id, "type": event.type if event else "", "source": event.source if event else "",
        "body": json.dumps(event.body if event else None, ensure_ascii=False, default=str), "now": now,
    })
    timer_id, due = _one(db, q, "timer_pending", **key)
    started = timer_id == derived_id("timer", op.rule, op.key, match.event_id)
    what = "started" if started else "already pending"
    return f"no: absence timer for key {op.key!r} {what}, due {timestamp(due)}"


def hold(db: Any, q: Queries, run: NewRun, now: float) -> str | None:
    """Enter ``run`` in its key's order; the reason it waits, or None when it may start now."""
    assert run.order_key is not None
    key = {"rule": run.rule, "key": run.order_key}
    head = _one(db, q, "order_head", **key)
    db.execute(q["order_put"], {**key, "run_id": run.id, "now": now})
    if head is None or head[0] == run.id:
        return None
    reason = f"waiting for run {head[0]}: runs of order_by key {run.order_key!r} start one at a time, in order"
    db.execute(q["run_wait"], {"run_id": run.id, "reason": reason, "now": now})
    return reason


def release(db: Any, q: Queries, run_id: str, now: float) -> str | None:
    """``run_id`` has finished (or was skipped): its key's next run starts. That run's id,
    or None."""
    row = _one(db, q, "order_done", run_id=run_id)
    if row is None:
        return None
    head = _one(db, q, "order_head", rule=row[0], key=row[1])
    if head is None or not db.execute(q["run_release"], {"run_id": head[0], "now": now}).rowcount:
        return None
    db.execute(q["step_release"], {"run_id": head[0], "now": now})
    return str(head[0])


def skip(db: Any, q: Queries, run_id: str, now: float) -> bool:
    """Put a dead (or waiting) run aside, and let its key's next run start."""
    if not db.execute(q["run_skip"], {"run_id": run_id, "now": now}).rowcount:
        return False
    db.execute(q["steps_skip"], {"run_id": run_id})
    release(db, q, run_id, now)
    return True


# --- timers -----------------------------------------------------------------------------


def fire_due(db: Any, q: Queries, now: float, limit: int) -> list[Incoming]:
    """Take up to ``limit`` due timers, mark them fired, and return the ``rule.absence``
    events to store in the same transaction (one per timer: its id is derived from it)."""
    events = []
    for timer_id, rule, key, due, after_id, after_type, after_source, after_body, created in db.execute(
        q["timers_due"], {"now": now, "limit": limit}
    ).fetchall():
        event_id = derived_id(ABSENCE_EVENT, timer_id)
        body = {
            "rule": rule, "key": key, "due_at": timestamp(due), "started_at": timestamp(created),
            "after": {"id": after_id, "type": after_type, "source": after_source, "body": json.loads(after_body)},
        }
        db.execute(q["timer_fired"], {"id": timer_id, "event_id": event_id, "now": now})
        events.append(Incoming(
            source="hookwise", type=ABSENCE_EVENT, body=json.dumps(body, ensure_ascii=False), headers={}, query={},
            received_at=now, id=event_id,
        ))
    return events


# --- retention and reading --------------------------------------------------------------


def prune(db: Any, q: Queries, now: float, before: float) -> int:
    """Delete ended throttles and hits, and finished timers and order entries older than ``before``."""
    return sum(
        db.execute(q[name], {"now": now, "before": before}).rowcount
        for name in ("prune_throttles", "prune_hits", "prune_timers", "prune_order")
    )


def rule_state(db: Any, q: Queries, rule: str, now: float, limit: int = 50) -> dict[str, Any]:
    """What ``rule`` keeps: throttled keys, counters, timers, runs in order."""
    p = {"rule": rule, "now": now, "limit": limit}
    return {
        "throttled": [{"key": k, "until": u, "run_id": r} for k, u, r in db.execute(q["list_throttles"], p)],
        "counters": [{"key": k, "count": c, "first_at": f, "last_at": la}
                     for k, c, f, la in db.execute(q["list_counters"], p)],
        "timers": [{"id": i, "key": k, "status": s, "due_at": d, "after_event": a, "ended_by": e, "created_at": c}
                   for i, k, s, d, a, e, c in db.execute(q["list_timers"], p)],
        "ordered": [{"run_id": r, "key": k, "status": s} for r, k, s in db.execute(q["list_waiting"], p)],
    }


def timers_of_event(db: Any, q: Queries, event_id: str) -> list[dict[str, Any]]:
    return [
        {"id": i, "rule": r, "key": k, "status": s, "due_at": d, "ended_by": e}
        for i, r, k, s, d, e in db.execute(q["timers_of_event"], {"event_id": event_id})
    ]


def waiting_for(db: Any, q: Queries, run_id: str) -> dict[str, Any] | None:
    """For a run of an ordered rule: its key and the run at the head of that key, with its status."""
    row = _one(db, q, "order_of_run", run_id=run_id)
    if row is None:
        return None
    rule, key, done = row
    head = _one(db, q, "order_head", rule=rule, key=key)
    if head is None or done or head[0] == run_id:
        return {"key": key, "run_id": None, "status": None}
    status = _one(db, q, "get_run_status", run_id=head[0])
    return {"key": key, "run_id": head[0], "status": status[0] if status else None}


def reason_for(waiting: dict[str, Any]) -> str:
    """Why a waiting run waits, in words."""
    head, status = waiting["run_id"], waiting["status"]
    if status == RunStatus.DEAD.value:
        return (f"waiting: run {head} of order_by key {waiting['key']!r} is dead; "
                f"retry it (hookwise runs retry {head}) or skip it (hookwise runs skip {head})")
    return f"waiting for run {head} ({status}) of order_by key {waiting['key']!r}"


def has_state(matches: Sequence[Matched]) -> bool:
    return any(m.timers or any(r.gate is not None or r.order_key is not None for r in m.runs) for m in matches)
