"""What operators ask of a running (or stopped) hookwise: events with their explain records
and runs, replays, retries of dead runs, rules with their counts, sources, the overview and
the Hover account. Shared by the management API, the CLI and the web UI, so all answer
alike; every answer is masked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import Loc, ParamsError, UsageError, format_loc
from ..hover.handshake import BUILTIN_FILE
from ..rules.config import Verify
from ..rules.loader import Loaded
from ..rules.stateful import describe
from ..run.plan import apply_overrides
from ..run.runs import RunStatus
from ..store import HoverStore, InspectionStore, OperatorStore
from ..store.state import reason_for

EVENT_STATUSES = ("pending", "matched")
RUN_STATUSES = tuple(status.value for status in RunStatus)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None, name: str) -> float | None:
    """An ISO-8601 date-time (or unix seconds) as unix seconds."""
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"{name}: expected an ISO-8601 date-time, got {text!r}") from None


def list_events(
    loaded: Loaded, store: InspectionStore, *, limit: int = 50, cursor: str | None = None, source: str | None = None,
    type: str | None = None, status: str | None = None, since: str | None = None, until: str | None = None,
) -> dict[str, Any]:
    """A page of events, newest first, and the cursor of the next page (None at the end)."""
    if status is not None and status not in EVENT_STATUSES:
        raise UsageError(f"status: expected one of {', '.join(EVENT_STATUSES)}")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and int(cursor) < 2**63):
        raise UsageError("cursor: expected the next_cursor of a previous page")
    rows = store.list_events(
        limit + 1, source=source, type=type, status=status, since=parse_time(since, "since"),
        until=parse_time(until, "until"), cursor=int(cursor) if cursor else None,
    )
    page = rows[:limit]
    next_cursor = str(page[-1]["seq"]) if len(rows) > limit else None
    events = [_summary(row) for row in page]
    return loaded.masker.mask_value({"events": events, "next_cursor": next_cursor})


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    """An event of a list: ``runs`` is how many it produced (None until it is matched), and
    ``outcome`` says so in words: pending, no rule matched, 1 run, 3 runs."""
    pending = row["status"] == "pending"
    runs = None if pending else int(row["runs"])
    outcome = "pending" if runs is None else "no rule matched" if runs == 0 else f"{runs} run{'s' if runs != 1 else ''}"
    summary = {k: v for k, v in row.items() if k not in ("seq", "runs")}
    return {**summary, "received_at": iso(row["received_at"]), "runs": runs, "outcome": outcome}


def event_detail(loaded: Loaded, store: InspectionStore, event_id: str) -> dict[str, Any] | None:
    """An event with its body, headers (credentials masked when stored), explain record and
    runs with their steps."""
    event = store.get_event(event_id)
    if event is None:
        return None
    event["received_at"] = iso(event["received_at"])
    runs = [run_detail(loaded, store, run["id"]) for run in store.runs_of_event(event_id)]
    timers = store.event_timers(event_id)
    for timer in timers:
        timer["due_at"] = iso(timer["due_at"])
    return loaded.masker.mask_value({"event": event, "runs": runs, "timers": timers})


def run_detail(loaded: Loaded, store: InspectionStore, run_id: str) -> dict[str, Any] | None:
    run = store.get_run(run_id)
    if run is None:
        return None
    run["created_at"], run["updated_at"] = iso(run["created_at"]), iso(run["updated_at"])
    steps = store.steps_of_run(run_id)
    for step in steps:
        step["started_at"], step["finished_at"] = iso(step["started_at"]), iso(step["finished_at"])
        step["due_at"] = iso(step["due_at"]) if step["status"] in ("ready", "running") else None
    extra: dict[str, Any] = {}
    if run["status"] == "waiting" and (waiting := store.run_waiting_for(run_id)) is not None:
        extra["waiting_for"] = {**waiting, "reason": reason_for(waiting)}
        run["error"] = reason_for(waiting)  # said now: the run it waits for may have died since
    return loaded.masker.mask_value({**run, "steps": steps, **extra})


def skip(loaded: Loaded, store: InspectionStore, run_id: str) -> dict[str, Any]:
    """Put a dead or waiting run aside, so that the next run of its order_by key starts."""
    run = store.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    if run["status"] not in ("dead", "waiting"):
        raise UsageError(f"run {run_id} is {run['status']}: only a dead or waiting run can be skipped")
    if store.skip_run(run_id) is None:
        raise UsageError(f"run {run_id} is no longer dead or waiting")
    detail = run_detail(loaded, store, run_id)
    assert detail is not None
    return detail


def rule_state(loaded: Loaded, store: InspectionStore, rule: Any) -> dict[str, Any] | None:
    """What a stateful rule keeps, times as ISO text; None for a stateless rule."""
    if rule.state is None:
        return None
    found = store.rule_state(rule.name)
    for entry in found["throttled"]:
        entry["until"] = iso(entry["until"])
    for entry in found["counters"]:
        entry["first_at"], entry["last_at"] = iso(entry["first_at"]), iso(entry["last_at"])
    for entry in found["timers"]:
        entry["due_at"], entry["created_at"] = iso(entry["due_at"]), iso(entry["created_at"])
    return found


def list_runs(
    loaded: Loaded, store: InspectionStore, *, status: str | None = None, rule: str | None = None, limit: int = 50,
    shadow: bool | None = None,
) -> dict[str, Any]:
    """Runs, the latest changed first; ``shadow`` true or false keeps only the runs of
    shadow rules (rendered, no action run) or only live ones."""
    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"status: expected one of {', '.join(RUN_STATUSES)}")
    runs = store.list_runs(status, limit, rule, shadow)
    for run in runs:
        run["created_at"], run["updated_at"] = iso(run["created_at"]), iso(run["updated_at"])
    return loaded.masker.mask_value({"runs": runs})


def replay(loaded: Loaded, store: InspectionStore, event_id: str, rules: Sequence[str] = ()) -> str | None:
    """Store a copy of the event to go through the rules again (only ``rules`` when
    given); None when there is no such event."""
    unknown = [r for r in rules if loaded.rules.get(r) is None]
    if unknown:
        raise UsageError(f"no rule named {', '.join(map(repr, unknown))}")
    return store.replay_event(event_id, list(rules) or None)


def parse_sets(values: Sequence[str]) -> list[tuple[str, str, Any]]:
    """``STEP.PARAM=VALUE`` options as (step, param path, value); the value is JSON when it
    parses as JSON, else text."""
    out = []
    for value in values:
        target, sep, raw = value.partition("=")
        step, dot, param = target.partition(".")
        if not sep or not dot or not step or not param:
            raise UsageError(f"--set {value!r}: expected STEP.PARAM=VALUE, e.g. crm.url=https://crm.example.com")
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        out.append((step, param, parsed))
    return out


def retry(
    loaded: Loaded, store: InspectionStore, run_id: str, sets: Sequence[tuple[str, str, Any]] = ()
) -> dict[str, Any]:
    """Resume a dead run from its dead step; ``sets`` edit that step's params."""
    run = store.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r}")
    if run["status"] != "dead":
        raise UsageError(f"run {run_id} is {run['status']}, not dead: only a dead run can be retried")
    dead = next(s for s in store.steps_of_run(run_id) if s["status"] == "dead")
    overrides = checked_overrides(loaded, run_id, dead, sets)
    if store.retry_run(run_id, overrides or None) is None:
        raise UsageError(f"run {run_id} is no longer dead")
    detail = run_detail(loaded, store, run_id)
    assert detail is not None
    return detail


