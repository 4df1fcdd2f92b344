"""The Hover API client of one process: requests as the account, the webhooks, and the one
client the process shares.

Outcomes of one :meth:`HoverClient.request`:

    status below 400 (redirects are not followed)   -> (status, parsed JSON or None, headers)
    401                                             -> refresh the access token once, send once more
    429                                             -> Retry(after=Retry-After)
    5xx, connection error, timeout                  -> Retry
    any other 4xx (also a 401 after the refresh)    -> Refused (a Fail), with the status and a body excerpt
    no tokens in the store                          -> NotLoggedIn (a Fail): run `hookwise hover login`

The account's OAuth tokens (login, refresh one at a time across processes) are
:mod:`engine.hover.tokens`, reached as ``client.tokens``; the process's rate limit (120
requests per minute) is :mod:`engine.hover.limits`, ``client.limiter``.

Tokens and the client secret never appear in logs or error messages. Hover is called
through :class:`engine.run.outbound.Client` (requests), which follows no redirect: Hover
redirects file downloads to storage hosts, and the Authorization header must not follow.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import Fail, Retry
from ..rules.config import Hover
from ..run.outbound import Client, InvalidRequest, OutboundError
from ..run.runs import retry_after
from ..store import HoverStore
from .limits import RATE_LIMIT, Clock, RateLimiter, Sleep
from .tokens import TokenKeeper, iso

log = logging.getLogger("hookwise.hover")

MAX_BODY = 8 * 1024 * 1024
MAX_PAGES = 100
_EXCERPT = 200
#: ``PUT /api/v2/webhooks/<code>/verify``: the verification handshake (SPEC 9).
VERIFY_PATH = re.compile(r"/api/v2/webhooks/([^/?#]+)/verify")


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


class HoverClient:
    """The Hover account and API of one process: create one and share it (its rate limit
    is the process's). ``tokens`` keeps the account's OAuth tokens (login, refresh);
    ``clock`` and ``sleep`` drive token expiry and the rate limit; ``rate_limit`` is
    requests per minute."""

    def __init__(
        self, settings: Hover, store: HoverStore, *, clock: Clock = time.time, sleep: Sleep = time.sleep,
        rate_limit: int = RATE_LIMIT, account: str = "default",
    ) -> None:
        self.settings, self.store, self.account = settings, store, account
        self.tokens = TokenKeeper(settings, store, self._post_form, clock=clock, sleep=sleep, account=account)
        self.base_url = self.tokens.base_url
        self.limiter = RateLimiter(rate_limit, 60.0, clock=clock, sleep=sleep)
        self._client = Client(max_body=MAX_BODY, pool_size=4)

    # --- the API --------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
        form: Mapping[str, Any] | None = None, timeout: float = 30.0,
    ) -> tuple[int, Any, dict[str, str]]:
        """Call ``path`` on the Hover API as the account; see the module docstring for the
        outcomes. Each wait (rate limit, connection, response) is bounded by ``timeout``."""
        url = self.base_url + path + _query(params)
        data, content_type = _body(json, form)
        tokens = self.tokens.current()
        response = self._send(method, url, path, tokens.access_token, data, content_type, timeout)
        if response.status == 401:
            # Expired early or revoked; one refresh (or the pair another process just saved).
            tokens = self.tokens.refresh(tokens)
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

    def _post_form(self, url: str, data: bytes, timeout: float, what: str) -> tuple[int, Any, dict[str, str]]:
        """The token requests' way out (a :class:`engine.hover.tokens.PostForm`): not rate limited."""
        response = self._open(
            "POST", url, {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            data, timeout, what,
        )
        return response.status, _parse(response.body), response.headers

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


def _iso_or_none(value: Any) -> str | None:
    return iso(value) if isinstance(value, (int, float)) else value


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


__all__ = ["HoverClient", "Refused", "SharedClient", "VERIFY_PATH", "merge_webhooks", "record_verification"]
