"""Rows as the store contract returns them, the same from every backend: JSON text to values
and back, the named rows of the queries to Event, StepTask, QueueItem and dicts, and an
incoming event to the rows that store it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..events import Event
from ..receive.bodies import readable
from ..run.runs import StepTask
from .contract import Incoming, QueueItem

#: A row of a query, by column name.
Row = dict[str, Any]


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def event(row: Row) -> Event:
    """An event as claimed (the columns of ``{event_columns}``)."""
    only_rules = row["only_rules"]
    return Event(
        source=row["source"], type=row["type"], body=json.loads(row["body"]), headers=json.loads(row["headers"]),
        query=json.loads(row["query"]), id=row["id"], received_at=datetime.fromtimestamp(row["received_at"], UTC),
        delivery_id=row["delivery_id"], depth=row["depth"], replay_of=row["replay_of"],
        only_rules=tuple(json.loads(only_rules)) if only_rules else None,
    )


def task(row: Row, outputs: Mapping[str, str | None]) -> StepTask:
    """A claimed step with its rule, its event and the (JSON) outputs of earlier steps."""
    return StepTask(
        run_id=row["run_id"], index=row["idx"], step_id=row["step_id"], action=row["action"], attempt=row["attempt"],
        rule=row["rule"], rule_version=row["rule_version"], event=event(row),
        outputs={step_id: loads(out) for step_id, out in outputs.items()}, overrides=loads(row["overrides"]) or {},
    )


def event_detail(row: Row) -> dict[str, Any]:
    """The ``get_event`` row, JSON fields decoded. A body that cannot be shown as JSON
    (stored by an older version: too deep, ``NaN``) is its text, with ``body_note``."""
    body, note = readable(row["body"])
    decoded = {key: loads(row[key]) for key in ("headers", "query", "explain", "only_rules")}
    return {**row, "body": body, **decoded, **({"body_note": note} if note is not None else {})}


def run(row: Row) -> dict[str, Any]:
    return {**row, "shadow": bool(row["shadow"])}  # SQLite keeps it as 0 or 1


def step(row: Row) -> dict[str, Any]:
    return {**row, "params": loads(row["params"]), "output": loads(row["output"])}


def queue_item(row: Row) -> QueueItem:
    return QueueItem(**{**row, "data": loads(row["data"])})


def counts(rows: list[Row], outer: str, inner: str) -> dict[str, dict[str, int]]:
    """``{row[outer]: {row[inner]: row["count"]}}``."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row[outer], {})[row[inner]] = row["count"]
    return out


def delivery_row(item: Incoming) -> dict[str, Any]:
    """The columns of an event's delivery id, in the table's order (as :func:`event_row`)."""
    return {
        "source": item.source, "delivery_id": item.delivery_id, "event_id": item.id,
        "expires_at": item.received_at + item.dedupe_window,
    }


def event_row(item: Incoming) -> dict[str, Any]:
    return {
        "id": item.id, "source": item.source, "type": item.type, "delivery_id": item.delivery_id, "body": item.body,
        "headers": dumps(item.headers), "query": dumps(item.query) if item.query else "{}",
        "received_at": item.received_at, "depth": item.depth,
        "available_at": item.available_at if item.available_at is not None else item.received_at,
    }