def checked_overrides(
    loaded: Loaded, run_id: str, dead: Mapping[str, Any], sets: Sequence[tuple[str, str, Any]]
) -> dict[str, Any]:
    """``sets`` as the dead step's overrides (``{"param.path": value}``), checked against
    its action's params: raises :class:`ParamsError` naming each ``STEP.PARAM`` that is not
    the dead step's, is no param of its action, or holds a value the action refuses."""
    overrides: dict[str, Any] = {}
    for step, param, value in sets:
        if step not in (dead["id"], str(dead["index"])):
            where = f"run {run_id} is dead at step {dead['index']} ({dead['id']})"
            raise ParamsError(f"{step}.{param}: {where}: --set can change that step only")
        overrides[param] = value
    if not overrides:
        return overrides
    # The step's last rendered params (masked as stored; none when rendering failed), edited.
    # Only what the edits touch is judged: a masked value elsewhere is not the user's doing.
    edited = apply_overrides(dead["params"] if isinstance(dead["params"], dict) else {}, overrides)
    paths: list[Loc] = [tuple(path.split(".")) for path in overrides]
    problems = [p for p in loaded.registry.params_problems(dead["action"], edited) if _touches(p.loc, paths)]
    if problems:
        named = (f"{dead['id']}.{format_loc(p.loc)}: {p.message}" if p.loc else p.message for p in problems)
        raise ParamsError("; ".join(named))
    return overrides


def _touches(loc: Loc, paths: list[Loc]) -> bool:
    """Whether a problem at ``loc`` is at, below or above one of the edited ``paths``."""
    return any(loc[: len(p)] == p or p[: len(loc)] == loc for p in paths)


