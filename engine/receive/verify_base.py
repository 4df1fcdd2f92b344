"""What every signature scheme works with (SPEC 4, 9): the request as received (:class:`Request`),
the refusal (:class:`Rejected`), the :class:`Verifier` and :class:`Check` contracts, the
:class:`Draft` a sender signs, and the small constant-time helpers the schemes share. No I/O.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlencode

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Most signatures one header may carry: rotation needs two or three, and a cap keeps a
#: hostile header from buying thousands of ed25519 checks.
MAX_SIGNATURES = 20

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class Request:
    """What verification sees of a request: the raw body and the envelope."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  #: lower-case names
    query: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    #: The request URI as received, query string included ("/hooks/hover?token=x"):
    #: Hover signs the request URI.
    path: str = "/"
    client: str | None = None  #: the peer's IP address as text
    now: float | None = None  #: unix time; None means time.time()

    def clock(self) -> float:
        return time.time() if self.now is None else self.now


class Rejected(Exception):
    """Verification failed.

    ``status`` is 401 (a bad or missing signature or token, a stale timestamp) or 403 (the
    address is not allowed). ``reason`` is precise, for logs only ("timestamp too old",
    "no signature matched"); the HTTP answer must not say which secret or part failed.
    """

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Verifier(Protocol):
    def verify(self, request: Request) -> None:
        """Return if the request proves its sender; raise :class:`Rejected` if not."""
        ...


@dataclass(frozen=True)
class Draft:
    """A request being signed by :func:`sign`: each check adds its headers or query."""

    body: bytes
    now: float
    path: str
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The request URI the sender will use: the path with the query added."""
        if not self.query:
            return self.path
        return self.path + ("&" if "?" in self.path else "?") + urlencode(dict(self.query))

    def with_headers(self, **headers: str) -> Draft:
        return replace(self, headers={**self.headers, **headers})


class Check(Verifier, Protocol):
    """One check of a source: it verifies requests and can sign drafts."""

    def sign(self, draft: Draft) -> Draft: ...


# --- small helpers ----------------------------------------------------------------


def utf8(text: str) -> bytes:
    """UTF-8 bytes of any text; never raises (lone surrogates pass through)."""
    return text.encode("utf-8", "surrogatepass")


def header_of(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if not value:
        raise Rejected(f"missing header {name}")
    return value


def from_hex(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX.fullmatch(text) and len(text) % 2 == 0 else None


def from_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # non-ASCII text, or binascii.Error
        return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.digest(key, message, algorithm)


def any_equal(expected: Sequence[bytes], provided: Sequence[bytes]) -> bool:
    """Whether any provided value equals any expected one. Every pair is compared, in
    constant time, so the time taken does not tell which secret matched."""
    results = [hmac.compare_digest(e, p) for e in expected for p in provided]
    return any(results)


def require_match(expected: Sequence[bytes], provided: Sequence[bytes | None]) -> None:
    if not any_equal(expected, [p for p in provided if p is not None]):
        raise Rejected("no signature matched")


def unix_time(text: str, name: str) -> int:
    if not _UNIX_SECONDS.fullmatch(text):
        raise Rejected(f"malformed {name}: expected unix seconds")
    return int(text)


def check_fresh(sent: float, request: Request, tolerance: float) -> None:
    """Refuse a timestamp more than ``tolerance`` seconds away from now, either way: a
    replay of an old request, or one signed for later."""
    drift = request.clock() - sent
    if drift > tolerance:
        raise Rejected(f"timestamp too old ({drift:.0f}s > {tolerance:g}s)")
    if -drift > tolerance:
        raise Rejected(f"timestamp too far in the future ({-drift:.0f}s > {tolerance:g}s)")


def capped(signatures: list[str]) -> list[str]:
    if len(signatures) > MAX_SIGNATURES:
        raise Rejected(f"too many signatures ({len(signatures)} > {MAX_SIGNATURES})")
    return signatures


def secret_bytes(values: Iterable[str]) -> tuple[bytes, ...]:
    return tuple(utf8(v) for v in values)
