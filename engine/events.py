"""The Event value: a received (or emitted) webhook with its envelope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One event as rules see it.

    ``body`` is the parsed JSON (or form) body; ``headers`` has lower-case names;
    ``depth`` counts how many ``emit`` steps led to this event (0 for a received one).
    """

    source: str
    type: str
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    id: str = ""
    received_at: datetime = field(default_factory=utcnow)
    delivery_id: str | None = None
    depth: int = 0
    #: a replay: the event it repeats, and the rules it is for (None: every rule)
    replay_of: str | None = None
    only_rules: tuple[str, ...] | None = None

    def envelope(self) -> dict[str, Any]:
        """The ``$``-paths of conditions: ``$headers``, ``$query``, ``$source``, ``$type``,
        ``$event_id``, ``$received_at``. Built once per event; treat it as read-only."""
        return self._envelope

    @cached_property
    def _envelope(self) -> dict[str, Any]:
        return {
            "headers": dict(self.headers),
            "query": dict(self.query),
            "source": self.source,
            "type": self.type,
            "event_id": self.id,
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
        }

    def context(self) -> dict[str, Any]:
        """The template context of SPEC 5.3 that comes from the event alone."""
        return {
            "event": self.body,
            "headers": dict(self.headers),
            "query": dict(self.query),
            "source": self.source,
            "type": self.type,
            "event_id": self.id,
            "received_at": self.received_at.isoformat().replace("+00:00", "Z"),
        }