def rules_info(loaded: Loaded, store: InspectionStore) -> dict[str, Any]:
    """Every rule with its version, file, line and the counts of its runs."""
    counts = store.rule_counts()
    rules = []
    for rule in loaded.rules:
        by_status = counts.get(rule.name, {})
        rules.append({
            "name": rule.name, "description": rule.description, "version": rule.version, "file": rule.file,
            "line": rule.line, "builtin": rule.file == BUILTIN_FILE, "enabled": rule.enabled, "priority": rule.priority,
            "mode": "shadow" if rule.shadow else "live",
            "source": sorted(rule.sources) if rule.sources is not None else None,
            "event": list(rule.event_text) or None,
            "steps": [{"id": s.id, "action": s.action} for s in rule.steps],
            "stateful": describe(rule.state) if rule.state is not None else [],
            "state": rule_state(loaded, store, rule),
            "counts": {"runs": sum(by_status.values()), "succeeded": by_status.get("succeeded", 0),
                       "dead": by_status.get("dead", 0), "active": by_status.get("active", 0)},
        })
    return loaded.masker.mask_value({"rules": rules})


def sources_info(loaded: Loaded, store: OperatorStore) -> dict[str, Any]:
    """Every source: its preset, how requests prove themselves, and for Hover the webhooks'
    verification state and last error."""
    webhooks = store.hover_webhooks()
    sources = []
    for name, source in sorted(loaded.config.settings.sources.items()):
        entry: dict[str, Any] = {
            "name": name, "preset": source.preset, "path": f"/hooks/{name}", "authenticated": source.authenticated(),
            "checks": [c for c, on in (
                ("signature", bool(source.secret or source.hmac_secret or isinstance(source.verify, Verify))),
                ("token", bool(source.token or source.token_file)), ("allow_ips", bool(source.allow_ips)),
            ) if on],
        }
        if source.preset == "hover":
            entry["hover"] = {"webhooks": [
                {**w, "verified_at": iso(w["verified_at"]), "updated_at": iso(w["updated_at"])}
                for w in webhooks if w["source"] in (None, name)
            ]}
        sources.append(entry)
    return loaded.masker.mask_value({"sources": sources})


def activity(store: InspectionStore, *, minutes: int = 60, now: float | None = None) -> dict[str, Any]:
    """Events received per minute by source over the last ``minutes`` minutes, the current
    minute last: ``{"start": ISO time of the first minute, "minutes": n, "sources": {source:
    [count per minute]}}``."""
    end = int((time.time() if now is None else now) // 60)
    start = end - minutes + 1
    series: dict[str, list[int]] = {}
    for source, minute, count in store.events_per_minute(start * 60.0):
        if start <= minute <= end:
            series.setdefault(source, [0] * minutes)[minute - start] += count
    return {"start": iso(start * 60.0), "minutes": minutes, "sources": dict(sorted(series.items()))}


def last_errors(loaded: Loaded, store: InspectionStore, limit: int = 10) -> list[dict[str, Any]]:
    """The latest failures, newest first: dead runs with their error, and steps that failed
    an attempt and wait for the next (``retry_at``)."""
    found = [
        {"run_id": r["id"], "rule": r["rule"], "event_id": r["event_id"], "step": r["step"], "error": r["error"],
         "at": r["updated_at"], "state": "dead", "retry_at": None}
        for r in store.list_runs("dead", limit)
    ]
    found += [
        {"run_id": s["run_id"], "rule": s["rule"], "event_id": s["event_id"], "step": s["index"], "error": s["error"],
         "at": s["finished_at"], "state": "retrying", "retry_at": iso(s["due_at"])}
        for s in store.retrying_steps(limit)
    ]
    found.sort(key=lambda e: e["at"] or 0.0, reverse=True)
    return loaded.masker.mask_value([{**e, "at": iso(e["at"])} for e in found[:limit]])


def overview(loaded: Loaded, store: OperatorStore, *, now: float | None = None) -> dict[str, Any]:
    """What the UI's first page shows: activity by source, runs by status, dead runs, queue
    depths, sources with their verification state and the last errors. Every part reads an
    index or a bounded page: nothing counts the whole events table."""
    counts = store.run_status_counts()
    return {
        "activity": activity(store, now=now),
        "runs": {status: counts.get(status, 0) for status in RUN_STATUSES},
        "dead_runs": list_runs(loaded, store, status="dead", limit=10)["runs"],
        "queues": store.queue_counts(),
        "sources": sources_info(loaded, store)["sources"],
        "errors": last_errors(loaded, store),
    }


def hover_account(loaded: Loaded, store: HoverStore) -> dict[str, Any]:
    """The Hover account as the store knows it: connected or not, when the access token
    expires, which settings a login still needs, and the webhooks recorded (registered here
    or verified by a handshake). No token appears."""
    from ..hover.client import merge_webhooks
    from ..hover.tokens import missing_settings

    settings = loaded.config.settings.hover
    tokens = store.hover_tokens()
    return loaded.masker.mask_value({
        "connected": tokens is not None, "expires_at": iso(tokens.expires_at) if tokens else None,
        "base_url": settings.base_url, "redirect_uri": settings.redirect_uri,
        "missing": missing_settings(settings, "client_id", "client_secret", "redirect_uri"),
        "webhooks": merge_webhooks([], store.hover_webhooks()),
    })
