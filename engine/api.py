"""The management API under ``/api`` (SPEC 10): closed without its token.

With ``api.token`` set, every request needs ``Authorization: Bearer <token>``; without one,
only loopback clients are answered. Errors are JSON with ``error`` and ``message``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import operations as ops
from .bodies import finite
from .errors import ParamsError, UsageError
from .loader import Loaded
from .proxies import from_loopback
from .store import QueueItem, Store
from .units import parse_duration

Handler = Callable[[Request], Awaitable[Response]]

#: Lease of a claimed queue item unless the consumer asks for another.
DEFAULT_QUEUE_LEASE = 300.0


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _bearer(authorization: str) -> bytes:
    """The credentials of ``Authorization: Bearer ...`` (the scheme in any case), else b""."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip().encode() if scheme.lower() == "bearer" else b""


def guarded(current: Callable[[], Loaded], handler: Handler) -> Handler:
    """``handler`` behind the API's access check and its JSON errors."""

    async def endpoint(request: Request) -> Response:
        settings = current().config.settings
        token = settings.api.token
        if token is None:
            peer = request.client.host if request.client else None
            if not from_loopback(peer, request.scope["headers"], settings.server.trusted_proxies):
                return _error(403, "forbidden", "the API answers loopback clients only until api.token is set")
        else:
            if not hmac.compare_digest(_bearer(request.headers.get("authorization", "")), token.encode()):
                return JSONResponse({"error": "unauthorized", "message": "a valid bearer token is required"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc.status, exc.error, exc.message)
        except UsageError as exc:
            return _error(400, "bad_request", exc.message)

    return endpoint


def _detail(content: dict[str, Any]) -> JSONResponse:
    """``content`` as JSON, even when a stored value holds ``NaN`` or ``Infinity`` (an
    older version's event, a target's answer): then as text, which JSON can carry."""
    try:
        return JSONResponse(content)
    except ValueError:
        return JSONResponse(finite(content))


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


#: The times of a queue item, unix seconds in the store, ISO-8601 like every time the API shows.
_ITEM_TIMES = ("available_at", "created_at", "updated_at")


def item_json(item: QueueItem) -> dict[str, Any]:
    """A queue item as the API and ``hookwise queue`` show it."""
    out = {k: v for k, v in asdict(item).items() if k != "exhausted_event" or v is not None}
    return {**out, **{k: ops.iso(out[k]) for k in _ITEM_TIMES}}


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _duration(body: dict[str, Any], key: str, default: float) -> float:
    if key not in body:
        return default
    try:
        return parse_duration(body[key])
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"{key}: {exc}") from None


