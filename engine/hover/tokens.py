"""The Hover account's OAuth tokens: login, the code exchange, and the refresh.

Tokens live in the store, not in memory, so every thread and every process sees the latest
pair. Hover rotates refresh tokens and a used one dies, so refreshes happen one at a time:
threads of a process queue on a lock; processes take the store's account lock, re-read the
tokens (another process may have refreshed meanwhile: then those are used), refresh, save
the new pair before releasing the lock.

The token requests (``POST /oauth/token``) go through the :class:`PostForm` the API client
(:class:`engine.hover.client.HoverClient`) hands in, outside the rate limit. Tokens and the client
secret never appear in logs or error messages.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from ..errors import Fail, Retry
from ..rules.config import Hover
from ..run.runs import retry_after
from ..store import HoverStore, HoverTokens
from .limits import Clock, Sleep

log = logging.getLogger("hookwise.hover")

#: The access token is refreshed when it expires within this many seconds.
REFRESH_MARGIN = 300.0
#: How long the store's refresh lock is held at most (a crashed holder frees it then).
LOCK_TTL = 30.0
#: How long to wait for another process's refresh before giving up with Retry.
LOCK_WAIT = 30.0
POLL = 0.1
#: Time limit of a token request; below LOCK_TTL so a refresh ends while the lock is held.
TOKEN_TIMEOUT = 20.0
#: Hover's access tokens live 2 h; used when a token response has no ``expires_in``.
DEFAULT_EXPIRES_IN = 7200.0
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")

NOT_LOGGED_IN = "hover: not logged in: run `hookwise hover login`"
#: What the verification handshake says while it waits for the account to be connected; a
#: login makes the steps whose last error starts with NOT_LOGGED_IN due at once.
HANDSHAKE_WAITS = NOT_LOGGED_IN + "; the handshake runs as soon as the account is connected"
#: How long a handshake waits before it looks again, unless a login wakes it first.
LOGIN_WAIT = 600.0
#: How long a login that `hookwise hover login` started may take: its OAuth state is
#: refused after that (by /hover/callback) and the command gives up.
LOGIN_TTL = 600.0


class NotLoggedIn(Fail):
    """hover: not logged in: run `hookwise hover login`"""

    def __init__(self) -> None:
        super().__init__(NOT_LOGGED_IN)


class PostForm(Protocol):
    """POST ``data`` (a URL-encoded form) to ``url`` asking for JSON: the status, the parsed
    body (None when it is not JSON) and the headers. A connection error or timeout raises
    :class:`Retry`, a request that cannot be sent :class:`Fail`; ``what`` opens their message."""

    def __call__(self, url: str, data: bytes, timeout: float, what: str) -> tuple[int, Any, Mapping[str, str]]: ...


class TokenKeeper:
    """The OAuth tokens of one account (``account``) in ``store``: the process's
    :class:`engine.hover.client.HoverClient` holds one as ``client.tokens``. ``clock`` drives token
    expiry; ``sleep`` the wait for another process's refresh."""

    def __init__(
        self, settings: Hover, store: HoverStore, post_form: PostForm, *, clock: Clock = time.time,
        sleep: Sleep = time.sleep, account: str = "default",
    ) -> None:
        self.settings, self.store, self.account = settings, store, account
        self.base_url = settings.base_url.rstrip("/")
        self._post_form = post_form
        self._clock, self._sleep = clock, sleep
        self._refreshing = threading.Lock()

    def authorize_url(self, state: str | None = None) -> str:
        """Where the user allows access: ``GET {base_url}/oauth/authorize``."""
        self._require("client_id", "redirect_uri")
        query = {
            "client_id": self.settings.client_id, "redirect_uri": self.settings.redirect_uri, "response_type": "code"
        }
        if state:
            query["state"] = state
        return f"{self.base_url}/oauth/authorize?{urlencode(query)}"

    def start_login(self, ttl: float = LOGIN_TTL) -> tuple[str, str]:
        """Start a login (``hookwise hover login``, the web UI's "Connect to Hover"): a new
        OAuth state, kept in the store for ``ttl`` seconds for ``GET /hover/callback`` (or a
        pasted code) to take once, and the authorize URL that carries it: ``(state, url)``."""
        state = secrets.token_urlsafe(24)
        url = self.authorize_url(state)  # first: settings that are missing record nothing
        self.store.begin_hover_login(state, ttl, self.account)
        return state, url

    def exchange_code(self, code: str) -> HoverTokens:
        """Trade an authorization code for tokens and save them in the store at once."""
        self._require("client_id", "client_secret", "redirect_uri")
        tokens = self._grant("exchanging the authorization code", {
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri or "",
        })
        self.store.save_hover_tokens(tokens, self.account)
        log.info("hover: logged in; the access token expires at %s", iso(tokens.expires_at))
        woken = self.store.wake_steps("hover", NOT_LOGGED_IN)  # handshakes waiting for this login
        if woken:
            log.info("hover: %d waiting step%s run now", woken, "" if woken == 1 else "s")
        return tokens

    def access_token(self) -> str:
        """A usable access token, refreshed first when it expires within 5 minutes."""
        return self.current().access_token

    def current(self) -> HoverTokens:
        """The stored pair, refreshed first when it expires within 5 minutes."""
        tokens = self._stored()
        if tokens.expires_at - self._clock() > REFRESH_MARGIN:
            return tokens
        return self.refresh(tokens)

    def _stored(self) -> HoverTokens:
        tokens = self.store.hover_tokens(self.account)
        if tokens is None:
            raise NotLoggedIn()
        return tokens

    def refresh(self, seen: HoverTokens) -> HoverTokens:
        """Replace ``seen`` with a new pair, unless another thread or process already has:
        then the pair in the store is used (``seen``'s refresh token is dead by then)."""
        with self._refreshing:
            holder = self._lock_account(seen)
            if isinstance(holder, HoverTokens):
                return holder
            try:
                current = self._stored()  # re-read under the lock: the last holder may have refreshed
                if current != seen:
                    return current
                fresh = self._grant(
                    "refreshing the access token",
                    {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
                )
                self.store.save_hover_tokens(fresh, self.account)  # at once: the old refresh token is dead
                log.info("hover: refreshed the access token; it expires at %s", iso(fresh.expires_at))
                return fresh
            finally:
                self.store.unlock_hover_account(holder, self.account)

    def _lock_account(self, seen: HoverTokens) -> str | HoverTokens:
        """Take the store's refresh lock (returns its holder id), or return the tokens
        another holder saved while this one waited."""
        holder = uuid.uuid4().hex
        waited = 0.0
        while not self.store.lock_hover_account(holder, LOCK_TTL, self.account):
            current = self._stored()
            if current != seen:
                return current
            if waited >= LOCK_WAIT:
                raise Retry("hover: another process has been refreshing the access token for too long", after=LOCK_TTL)
            self._sleep(POLL)
            waited += POLL
        return holder

    def _grant(self, doing: str, fields: dict[str, str]) -> HoverTokens:
        """POST /oauth/token with the client's credentials; the pair it answers."""
        self._require("client_id", "client_secret")
        body = {
            **fields, "client_id": self.settings.client_id or "", "client_secret": self.settings.client_secret or ""
        }
        started = self._clock()
        status, answer, headers = self._post_form(
            f"{self.base_url}/oauth/token", urlencode(body).encode(), TOKEN_TIMEOUT, f"hover: {doing}"
        )
        if status == 429 or status >= 500:
            raise Retry(
                f"hover: {doing}: {status} from {self.base_url}/oauth/token",
                after=retry_after(headers.get("retry-after"))
            )
        if status != 200:
            raise Fail(f"hover: {doing}: refused ({status}{_oauth_error(answer)}): run `hookwise hover login` again")
        return _tokens(answer, started, doing)

    def _require(self, *keys: str) -> None:
        missing = missing_settings(self.settings, *keys)
        if missing:
            raise Fail(f"hover: set {', '.join('hover.' + k for k in missing)} in the config")


def missing_settings(settings: Hover, *keys: str) -> list[str]:
    """Which of ``keys`` (``client_id``, ``client_secret``, ``redirect_uri``) are unset."""
    return [k for k in keys if not getattr(settings, k)]


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _tokens(answer: Any, started: float, doing: str) -> HoverTokens:
    if not isinstance(answer, dict) or not answer.get("access_token") or not answer.get("refresh_token"):
        raise Fail(f"hover: {doing}: the answer has no access_token and refresh_token")
    try:
        expires_in = float(answer.get("expires_in") or DEFAULT_EXPIRES_IN)
    except (TypeError, ValueError):
        expires_in = DEFAULT_EXPIRES_IN
    # Counted from when the request was sent, so a slow answer errs towards refreshing early.
    return HoverTokens(str(answer["access_token"]), str(answer["refresh_token"]), started + expires_in)


def _oauth_error(answer: Any) -> str:
    # Only the error code (e.g. invalid_grant): descriptions are free text from the server.
    code = answer.get("error") if isinstance(answer, dict) else None
    return f" {code}" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""


__all__ = [
    "HANDSHAKE_WAITS", "LOGIN_TTL", "LOGIN_WAIT", "NOT_LOGGED_IN", "NotLoggedIn", "PostForm", "TokenKeeper", "iso",
    "missing_settings",
]
