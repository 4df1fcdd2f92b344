"""The HTTP app: ``POST /hooks/<source>``, the API, health and metrics endpoints.

One request's way: find the source (404), check the content type (415), read the body
while counting (413), verify on the raw bytes (401/403), parse (400), read type and
delivery id, hand the event to the group commit and answer once it is committed (202, or
200 for a duplicate delivery; 503 when the store cannot take it).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..errors import StoreError
from ..ops import api_models as models
from ..ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..ops.metrics import UNKNOWN_SOURCE, Metrics
from ..ops.openapi import Answer, Described, Operation
from ..ops.readiness import WriteProbe, readiness
from ..rules.config import Source
from ..rules.loader import Loaded
from ..secrets import MASK
from ..store import Incoming, Store
from . import bodies
from .ingest import Ingest
from .proxies import proxies_for
from .sources import Reader
from .verify import AcceptAll, verifier_for
from .verify_base import Rejected, Verifier
from .verify_base import Request as Signed

log = logging.getLogger("hookwise.server")

#: Headers whose values are credentials: stored and shown masked.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


class Refused(Exception):
    """A request answered with an error status."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def error_response(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


@dataclass(frozen=True)
class Endpoint:
    """A configured source, ready to take requests."""

    name: str
    source: Source
    verifier: Verifier
    reader: Reader

    @classmethod
    def build(cls, name: str, source: Source) -> Endpoint:
        return cls(name, source, verifier_for(source), Reader.for_source(source))

    @property
    def verifies(self) -> bool:
        return not isinstance(self.verifier, AcceptAll)

    @property
    def secret_headers(self) -> frozenset[str]:
        token_header = self.source.token_header
        return SECRET_HEADERS | {token_header.lower()} if token_header else SECRET_HEADERS

    def masked(self, headers: dict[str, str], query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query as stored: credentials replaced by ``****``."""
        secret = self.secret_headers
        if not secret.isdisjoint(headers):
            headers = {k: (MASK if k in secret else v) for k, v in headers.items()}
        if self.source.token and "token" in query:
            query = {**query, "token": MASK}
        return headers, query


@dataclass
class Health:
    """What /readyz reports besides the store."""

    draining: bool = False
    started: float = field(default_factory=time.time)



_JSON = [(b"content-type", b"application/json")]


class Disconnected(Exception):
    """The client went away before its request was read."""


class Receiver:
    """Turns requests into stored events.

    It is a plain ASGI handler, in front of Starlette's router: every event goes through
    it, and the framework's layers (routing, middleware, request and response objects)
    would cost more than all of its own work together.
    """

    def __init__(self, current: Callable[[], Loaded], ingest: Ingest, metrics: Metrics | None = None) -> None:
        self.current = current
        self.ingest = ingest
        self.metrics = metrics
        self._endpoints: tuple[int, dict[str, Endpoint]] = (0, {})

    def endpoint(self, name: str) -> Endpoint | None:
        loaded = self.current()
        key, endpoints = self._endpoints
        if key != id(loaded):  # the config was reloaded: build the endpoints again
            endpoints = {n: Endpoint.build(n, s) for n, s in loaded.config.settings.sources.items()}
            self._endpoints = (id(loaded), endpoints)
        return endpoints.get(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"][len("/hooks/") :]
        try:
            status, body, headers = await self.receive(scope, receive, name)
        except Refused as exc:
            status, headers = exc.status, _JSON
            body = json.dumps({"error": exc.error, "message": self._public_message(scope, name, exc)}).encode()
        except Disconnected:
            return
        except Exception:  # a bug: the sender gets a 500 and the log the traceback
            log.exception("receiving an event for source %s failed", name)
            status, headers = 500, _JSON
            body = b'{"error": "internal", "message": "internal error"}'
        if self.metrics is not None:  # a configured source's name, else "unknown": labels stay bounded
            self.metrics.received(name if name in self._endpoints[1] else UNKNOWN_SOURCE, status)
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
        await send({"type": "http.response.body", "body": body})

    def _public_message(self, scope: Scope, name: str, exc: Refused) -> str:
        """What the sender is told. A failed verification is logged with its reason but
        answered without it: the answer must not say which secret or part failed."""
        if exc.status not in (401, 403):
            return exc.message
        client = scope.get("client")
        log.warning("refused a request to source %s from %s: %s", name, client[0] if client else None, exc.message)
        return "verification failed" if exc.status == 401 else "sender not allowed"

    async def receive(self, scope: Scope, receive: Receive, name: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        endpoint = self.endpoint(name)
        if endpoint is None:
            raise Refused(404, "not_found", f"no source named {name!r}")
        # Header names arrive lower-cased in the ASGI scope.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        kind = _body_kind(headers.get("content-type", ""))
        limits = self.current().config.settings.server
        raw = await _read_body(receive, headers, limits.max_body)
        query_string = scope["query_string"].decode("latin-1")
        pairs = parse_qsl(query_string, keep_blank_values=True) if query_string else []
        query = dict(pairs)
        if endpoint.verifies:
            client = scope.get("client")
            sender = proxies_for(tuple(limits.trusted_proxies)).client(client[0] if client else None, scope["headers"])
            repeats = len(headers) < len(scope["headers"])
            signed_headers = _Repeated.of(headers, scope["headers"]) if repeats else headers
            signed_query = query if len(query) == len(pairs) else _Repeated.of(query, pairs)
            _verify(endpoint, scope, raw, signed_headers, signed_query, query_string, sender)
        try:
            body, text = bodies.parse(raw, kind, limits.max_depth)
        except bodies.Malformed as exc:
            raise Refused(400, "bad_request", str(exc)) from None
        stored_headers, stored_query = endpoint.masked(headers, query)
        incoming = Incoming(
            source=name, type=endpoint.reader.event_type(body, headers), body=text,
            headers=stored_headers, query=stored_query, received_at=time.time(),
            delivery_id=endpoint.reader.delivery_id(raw, body, headers), dedupe_window=endpoint.source.dedupe_window,
        )
        try:
            stored = await self.ingest.put(incoming)
        except StoreError as exc:
            raise Refused(503, "unavailable", "the event could not be stored now; retry later") from exc
        if stored.duplicate:
            return 200, b'{"event_id":"%s","duplicate":true}' % stored.event_id.encode(), _JSON
        return _accepted(endpoint.source, stored.event_id)


class _Repeated(dict[str, str]):
    """Headers or query parameters of which some names came more than once (the last value
    kept): verification that reads one of those refuses the request, whatever the scheme,
    as it cannot know which one the sender signed."""

    repeated: frozenset[str] = frozenset()

    @classmethod
    def of(cls, values: dict[str, str], pairs: Sequence[tuple[Any, Any]]) -> _Repeated:
        counts = Counter(name.decode("latin-1") if isinstance(name, bytes) else name for name, _ in pairs)
        found = cls(values)
        found.repeated = frozenset(name for name, count in counts.items() if count > 1)
        return found

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.repeated:
            raise Rejected(f"{key} was sent more than once")
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        if key in self.repeated:
            raise Rejected(f"{key} was sent more than once")
        return super().__getitem__(key)


def _verify(
    endpoint: Endpoint, scope: Scope, raw: bytes, headers: dict[str, str], query: dict[str, str], query_string: str,
    client: str | None,
) -> None:
    raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    path = raw_path + (f"?{query_string}" if query_string else "")
    signed = Signed(body=raw, headers=headers, query=query, method=scope["method"], path=path, client=client)
    try:
        endpoint.verifier.verify(signed)
    except Rejected as exc:
        raise Refused(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason) from None


def _body_kind(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/json") or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    shown = media or "none"
    raise Refused(
        415, "unsupported_media_type",
        f"content type {shown!r} is not accepted: send application/json or application/x-www-form-urlencoded"
    )


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` (from Content-Length,
    or while streaming), without reading it whole."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "payload_too_large", f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refused(413, "payload_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _accepted(source: Source, event_id: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    if source.response is None:
        return 202, b'{"event_id":"%s"}' % event_id.encode(), _JSON
    custom = source.response
    body = custom.body if custom.body is not None else json.dumps({"event_id": event_id})
    media = b"application/json" if _is_json(body) else b"text/plain; charset=utf-8"
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in custom.headers.items()
             if k.lower() != "content-length"]
    if not any(k == b"content-type" for k, _ in extra):
        extra.append((b"content-type", media))
    return custom.status, body.encode(), extra


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class App:
    """The ASGI app: ``POST /hooks/<source>`` to the receiver, everything else (the API,
    health, errors such as 405) to Starlette."""

    def __init__(self, receiver: Receiver | None, rest: Starlette) -> None:
        self.receiver = receiver
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.receiver is not None and scope["type"] == "http" and scope["method"] == "POST"
            and scope["path"].startswith("/hooks/") and "/" not in scope["path"][7:] and len(scope["path"]) > 7
        ):
            await self.receiver(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(
    current: Callable[[], Loaded], ingest: Ingest | None, health: Health, store: Store, metrics: Metrics | None = None,
    hosts: Callable[[], list[dict[str, Any]]] | None = None,
) -> App:
    """The app: the receiver (when ``ingest`` is given), the API, the web UI, the health
    endpoints and ``/metrics`` (when ``metrics`` is given; open like /livez: it holds no secret);
    ``hosts`` feeds ``/api/hosts`` (the worker's delivery control)."""
    from ..hover.callback import callback_routes
    from ..ops.api import api_routes
    from ..ui import ui_routes

    probe = WriteProbe(store.probe_write, (lambda: ingest.failed_at) if ingest is not None else lambda: None)
    ready = readiness(current, lambda: health.draining, probe)
    routes = [
        *api_routes(current, store, hosts),
        *callback_routes(current, store),
        *ui_routes(current, store),
        Described("/livez", lambda request: JSONResponse({"status": "ok"}), _LIVEZ),
        Described("/readyz", ready, _READYZ),
        Described("/healthz", ready, _HEALTHZ),
    ]
    if metrics is not None:
        routes.append(Described("/metrics", _exposition(metrics), _METRICS))
    if ingest is not None:  # POSTs never reach it (App hands them to the receiver): it answers other methods 405
        routes.append(Described("/hooks/{source}", _not_here, _HOOKS))
    rest = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    # No redirect from "/hooks/x/" to "/hooks/x": its Location would be built from the Host
    # header and carry the query, ?token= included.
    rest.router.redirect_slashes = False
    return App(Receiver(current, ingest, metrics) if ingest is not None else None, rest)


_LIVEZ = Operation("GET", "The process is alive", {200: Answer("alive", models.Alive)}, secured=False)
_READY = {200: Answer("ready", models.Readiness), 503: Answer("not ready: the checks say why", models.Readiness)}
_READYZ = Operation("GET", "Ready for events: the store can commit, rules loaded, not draining", _READY, secured=False)
_HEALTHZ = Operation("GET", "The readiness checks (as /readyz)", _READY, secured=False)
_METRICS = Operation(
    "GET", "Prometheus metrics", {200: Answer("the text exposition format", media_type="text/plain")}, secured=False,
)
_HOOKS = Operation(
    "POST", "Receive a webhook: answered once the event is committed",
    {
        202: Answer("the event is committed (or the source's own response, when it has one)", models.Accepted),
        200: Answer("a duplicate delivery: nothing new is stored", models.Duplicate),
        400: Answer("the body is not one hookwise accepts", models.Error),
        401: Answer("verification failed", models.Error),
        403: Answer("the sender is not allowed", models.Error),
        404: Answer("no such source", models.Error),
        413: Answer("the body is larger than server.max_body", models.Error),
        415: Answer("the content type is neither JSON nor a form", models.Error),
        503: Answer("the store cannot take the event now: retry later", models.Error),
    },
    path={"source": "The source's name (a key of sources: in the config)."}, query=models.WebhookQuery,
    body=models.WebhookBody, body_media=("application/json", "application/x-www-form-urlencoded"), body_required=True,
    secured=False,
)


def _exposition(metrics: Metrics) -> Callable[[Request], Response]:
    return lambda request: Response(metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def _not_here(request: Request) -> Response:
    return error_response(404, "not_found", f"no such endpoint: {request.url.path}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(exc.status_code, names.get(exc.status_code, "error"), message)
