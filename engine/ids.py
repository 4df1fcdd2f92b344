"""Identifiers: time-ordered ids for events, and ids derived from what they name."""

from __future__ import annotations

import hashlib
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case


def new_id() -> str:
    """A 26-character ULID: 48 bits of milliseconds then 80 random bits, so ids sort by
    creation time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def derived_id(*parts: str) -> str:
    """A stable id for what ``parts`` name: the same parts give the same id, across
    processes and restarts (used for runs, and for events an ``emit`` step stores)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]
