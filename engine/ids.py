"""Identifiers: time-ordered ids for events, and ids derived from what they name."""

from __future__ import annotations

import base64
import hashlib
import random
import time

# RFC 4648's base32 alphabet mapped onto Crockford's (lower case): the mapping keeps the
# order of the 5-bit groups, so ids still sort by creation time.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


#: Ids need to be unique, not unguessable: a generator seeded from the OS once (at import)
#: costs less per id than a system call for fresh randomness.
_random = random.Random()


def new_id() -> str:
    """A 26-character id: 48 bits of milliseconds then 80 random bits, base32 (Crockford's
    alphabet), so ids sort by creation time."""
    raw = ((int(time.time() * 1000) << 80) | _random.getrandbits(80)).to_bytes(16, "big")
    return base64.b32encode(raw)[:26].translate(_CROCKFORD).decode()


def derived_id(*parts: str) -> str:
    """A stable id for what ``parts`` name: the same parts give the same id, across
    processes and restarts (used for runs, and for events an ``emit`` step stores)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]
