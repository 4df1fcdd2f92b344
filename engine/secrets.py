"""Masking of secrets: every value hookwise took from the environment shows as ``****``.

A secret is masked in every form it takes where it is shown or stored: as it is, escaped
in JSON text (a response body kept as text), percent-encoded in a URL or form (``%20`` and
``+`` for a space), and inside the base64 of ``user:password`` that HTTP Basic auth sends
(for the user names the config and rules pair with it).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any, overload
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "****"

#: Values shorter than this are not masked: masking "1" or "on" everywhere would garble
#: every line while protecting nothing (no real secret is that short).
MIN_SECRET_LENGTH = 4

_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def forms(secret: str) -> set[str]:
    """The texts ``secret`` may appear as: itself, JSON-escaped (ASCII-only and not),
    percent-encoded (as a path or as one component; ``+`` for spaces as forms do; upper-
    and lower-case hex)."""
    found = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    component, path = quote(secret, safe="", errors="surrogatepass"), quote(secret, errors="surrogatepass")
    for encoded in (component, path, quote_plus(secret, errors="surrogatepass")):
        found |= {encoded, _PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), encoded)}
    return found


def basic_credentials(user: str, password: str) -> set[str]:
    """The base64 of ``user:password`` as HTTP Basic auth sends it, with and without its
    padding."""
    encoded = base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode("ascii")
    return {encoded, encoded.rstrip("=")}


class Masker:
    """Replaces known secret values, in every form of :func:`forms`, in text and in
    JSON-like structures. ``credentials`` are (user, password) pairs that HTTP Basic auth
    may send; a pair holding a secret is masked in its base64 form too."""

    def __init__(self, secrets: Iterable[str] = (), credentials: Iterable[tuple[str, str]] = ()) -> None:
        kept = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        values = set().union(*(forms(s) for s in kept))
        for user, password in credentials:
            if any(s in user or s in password for s in kept):
                values |= basic_credentials(user, password)
        ordered = sorted(values, key=len, reverse=True)  # the longest form first: no half-masked secret
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``****``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    @overload
    def mask_value(self, value: str) -> str: ...
    @overload
    def mask_value(self, value: dict[str, Any]) -> dict[str, Any]: ...
    @overload
    def mask_value(self, value: list[Any]) -> list[Any]: ...

    def mask_value(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with every secret in its strings (and keys)
        masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(str(k)): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(v) for v in value]
        return value


def safe_url(url: str) -> str:
    """``url`` fit for a message: userinfo and query string masked
    (``https://****@host/path?****``), the fragment dropped. The one URL masker: the http
    action, ``hookwise send`` and ``hookwise store migrate`` use it."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, MASK if parts.query else "", ""))
