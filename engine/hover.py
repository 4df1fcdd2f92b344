"""The Hover account: OAuth tokens kept in the store, the process's rate limit, the API client.

Outcomes of one :meth:`HoverClient.request`:

    status below 400 (redirects are not followed)   -> (status, parsed JSON or None, headers)
    401                                             -> refresh the access token once, send once more
    429                                             -> Retry(after=Retry-After)
    5xx, connection error, timeout                  -> Retry
    any other 4xx (also a 401 after the refresh)    -> Refused (a Fail), with the status and a body excerpt
    no tokens in the store                          -> NotLoggedIn (a Fail): run `hookwise hover login`

Tokens live in the store, not in memory, so every thread and every process sees the latest
pair. Hover rotates refresh tokens and a used one dies, so refreshes happen one at a time:
threads of a process queue on a lock; processes take the store's account lock, re-read the
tokens (another process may have refreshed meanwhile: then those are used), refresh, save
the new pair before releasing the lock. Hover allows 120 requests per minute per
integration; :class:`RateLimiter` keeps the whole process under it.

Tokens and the client secret never appear in logs or error messages. Hover is called
through :class:`engine.outbound.Client` (requests), which follows no redirect: Hover
redirects file downloads to storage hosts, and the Authorization header must not follow.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from .config import Hover
from .errors import Fail, Retry
from .outbound import Client, InvalidRequest, OutboundError
from .runs import retry_after
from .store import HoverStore, HoverTokens

log = logging.getLogger("hookwise.hover")

#: Hover's documented limit: 120 requests per minute (developers.hover.to, "Rate Limits").
RATE_LIMIT = 120
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
MAX_BODY = 8 * 1024 * 1024
MAX_PAGES = 100
_EXCERPT = 200
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")
#: ``PUT /api/v2/webhooks/<code>/verify``: the verification handshake (SPEC 9).
VERIFY_PATH = re.compile(r"/api/v2/webhooks/([^/?#]+)/verify")

NOT_LOGGED_IN = "hover: not logged in: run `hookwise hover login`"
#: What the verification handshake says while it waits for the account to be connected; a
#: login makes the steps whose last error starts with NOT_LOGGED_IN due at once.
HANDSHAKE_WAITS = NOT_LOGGED_IN + "; the handshake runs as soon as the account is connected"
#: How long a handshake waits before it looks again, unless a login wakes it first.
LOGIN_WAIT = 600.0
#: How long a login that `hookwise hover login` started may take: its OAuth state is
#: refused after that (by /hover/callback) and the command gives up.
LOGIN_TTL = 600.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class NotLoggedIn(Fail):
    """hover: not logged in: run `hookwise hover login`"""

    def __init__(self) -> None:
        super().__init__(NOT_LOGGED_IN)


class Refused(Fail):
    """Hover answered with a 4xx that no retry changes; ``status`` says which."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: dict[str, str]


class RateLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds (a sliding window), shared
    by every thread of the process."""

    def __init__(
        self, limit: int, period: float = 60.0, *, clock: Clock = time.time, sleep: Sleep = time.sleep
    ) -> None:
        if limit < 1:
            raise ValueError("the rate limit must be at least 1 request per period")
        self.limit, self.period = limit, period
        self._clock, self._sleep = clock, sleep
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Take a slot, waiting for one to free; raise :class:`Retry` (after the wait that
        would be needed) when that wait would pass ``timeout`` seconds."""
        waited = 0.0
        while (wait := self._take()) is not None:
            if waited + wait > timeout:
                raise Retry(
                    f"hover: {self.limit} requests per {self.period:g}s reached; waiting would pass the step's timeout",
                    after=wait
                )
            self._sleep(wait)
            waited += wait

    def _take(self) -> float | None:
        """None when a slot was taken, else the seconds until one frees."""
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - self.period:
                self._times.popleft()
            if len(self._times) < self.limit:
                self._times.append(now)
                return None
            return max(self._times[0] + self.period - now, 0.001)


