"""Field paths of a condition (SPEC 5.1): ``job.city``, ``items.*.sku``, ``$headers.x-github-event``,
compiled once into a getter over an event's body and envelope; :data:`MISSING` for a field
the event does not have.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from engine.errors import ConfigError, Problem

Getter = Callable[[Any, Mapping[str, Any]], Any]
Segment = tuple[str, "int | None"]


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # copy and pickle hand back the module attribute, so `is MISSING` keeps working.
        return "MISSING"


#: A field the event does not have (distinct from a field holding null).
MISSING: Final = _Missing()


def resolve(path: str, body: Any, envelope: Mapping[str, Any]) -> Any:
    """The value at ``path`` (MISSING when absent) or, for a path with ``*``, the list of
    every value it reaches. Raises :class:`ConfigError` for an invalid path.

    Compiled paths are cached, so calling this per event parses a path only once.
    """
    return _cached_path(path).get(body, envelope)


# --- paths -------------------------------------------------------------------------------

ENVELOPE_FIELDS: Final = ("headers", "query", "source", "type", "event_id", "received_at")
_ENVELOPE_MAPS: Final = frozenset({"headers", "query"})
_STAR: Final[Segment] = ("*", None)


class Invalid(Exception):
    """A spec fragment is invalid; the message says why (turned into a Problem)."""


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A compiled field path: its normalised text and how to read it."""

    text: str
    get: Getter
    fans_out: bool


def compile_path(key: str) -> FieldPath:
    parts = key.split(".")
    if not all(parts):
        raise Invalid(f"empty segment in path {key!r}" if key else "empty path")
    envelope = None
    if parts[0].startswith("$"):
        envelope = _envelope_name(parts[0], len(parts) > 1)
        parts = parts[1:]
        if envelope == "headers" and parts:
            parts[0] = parts[0].lower()
    segments = tuple(_segment(part) for part in parts)
    text = ".".join(([f"${envelope}"] if envelope else []) + parts)
    fans_out = any(seg is _STAR for seg in segments)
    return FieldPath(text, _getter(envelope, segments, fans_out), fans_out)


def _envelope_name(head: str, has_fields: bool) -> str:
    name = head[1:]
    if name not in ENVELOPE_FIELDS:
        valid = ", ".join(f"${n}" for n in ENVELOPE_FIELDS)
        hint = did_you_mean(head, (f"${n}" for n in ENVELOPE_FIELDS))
        raise Invalid(f"unknown envelope field {head!r}{hint}; valid: {valid}")
    if has_fields and name not in _ENVELOPE_MAPS:
        raise Invalid(f"{head!r} is a string and has no fields")
    return name


def _segment(part: str) -> Segment:
    if part == "*":
        return _STAR
    # isascii: str.isdigit accepts '²' and other digits int() would refuse.
    return (part, int(part) if part.isascii() and part.isdigit() else None)


def _getter(envelope: str | None, segments: tuple[Segment, ...], fans_out: bool) -> Getter:
    groups = _star_groups(segments)
    if envelope is not None:
        name = envelope
        if fans_out:
            return lambda body, env: _fan_out(env.get(name, MISSING), groups)
        return lambda body, env: _walk(env.get(name, MISSING), segments)
    if fans_out:
        return lambda body, env: _fan_out(body, groups)
    if len(segments) == 1 and segments[0][1] is None:
        key = segments[0][0]  # the fast path: one plain key on the body
        return lambda body, env: body.get(key, MISSING) if isinstance(body, dict) else MISSING
    return lambda body, env: _walk(body, segments)


def _walk(value: Any, segments: tuple[Segment, ...]) -> Any:
    for key, index in segments:
        if isinstance(value, dict):
            value = value.get(key, MISSING)  # on an object a numeric segment is a key
        elif index is not None and isinstance(value, list) and index < len(value):
            value = value[index]
        else:
            return MISSING
    return value


def _fan_out(value: Any, groups: tuple[tuple[Segment, ...], ...]) -> list[Any]:
    """Every value a ``*`` path reaches, one per combination of ``*`` choices; ``groups``
    are the plain segments between the stars."""
    out: list[Any] = []
    _collect(value, groups, 0, out)
    return out


def _collect(value: Any, groups: tuple[tuple[Segment, ...], ...], i: int, out: list[Any]) -> None:
    value = _walk(value, groups[i])
    if i + 1 == len(groups):
        out.append(value)
        return
    items = value if isinstance(value, list) else value.values() if isinstance(value, dict) else ()
    for item in items:
        _collect(item, groups, i + 1, out)


def _star_groups(segments: tuple[Segment, ...]) -> tuple[tuple[Segment, ...], ...]:
    groups: list[tuple[Segment, ...]] = [()]
    for seg in segments:
        if seg is _STAR:
            groups.append(())
        else:
            groups[-1] += (seg,)
    return tuple(groups)


@lru_cache(maxsize=1024)
def _cached_path(path: str) -> FieldPath:
    try:
        return compile_path(path)
    except Invalid as exc:
        raise ConfigError([Problem(str(exc))]) from None


def did_you_mean(word: str, options: Any, aliases: Mapping[str, str] | None = None) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    # Names from other tools (JSON Schema, Python) that no spelling distance finds.
    guess = (aliases or {}).get(word.lower()) or (close[0] if close else None)
    return f" (did you mean {guess!r}?)" if guess else ""
