"""The Starlette app: ``POST /hooks/<source>`` and the health endpoints.

One request's way: find the source (404), check the content type (415), read the body
while counting (413), verify on the raw bytes (401/403), parse (400), read type and
delivery id, hand the event to the group commit and answer once it is committed (202, or
200 for a duplicate delivery; 503 when the store cannot take it).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Source
from .errors import StoreError
from .ingest import Ingest
from .loader import Loaded
from .secrets import MASK
from .sources import Reader
from .store import Incoming, Store
from .verify import Rejected, Verifier, verifier_for
from .verify import Request as Signed

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

    def masked(self, headers: dict[str, str], query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query as stored: credentials replaced by ``****``."""
        secret_headers = SECRET_HEADERS | ({self.source.token_header.lower()} if self.source.token_header else set())
        headers = {k: (MASK if k in secret_headers else v) for k, v in headers.items()}
        query = {k: (MASK if k == "token" and self.source.token else v) for k, v in query.items()}
        return headers, query


@dataclass
class Health:
    """What /readyz reports besides the store."""

    draining: bool = False
    started: float = field(default_factory=time.time)


class Receiver:
    """Turns requests into stored events."""

    def __init__(self, current: Callable[[], Loaded], ingest: Ingest) -> None:
        self.current = current
        self.ingest = ingest
        self._endpoints: tuple[int, dict[str, Endpoint]] = (0, {})

    def endpoint(self, name: str) -> Endpoint | None:
        loaded = self.current()
        key, endpoints = self._endpoints
        if key != id(loaded):  # the config was reloaded: build the endpoints again
            endpoints = {n: Endpoint.build(n, s) for n, s in loaded.config.settings.sources.items()}
            self._endpoints = (id(loaded), endpoints)
        return endpoints.get(name)

    async def handle(self, request: Request) -> Response:
        name = request.path_params["source"]
        try:
            return await self.receive(request, name)
        except Refused as exc:
            if exc.status in (401, 403):
                log.warning("refused a request to source %s from %s: %s", name, _client(request), exc.message)
                return error_response(exc.status, exc.error, "verification failed" if exc.status == 401 else "sender not allowed")
            return error_response(exc.status, exc.error, exc.message)

    async def receive(self, request: Request, name: str) -> Response:
        endpoint = self.endpoint(name)
        if endpoint is None:
            raise Refused(404, "not_found", f"no source named {name!r}")
        kind = _body_kind(request.headers.get("content-type", ""))
        raw = await _read_body(request, self.current().config.settings.server.max_body)
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query_params)
        _verify(endpoint, request, raw, headers, query)
        body = _parse(raw, kind)
        stored_headers, stored_query = endpoint.masked(headers, query)
        incoming = Incoming(
            source=name, type=endpoint.reader.event_type(body, headers),
            body=raw.decode("utf-8") if kind == "json" else json.dumps(body, ensure_ascii=False),
            headers=stored_headers, query=stored_query, received_at=time.time(),
            delivery_id=endpoint.reader.delivery_id(raw, body, headers), dedupe_window=endpoint.source.dedupe_window,
        )
        try:
            stored = await self.ingest.put(incoming)
        except StoreError as exc:
            raise Refused(503, "unavailable", "the event could not be stored now; retry later") from exc
        if stored.duplicate:
            return JSONResponse({"event_id": stored.event_id, "duplicate": True}, status_code=200)
        return _accepted(endpoint.source, stored.event_id)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _verify(endpoint: Endpoint, request: Request, raw: bytes, headers: dict[str, str], query: dict[str, str]) -> None:
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    signed = Signed(body=raw, headers=headers, query=query, method=request.method, path=path, client=_client(request))
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
    raise Refused(415, "unsupported_media_type", f"content type {shown!r} is not accepted: send application/json or application/x-www-form-urlencoded")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed ``limit`` (from Content-Length,
    or while streaming), without reading it whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "payload_too_large", f"the body is larger than {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "payload_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes, kind: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "bad_request", "the body is not UTF-8") from None
    if kind == "json":
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise Refused(400, "bad_request", f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, (dict, list)):
            raise Refused(400, "bad_request", "the JSON body must be an object or an array")
        return body
    fields = dict(parse_qsl(text, keep_blank_values=True))
    if set(fields) == {"payload"}:  # GitHub's form deliveries carry the JSON in payload=
        try:
            return json.loads(fields["payload"])
        except ValueError as exc:
            raise Refused(400, "bad_request", f"the payload field is not valid JSON: {exc}") from None
    return fields


def _accepted(source: Source, event_id: str) -> Response:
    if source.response is None:
        return JSONResponse({"event_id": event_id}, status_code=202)
    custom = source.response
    body = custom.body if custom.body is not None else json.dumps({"event_id": event_id})
    media = "application/json" if _is_json(body) else "text/plain"
    return Response(body, status_code=custom.status, headers=custom.headers, media_type=media)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def create_app(current: Callable[[], Loaded], ingest: Ingest | None, health: Health, store: Store) -> Starlette:
    """The app: the receiver (when ``ingest`` is given), the API and the health endpoints."""
    from .api import api_routes

    store_ping = store.ping
    routes = [*api_routes(current, store),
        Route("/livez", lambda request: JSONResponse({"status": "ok"})),
        Route("/readyz", _readiness(current, health, store_ping)),
        Route("/healthz", _readiness(current, health, store_ping)),
    ]
    if ingest is not None:
        routes.append(Route("/hooks/{source}", Receiver(current, ingest).handle, methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})


def _readiness(current: Callable[[], Loaded], health: Health, store_ping: Callable[[], None]) -> Callable[[Request], Any]:
    async def ready(request: Request) -> Response:
        checks: dict[str, str] = {"rules": f"{len(current().rules)} loaded", "draining": "yes" if health.draining else "no"}
        ok = not health.draining
        try:
            store_ping()
            checks["store"] = "reachable"
        except StoreError as exc:
            checks["store"] = f"unreachable: {exc}"
            ok = False
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    return ready


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    names = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no such endpoint: {request.url.path}", 405: f"{request.method} is not allowed here"}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, names.get(exc.status_code, "error"), message)
