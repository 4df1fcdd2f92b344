"""Rows as the store contract returns them, the same from every backend: JSON text to
values and back, and the tuples of the named queries to Event, QueueItem and dicts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..bodies import readable
from ..events import Event
from . import QueueItem

EVENT_SUMMARY = ("seq", "id", "source", "type", "delivery_id", "received_at", "status", "replay_of", "runs")
RUN = ("id", "event_id", "rule", "rule_version", "status", "step", "error", "created_at", "updated_at", "shadow")
STEP = (
    "run_id", "index", "id", "action", "status", "attempt", "due_at", "params", "output", "error", "started_at",
    "finished_at"
)
HOVER_WEBHOOK = ("webhook_id", "source", "url", "verified_at", "last_error", "updated_at", "verify_method")
HOVER_LOGIN = ("status", "error", "expired")
RETRYING_STEP = ("run_id", "rule", "event_id", "index", "id", "action", "attempt", "error", "due_at", "finished_at")


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def event(row: Sequence[Any]) -> Event:
    """An event as claimed: id, source, type, delivery_id, body, headers, query,
    received_at, depth, replay_of, only_rules."""
    event_id, source, type_, delivery_id, body, headers, query, received_at, depth, replay_of, only_rules = row
    return Event(
        source=source, type=type_, body=json.loads(body), headers=json.loads(headers), query=json.loads(query),
        id=event_id, received_at=datetime.fromtimestamp(received_at, UTC), delivery_id=delivery_id, depth=depth,
        replay_of=replay_of, only_rules=tuple(json.loads(only_rules)) if only_rules else None,
    )


def event_detail(r: Sequence[Any]) -> dict[str, Any]:
    """The ``get_event`` row as a dict, JSON fields decoded. A body that cannot be shown as
    JSON (stored by an older version: too deep, ``NaN``) is its text, with ``body_note``."""
    body, note = readable(r[4])
    return {
        "id": r[0], "source": r[1], "type": r[2], "delivery_id": r[3], "body": body,
        "headers": loads(r[5]), "query": loads(r[6]), "received_at": r[7], "depth": r[8],
        "status": r[9], "explain": loads(r[10]), "replay_of": r[11], "only_rules": loads(r[12]),
        **({"body_note": note} if note is not None else {}),
    }


def run(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(RUN, row, strict=True))
    out["shadow"] = bool(out["shadow"])  # SQLite keeps it as 0 or 1
    return out


#: What :meth:`Store.scan_events` gives: (seq, event, explain record or None while pending).
Scanned = tuple[int, Event, Any]


def scanned(row: Sequence[Any]) -> Scanned:
    """A ``scan_events`` row: seq, the event's columns as :func:`event` reads them, explain."""
    return row[0], event(row[1:12]), loads(row[12])


def steps(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        step = dict(zip(STEP, row, strict=True))
        step["params"], step["output"] = loads(step["params"]), loads(step["output"])
        out.append(step)
    return out


def queue_item(row: Sequence[Any]) -> QueueItem:
    item_id, queue, key, status, data, attempts, max_attempts, available_at, error, created, updated = row
    return QueueItem(
        item_id, queue, key, status, loads(data), attempts, max_attempts, available_at, error, created, updated
    )