class QueueApi:
    """``/api/queues``: the work queues of the ``requeue`` action, for field tools."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_queues(self, request: Request) -> Response:
        return JSONResponse({"queues": await run_in_threadpool(self.store.queue_counts)})

    async def list_items(self, request: Request) -> Response:
        status = request.query_params.get("status")
        if status not in (None, "waiting", "claimed", "done", "dead"):
            raise ApiError(400, "bad_request", "status is one of waiting, claimed, done, dead")
        limit = _limit(request.query_params.get("limit"))
        items = await run_in_threadpool(self.store.list_queue_items, request.path_params["name"], status, limit)
        return JSONResponse({"items": [item_json(i) for i in items]})

    async def claim(self, request: Request) -> Response:
        lease = _duration(await _json_body(request), "lease", DEFAULT_QUEUE_LEASE)
        item = await run_in_threadpool(self.store.claim_queue_item, request.path_params["name"], lease)
        if item is None:
            return Response(status_code=204)
        return JSONResponse({"item": item_json(item)})

    async def done(self, request: Request) -> Response:
        item_id = await self._claimed(request)
        item = await run_in_threadpool(self.store.finish_queue_item, item_id)
        return self._changed(item)

    async def fail(self, request: Request) -> Response:
        body = await _json_body(request)
        retry_in = _duration(body, "retry_in", 0.0)
        error = body.get("error")
        if error is not None and not isinstance(error, str):
            raise ApiError(400, "bad_request", "error must be a string")
        item_id = await self._claimed(request)
        item = await run_in_threadpool(self.store.fail_queue_item, item_id, retry_in, error)
        return self._changed(item)

    async def _claimed(self, request: Request) -> str:
        item_id: str = request.path_params["item"]
        item = await run_in_threadpool(self.store.get_queue_item, item_id)
        if item is None or item.queue != request.path_params["name"]:
            raise ApiError(404, "not_found", f"no item {item_id!r} in queue {request.path_params['name']!r}")
        return item_id

    def _changed(self, item: QueueItem | None) -> Response:
        if item is None:
            raise ApiError(409, "conflict", "the item is not claimed (its lease may have run out)")
        return JSONResponse({"item": item_json(item)})


class InspectApi:
    """Events, runs, rules, sources and dry-runs (SPEC 10)."""

    def __init__(self, current: Callable[[], Loaded], store: Store) -> None:
        self.current = current
        self.store = store

    async def events(self, request: Request) -> Response:
        q = request.query_params
        page = await run_in_threadpool(
            ops.list_events, self.current(), self.store, limit=_limit(q.get("limit"), 50), cursor=q.get("cursor"),
            source=q.get("source"), type=q.get("type"), status=q.get("status"), since=q.get("since"),
            until=q.get("until"),
        )
        return JSONResponse(page)

    async def event(self, request: Request) -> Response:
        event_id = request.path_params["id"]
        detail = await run_in_threadpool(ops.event_detail, self.current(), self.store, event_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no event {event_id!r}")
        return _detail(detail)

    async def replay(self, request: Request) -> Response:
        body = await _json_body(request)
        rules = body.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise ApiError(400, "bad_request", "rules must be a list of rule names")
        event_id = request.path_params["id"]
        new = await run_in_threadpool(ops.replay, self.current(), self.store, event_id, rules)
        if new is None:
            raise ApiError(404, "not_found", f"no event {event_id!r}")
        return JSONResponse({"event_id": new, "replay_of": event_id}, status_code=202)

    async def runs(self, request: Request) -> Response:
        q = request.query_params
        found = await run_in_threadpool(ops.list_runs, self.current(), self.store, status=q.get("status"),
                                        rule=q.get("rule"), limit=_limit(q.get("limit"), 50))
        return JSONResponse(found)

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["id"]
        detail = await run_in_threadpool(ops.run_detail, self.current(), self.store, run_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        return _detail(detail)

    async def retry(self, request: Request) -> Response:
        body = await _json_body(request)
        sets = body.get("set", {})
        if not isinstance(sets, dict) or not all(isinstance(k, str) for k in sets):
            raise ApiError(400, "bad_request", 'set must be an object: {"STEP.PARAM": value}')
        parsed = []
        for key, value in sets.items():
            step, dot, param = key.partition(".")
            if not dot or not step or not param:
                raise ApiError(400, "bad_request", f"set: {key!r} is not STEP.PARAM")
            parsed.append((step, param, value))
        try:
            detail = await run_in_threadpool(ops.retry, self.current(), self.store, request.path_params["id"], parsed)
        except LookupError as exc:
            raise ApiError(404, "not_found", str(exc.args[0])) from None
        except ParamsError as exc:  # an edit the step's action would refuse: it would only die again
            raise ApiError(400, "bad_request", exc.message) from None
        except UsageError as exc:
            raise ApiError(409, "conflict", exc.message) from None
        return JSONResponse(detail)

    async def rules(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(ops.rules_info, self.current(), self.store))

    async def sources(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(ops.sources_info, self.current(), self.store))

    async def dry_run(self, request: Request) -> Response:
        from .dryrun import dry_run, event_source

        body = await _json_body(request)
        loaded = self.current()
        source = body.get("source")
        if not isinstance(source, str) or not source:
            raise ApiError(400, "bad_request", "source: the name of the source the event arrives on")
        event_source(loaded, source)  # a source that does not exist: 400 naming the ones that do
        event = body.get("event")
        if not isinstance(event, (dict, list)):
            raise ApiError(400, "bad_request", "event: the event body, a JSON object or array")
        headers = body.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ApiError(400, "bad_request", "headers: an object of strings")
        result = await run_in_threadpool(dry_run, loaded, event, source, {k.lower(): v for k, v in headers.items()})
        return JSONResponse(result)


def _hosts_endpoint(hosts: Callable[[], list[dict[str, Any]]] | None) -> Handler:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"hosts": hosts() if hosts is not None else []})

    return endpoint


def _limit(text: str | None, default: int = 100) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ApiError(400, "bad_request", "limit is a number from 1 to 1000")
    return int(text)


def api_routes(
    current: Callable[[], Loaded], store: Store, hosts: Callable[[], list[dict[str, Any]]] | None = None,
) -> list[Route]:
    """The API's routes; ``hosts`` is the delivery control's state of each destination host
    (``engine.delivery.Delivery.hosts``: this process's worker; an empty list without one)."""
    queues = QueueApi(store)

    def route(path: str, handler: Handler, method: str) -> Route:
        return Route(path, guarded(current, handler), methods=[method])

    inspect = InspectApi(current, store)

    async def openapi(request: Request) -> Response:
        from .openapi import spec

        return JSONResponse(spec())

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        route("/api/events", inspect.events, "GET"),
        route("/api/events/{id}", inspect.event, "GET"),
        route("/api/events/{id}/replay", inspect.replay, "POST"),
        route("/api/runs", inspect.runs, "GET"),
        route("/api/runs/{id}", inspect.run, "GET"),
        route("/api/runs/{id}/retry", inspect.retry, "POST"),
        route("/api/rules", inspect.rules, "GET"),
        route("/api/sources", inspect.sources, "GET"),
        route("/api/dry-run", inspect.dry_run, "POST"),
        route("/api/hosts", _hosts_endpoint(hosts), "GET"),
        route("/api/queues", queues.list_queues, "GET"),
        route("/api/queues/{name}", queues.list_items, "GET"),
        route("/api/queues/{name}/claim", queues.claim, "POST"),
        route("/api/queues/{name}/items/{item}/done", queues.done, "POST"),
        route("/api/queues/{name}/items/{item}/fail", queues.fail, "POST"),
    ]
