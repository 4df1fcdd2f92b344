"""Rule test cases placed in time (SPEC 14): the events of a case, each at its time, matched
through a throwaway SQLite store whose clock the case moves, so throttles, thresholds and
absence timers are tested without waiting and by the very code that serves.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..events import Event
from ..run.matching import match_event
from ..store import Incoming
from ..units import parse_duration
from .loader import Loaded
from .stateful import ABSENCE_EVENT

#: Where a case's time starts: ``at: +2h`` is two hours after it.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def parse_at(value: str | float | None) -> float:
    """A case's time: ``+2h`` (after the start), an ISO time, or None (the start).
    Raises ValueError saying what is accepted."""
    if value is None:
        return EPOCH
    if isinstance(value, int | float):
        return EPOCH + float(value)
    text = value.strip()
    if text.startswith("+"):
        return EPOCH + parse_duration(text[1:])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"expected +DURATION (e.g. +2h) or an ISO time (2026-01-01T10:00:00Z), got {value!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@dataclass
class _Clock:
    now: float = EPOCH

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Step:
    """One event of a case at its time (``event`` None: only time passes)."""

    at: float
    event: Event | None


@dataclass
class Outcome:
    """What the case's last moment did: the events matched then, and the rules that fired."""

    #: (event, explain record) of each event matched at the case's time, its own last
    matched: list[tuple[Event, list[dict[str, Any]]]] = field(default_factory=list)

    def fired(self) -> list[tuple[str, Event]]:
        return [(e["rule"], event) for event, explain in self.matched for e in explain if e.get("matched")]


def play(loaded: Loaded, steps: Sequence[Step]) -> Outcome:
    """Play ``steps`` in order; what happened at the last one's time."""
    from ..store.sqlite import SQLiteStore

    clock = _Clock()
    with tempfile.TemporaryDirectory(prefix="hookwise-case-") as folder:
        store = SQLiteStore(Path(folder) / "case.db", clock=clock)
        try:
            outcome = Outcome()
            for n, step in enumerate(steps):
                clock.now = max(clock.now, step.at)
                outcome = Outcome()
                store.fire_timers(10_000)
                if step.event is not None:
                    store.put_events([_incoming(step.event, n, clock.now)])
                _match_all(loaded, store, outcome)
            return outcome
        finally:
            store.close()


def _incoming(event: Event, n: int, now: float) -> Incoming:
    return Incoming(source=event.source, type=event.type, body=json.dumps(event.body), headers=dict(event.headers),
                    query=dict(event.query), received_at=now, id=f"{event.id}-{n}")


def _match_all(loaded: Loaded, store: Any, outcome: Outcome) -> None:
    """Match every event due now (fired absences first: they were due earlier)."""
    while True:
        count, _ = store.match_events(
            256, lambda events: [match_event(loaded, e) for e in events], event_lease=10.0, serial=True
        )
        if not count:
            return
        for listed in reversed(store.list_events(limit=count)):
            stored = store.get_event(listed["id"])
            event = Event(source=stored["source"], type=stored["type"], body=stored["body"],
                          headers=stored["headers"] or {}, query=stored["query"] or {}, id=stored["id"],
                          received_at=datetime.fromtimestamp(listed["received_at"], UTC))
            if event.type == ABSENCE_EVENT:
                outcome.matched.insert(0, (event, stored["explain"] or []))
            else:
                outcome.matched.append((event, stored["explain"] or []))
