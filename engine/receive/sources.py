"""Source presets: where an event's type and delivery id come from (SPEC 4).

Verification lives in ``verify.py``; this module only reads type and id from a request
that has already been accepted, and never fails: an event whose type cannot be read gets
the type ``unknown``, so that an authentic event is never lost because of its shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..rules.config import Preset, Source

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Locator:
    """Where a value sits in a request: ``body:PATH``, ``header:NAME`` or a fixed value."""

    kind: str  #: "body", "header" or "fixed"
    where: str

    @classmethod
    def parse(cls, text: str) -> Locator:
        kind, sep, rest = text.partition(":")
        if sep and kind in ("body", "header") and rest:
            return cls(kind, rest.lower() if kind == "header" else rest)
        return cls("fixed", text)

    def read(self, body: Any, headers: Mapping[str, str]) -> str | None:
        if self.kind == "fixed":
            return self.where
        if self.kind == "header":
            return headers.get(self.where) or None
        value = _dig(body, self.where)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            return str(value)
        return None


#: For each preset of config.PRESETS (tests/test_sources.py checks that every one is here):
#: (type locator, delivery id locator; None means a hash of the body).
PRESET_LOCATORS: dict[Preset, tuple[str, str | None]] = {
    "hover": ("body:event", None),
    "github": ("header:X-GitHub-Event", "header:X-GitHub-Delivery"),
    "stripe": ("body:type", "body:id"),
    "standard": ("body:type", "header:webhook-id"),
    "slack": ("body:type", "body:event_id"),
}


@dataclass(frozen=True)
class Reader:
    """Reads an event's type and delivery id the way its source says."""

    type: Locator
    id: Locator | None

    @classmethod
    def for_source(cls, source: Source | None) -> Reader:
        preset = PRESET_LOCATORS[source.preset] if source is not None and source.preset is not None else None
        type_text = (source.type if source is not None else None) or (preset[0] if preset else "body:type")
        id_text = (source.id if source is not None else None) or (preset[1] if preset else None)
        return cls(Locator.parse(type_text), Locator.parse(id_text) if id_text else None)

    def event_type(self, body: Any, headers: Mapping[str, str]) -> str:
        found = self.type.read(body, headers)
        if found is None and self.type.where == "type" and isinstance(body, dict) and "command" in body:
            return "command"  # Slack slash commands carry no type, only the command
        return found or UNKNOWN

    def delivery_id(self, raw: bytes, body: Any, headers: Mapping[str, str]) -> str:
        """The delivery id, or a hash of the raw body when the source names none (so
        identical bodies count as one delivery)."""
        found = self.id.read(body, headers) if self.id is not None else None
        return found or "sha256:" + hashlib.sha256(raw).hexdigest()[:32]  # 128 bits: ample to tell bodies apart


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