class HoverClient:
    """The Hover account and API of one process: create one and share it (its rate limit
    is the process's). ``clock`` and ``sleep`` drive token expiry and the rate limit;
    ``rate_limit`` is requests per minute."""

    def __init__(
        self, settings: Hover, store: HoverStore, *, clock: Clock = time.time, sleep: Sleep = time.sleep,
        rate_limit: int = RATE_LIMIT, account: str = "default",
    ) -> None:
        self.settings, self.store, self.account = settings, store, account
        self.base_url = settings.base_url.rstrip("/")
        self._clock, self._sleep = clock, sleep
        self.limiter = RateLimiter(rate_limit, 60.0, clock=clock, sleep=sleep)
        self._refreshing = threading.Lock()
        self._client = Client(max_body=MAX_BODY, pool_size=4)

    # --- OAuth ----------------------------------------------------------------------------

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
        return self._current().access_token

    def _current(self) -> HoverTokens:
        tokens = self._stored()
        if tokens.expires_at - self._clock() > REFRESH_MARGIN:
            return tokens
        return self._refresh(tokens)

    def _stored(self) -> HoverTokens:
        tokens = self.store.hover_tokens(self.account)
        if tokens is None:
            raise NotLoggedIn()
        return tokens

    def _refresh(self, seen: HoverTokens) -> HoverTokens:
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
        response = self._open(
            "POST", f"{self.base_url}/oauth/token",
            {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            urlencode(body).encode(), TOKEN_TIMEOUT, f"hover: {doing}",
        )
        answer = _parse(response.body)
        if response.status == 429 or response.status >= 500:
            raise Retry(
                f"hover: {doing}: {response.status} from {self.base_url}/oauth/token",
                after=retry_after(response.headers.get("retry-after"))
            )
        if response.status != 200:
            raise Fail(
                f"hover: {doing}: refused ({response.status}{_oauth_error(answer)}): run `hookwise hover login` again"
            )
        return _tokens(answer, started, doing)

    def _require(self, *keys: str) -> None:
        missing = missing_settings(self.settings, *keys)
        if missing:
            raise Fail(f"hover: set {', '.join('hover.' + k for k in missing)} in the config")

    # --- the API --------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
        form: Mapping[str, Any] | None = None, timeout: float = 30.0,
    ) -> tuple[int, Any, dict[str, str]]:
        """Call ``path`` on the Hover API as the account; see the module docstring for the
        outcomes. Each wait (rate limit, connection, response) is bounded by ``timeout``."""
        url = self.base_url + path + _query(params)
        data, content_type = _body(json, form)
        tokens = self._current()
        response = self._send(method, url, path, tokens.access_token, data, content_type, timeout)
        if response.status == 401:
            # Expired early or revoked; one refresh (or the pair another process just saved).
            tokens = self._refresh(tokens)
            response = self._send(method, url, path, tokens.access_token, data, content_type, timeout)
        return self._outcome(method, path, response)

    def _send(
        self, method: str, url: str, path: str, token: str, data: bytes | None, content_type: str | None, timeout: float
    ) -> _Response:
        self.limiter.acquire(timeout)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return self._open(method, url, headers, data, timeout, f"hover: {method} {path}")

    def _open(
        self, method: str, url: str, headers: dict[str, str], data: bytes | None, timeout: float, what: str,
    ) -> _Response:
        try:
            reply = self._client.send(method, url, headers=headers, data=data, timeout=timeout)
        except OutboundError as exc:
            raise Retry(f"{what}: {exc}") from None
        except InvalidRequest as exc:
            raise Fail(f"{what}: {exc}") from None
        return _Response(reply.status, reply.body, reply.headers)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def _outcome(self, method: str, path: str, response: _Response) -> tuple[int, Any, dict[str, str]]:
        status, what = response.status, f"hover: {method} {path}"
        if status < 400:
            return status, _parse(response.body), response.headers
        if status == 429:
            raise Retry(f"{what}: 429 rate limited by Hover", after=retry_after(response.headers.get("retry-after")))
        if status >= 500:
            raise Retry(
                f"{what}: {status}{_excerpt(response.body)}", after=retry_after(response.headers.get("retry-after"))
            )
        if status == 401:
            again = "run `hookwise hover login` again"
            raise Refused(f"{what}: 401 even after refreshing the access token: {again}", status)
        raise Refused(f"{what}: {status}{_excerpt(response.body)}", status)

    # --- webhooks, for `hookwise hover` -----------------------------------------------------

    def register_webhook(self, url: str, *, source: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """``POST /api/v2/webhooks``; Hover answers with the webhook's ``id`` and
        ``hmac_secret`` (which hookwise prints only at registration) and POSTs a verification code to ``url``."""
        _, body, _ = self.request(
            "POST", "/api/v2/webhooks", json={"webhook": {"url": url, "content_type": "json"}}, timeout=timeout
        )
        if not isinstance(body, dict) or "id" not in body:
            raise Fail("hover: POST /api/v2/webhooks: the answer has no webhook id")
        self.store.save_hover_webhook(str(body["id"]), source=source, url=body.get("url") or url)
        return body

    def list_webhooks(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The account's webhooks at Hover (every page) merged with what the store recorded;
        see :func:`merge_webhooks`."""
        remote: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            _, body, _ = self.request("GET", "/api/v2/webhooks", params={"page": page}, timeout=timeout)
            results, last = _page(body, page)
            remote.extend(results)
            if last or not results:
                break
        return merge_webhooks(remote, self.store.hover_webhooks())

    def verify(self, path: str, *, timeout: float = 30.0) -> tuple[int, Any, str]:
        """The verification call on ``path`` (``/api/v2/webhooks/{code}/verify``): ``PUT``,
        as Hover's reference documents it, and once more with ``POST`` when the PUT is
        answered 405 (Hover's older webhook guide says POST). Returns the status, the body
        and the method that worked."""
        try:
            status, body, _ = self.request("PUT", path, timeout=timeout)
            return status, body, "PUT"
        except Refused as exc:
            if exc.status != 405:
                raise
        log.info("hover: PUT %s was answered 405; trying POST", path)
        status, body, _ = self.request("POST", path, timeout=timeout)
        return status, body, "POST"

    def verify_webhook(
        self, code: str, webhook_id: str | None = None, *, source: str | None = None, timeout: float = 30.0
    ) -> int:
        """Verify with ``code`` (see :meth:`verify`); records ``verified_at`` and the method
        (or, on a permanent failure, ``last_error``) for ``webhook_id`` in the store. Returns
        the status."""
        path = f"/api/v2/webhooks/{quote(code, safe='')}/verify"
        try:
            status, _, method = self.verify(path, timeout=timeout)
        except Fail as exc:
            record_verification(self.store, webhook_id, source=source, error=str(exc))
            raise
        record_verification(self.store, webhook_id, source=source, verified_at=time.time(), method=method)
        return status


class SharedClient:
    """The process's :class:`HoverClient` for the ``hover:`` settings in force: one at a
    time, so its rate limit is the process's. Settings that change (a reload) make a new
    client; the one replaced is closed (its connections released) as soon as no call is
    using it, and :meth:`close` does the same for the last one when the process stops.
    Safe to use from several threads."""

    def __init__(self, store: HoverStore) -> None:
        self.store = store
        self._current: tuple[Hover, HoverClient] | None = None
        self._users: dict[HoverClient, int] = {}  # clients in use, by the number of calls using them
        self._retired: set[HoverClient] = set()  # replaced, to close when their last call ends
        self._lock = threading.Lock()

    @contextmanager
    def use(self, settings: Hover) -> Iterator[HoverClient]:
        """The client for ``settings``, kept open until the ``with`` block ends."""
        with self._lock:
            if self._current is None or self._current[0] != settings:
                idle = self._retire()
                self._current = (settings, HoverClient(settings, self.store))
            else:
                idle = []
            client = self._current[1]
            self._users[client] = self._users.get(client, 0) + 1
        _close_all(idle)
        try:
            yield client
        finally:
            with self._lock:
                self._users[client] -= 1
                done = not self._users[client]
                if done:
                    del self._users[client]
                idle = [client] if done and client in self._retired else []
                self._retired.difference_update(idle)
            _close_all(idle)

    def close(self) -> None:
        """Retire the current client (the process stops): it is closed once no call uses
        it. A later :meth:`use` makes a new one, which a later :meth:`close` retires."""
        with self._lock:
            idle = self._retire()
            self._current = None
        _close_all(idle)

    def _retire(self) -> list[HoverClient]:
        """Retire the current client (the lock held); what may be closed at once."""
        if self._current is None:
            return []
        client = self._current[1]
        if client in self._users:
            self._retired.add(client)
            return []
        return [client]


def _close_all(clients: Iterable[HoverClient]) -> None:
    for client in clients:
        client.close()


def record_verification(
    store: HoverStore | None, webhook_id: Any, *, source: str | None = None,
    verified_at: float | None = None, error: str | None = None, method: str | None = None,
) -> None:
    """Note the outcome of a verification handshake for ``webhook_id`` (nothing to note
    without one, or without a store). A failure is noted only for a webhook already
    recorded (registered here, or verified before): an event alone, which anyone holding
    the URL token can send, never makes a webhook appear."""
    if store is None or webhook_id is None or webhook_id == "":
        return
    key = str(webhook_id)
    if error is not None and not any(w["webhook_id"] == key for w in store.hover_webhooks()):
        return
    store.save_hover_webhook(key, source=source, verified_at=verified_at, last_error=error, verify_method=method)


def merge_webhooks(remote: Iterable[Mapping[str, Any]], recorded: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per webhook: ``id, url, source, verified_at, verify_method, last_error,
    at_hover`` (``verify_method``: the call that verified it here, PUT or POST). Hover's
    ``verified_at``/``last_error`` win; the store's fill in (and are all there is for a
    webhook Hover no longer lists). ``hmac_secret`` is left out: it is a secret."""
    mine = {str(r["webhook_id"]): r for r in recorded}
    rows = []
    for hook in remote:
        key = str(hook.get("id"))
        own = mine.pop(key, {})
        rows.append({
            "id": key, "url": hook.get("url") or own.get("url"), "source": own.get("source"),
            "verified_at": hook.get("verified_at") or _iso_or_none(own.get("verified_at")),
            "verify_method": own.get("verify_method"), "last_error": hook.get("last_error") or own.get("last_error"),
            "at_hover": True,
        })
    for key, own in mine.items():
        rows.append({
            "id": key, "url": own.get("url"), "source": own.get("source"),
            "verified_at": _iso_or_none(own.get("verified_at")), "verify_method": own.get("verify_method"),
            "last_error": own.get("last_error"), "at_hover": False,
        })
    return rows


def missing_settings(settings: Hover, *keys: str) -> list[str]:
    """Which of ``keys`` (``client_id``, ``client_secret``, ``redirect_uri``) are unset."""
    return [k for k in keys if not getattr(settings, k)]


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _iso_or_none(value: Any) -> str | None:
    return iso(value) if isinstance(value, (int, float)) else value


def _tokens(answer: Any, started: float, doing: str) -> HoverTokens:
    if not isinstance(answer, dict) or not answer.get("access_token") or not answer.get("refresh_token"):
        raise Fail(f"hover: {doing}: the answer has no access_token and refresh_token")
    try:
        expires_in = float(answer.get("expires_in") or DEFAULT_EXPIRES_IN)
    except (TypeError, ValueError):
        expires_in = DEFAULT_EXPIRES_IN
    # Counted from when the request was sent, so a slow answer errs towards refreshing early.
    return HoverTokens(str(answer["access_token"]), str(answer["refresh_token"]), started + expires_in)


def _page(body: Any, page: int) -> tuple[list[dict[str, Any]], bool]:
    """Hover's list wrapper ``{"pagination": {current_page, total_pages, total}, "results": [...]}``
    -> (results, whether this is the last page)."""
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)], True
    if not isinstance(body, dict):
        return [], True
    results = [r for r in body.get("results") or [] if isinstance(r, dict)]
    pagination = body.get("pagination") or {}
    total_pages = pagination.get("total_pages") if isinstance(pagination, dict) else None
    return results, not isinstance(total_pages, int) or page >= total_pages


def _query(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    pairs = []
    for name, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    return "?" + urlencode(pairs)


def _body(json_value: Any, form: Mapping[str, Any] | None) -> tuple[bytes | None, str | None]:
    if form is not None:
        return urlencode({k: _form_value(v) for k, v in form.items()}).encode(), "application/x-www-form-urlencoded"
    if json_value is not None:
        return json.dumps(json_value).encode(), "application/json"
    return None, None


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _excerpt(raw: bytes) -> str:
    flat = " ".join(raw[: _EXCERPT * 2].decode("utf-8", "replace").split())
    if not flat:
        return ""
    return f": {flat[:_EXCERPT]}{'…' if len(flat) > _EXCERPT else ''}"


def _oauth_error(answer: Any) -> str:
    # Only the error code (e.g. invalid_grant): descriptions are free text from the server.
    code = answer.get("error") if isinstance(answer, dict) else None
    return f" {code}" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""


__all__ = [
    "HANDSHAKE_WAITS", "HoverClient", "LOGIN_TTL", "LOGIN_WAIT", "NOT_LOGGED_IN", "NotLoggedIn", "RATE_LIMIT",
    "RateLimiter", "Refused", "SharedClient", "VERIFY_PATH", "merge_webhooks", "missing_settings",
    "record_verification",
]
