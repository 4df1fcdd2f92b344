"""Who may use the UI, and the browser's protections (SPEC 11, 13).

- With ``api.token`` set, a person signs in with the token and gets a session cookie
  (HttpOnly, SameSite=Strict, Secure over HTTPS, path ``/ui``) that expires after
  :data:`SESSION_TTL`. Without a token only loopback clients are served, as by ``/api``, and
  no sign-in is needed.
- The cookie is ``ID.EXPIRES.SIGNED_IN.MAC``: an HMAC-SHA256 over the rest, with a key
  derived from the token (so every process that shares the config accepts it, and changing
  the token signs everyone out) or, without a token, a random key of this process.
- Every visitor has a session, signed in or not, so that every form, the sign-in form
  included, carries a CSRF token bound to it: the HMAC of the session id.
- Signing out forgets the cookie in the browser and revokes the session id in this process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: The session cookie's name.
COOKIE = "hookwise_ui"
#: How long a session lasts (a working day), signed in or not.
SESSION_TTL = 8 * 3600.0

#: Headers of every UI response: no script but ours, no inline script or style, no framing,
#: no sniffing, no referrer to other origins.
def content_policy(*form_targets: str) -> str:
    """The Content-Security-Policy of UI pages; ``form_targets`` are origins besides our own
    that a form of the page may lead to (Chromium applies ``form-action`` to the redirects
    after a submission too: the Hover page's Connect form ends at Hover's authorize page)."""
    forms = " ".join(("'self'", *form_targets))
    return (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; "
        f"form-action {forms}; frame-ancestors 'none'; base-uri 'none'"
    )


HEADERS = {
    "Content-Security-Policy": content_policy(),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

Clock = Callable[[], float]


@dataclass(frozen=True)
class Session:
    id: str
    #: unix time
    expires: float
    signed_in: bool


class Sessions:
    """Issues and reads session cookies and their CSRF tokens. ``token`` returns the
    current ``api.token`` (None when unset)."""

    def __init__(self, token: Callable[[], str | None], clock: Clock = time.time) -> None:
        self._token = token
        self._clock = clock
        self._own_key = secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def required(self) -> bool:
        """Whether a person must sign in (``api.token`` is set)."""
        return self._token() is not None

    def _key(self) -> bytes:
        token = self._token()
        if token is None:
            return self._own_key
        return hmac.new(token.encode(), b"hookwise ui sessions", hashlib.sha256).digest()

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._key(), text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def new(self, signed_in: bool = False) -> Session:
        return Session(secrets.token_urlsafe(18), float(int(self._clock() + SESSION_TTL)), signed_in)

    def max_age(self, session: Session) -> int:
        """Seconds the session has left (the cookie's Max-Age)."""
        return max(0, int(session.expires - self._clock()))

    def encode(self, session: Session) -> str:
        payload = f"{session.id}.{int(session.expires)}.{int(session.signed_in)}"
        return f"{payload}.{self._mac(payload)}"

    def decode(self, value: str | None) -> Session | None:
        """The session of a cookie, or None when it is missing, forged, expired or revoked."""
        if not value or value.count(".") != 3:
            return None
        payload, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        session_id, expires, signed_in = payload.split(".")
        if not expires.isdigit() or signed_in not in ("0", "1") or float(expires) <= self._clock():
            return None
        with self._lock:
            if session_id in self._revoked:
                return None
        return Session(session_id, float(expires), signed_in == "1")

    def check_token(self, given: str) -> bool:
        """Whether ``given`` is ``api.token`` (compared in constant time)."""
        token = self._token()
        return token is not None and hmac.compare_digest(given.encode(), token.encode())

    def csrf(self, session: Session) -> str:
        """The CSRF token every form of ``session`` carries."""
        return self._mac(f"csrf {session.id}")

    def check_csrf(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf(session).encode())

    def revoke(self, session: Session) -> None:
        """Sign out: this process no longer accepts the session."""
        now = self._clock()
        with self._lock:
            self._revoked = {s: until for s, until in self._revoked.items() if until > now}
            self._revoked[session.id] = session.expires
