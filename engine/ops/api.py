"""The management API under ``/api`` (SPEC 10): closed without its token.

With ``api.token`` set, every request needs ``Authorization: Bearer <token>``; without one,
only loopback clients are answered. Errors are JSON with ``error`` and ``message``.

Request bodies and query parameters are read through the models of
:mod:`engine.ops.api_models` (a refused one is answered 400 naming the field); each route
carries its description (:class:`engine.ops.openapi.Described`), from which ``/openapi.json``
is made.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConfigError, ParamsError, UsageError
from ..receive.bodies import Malformed, finite, parse_object
from ..receive.proxies import from_loopback
from ..rules.loader import Loaded
from ..rules.validation import pydantic_problems
from ..store import BacktestStore, OperatorStore, QueueItem
from . import api_models as m
from . import api_trials as trials
from . import operations as ops
from .openapi import Answer, Described, Operation, document

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)


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
    """``content`` as JSON, even when a value holds ``NaN`` or ``Infinity`` (an older
    version's event, a target's answer, a template's arithmetic): then as text, which JSON
    can carry."""
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


def validated(model: type[M], data: Any) -> M:
    """``data`` as ``model``; raises a 400 :class:`ApiError` naming each field that is wrong
    (``rules[0]: Input should be a valid string``; ``rule: unknown key (did you mean 'rules'?)``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", "; ".join(map(str, pydantic_problems(exc, model)))) from None


async def _body(request: Request, model: type[M], current: Callable[[], Loaded]) -> M:
    """The request's body as ``model``: a JSON object (read as an event's JSON body is:
    strict, no deeper than ``server.max_depth``), or nothing, which is ``{}``."""
    raw = await request.body()
    data: dict[str, Any] = {}
    if raw.strip():
        try:
            data = parse_object(raw, current().config.settings.server.max_depth)
        except Malformed as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
    return validated(model, data)


def _query(request: Request, model: type[M]) -> M:
    """The query parameters as ``model`` (of a parameter given twice, the last)."""
    return validated(model, dict(request.query_params))


class QueueApi:
    """``/api/queues``: the work queues of the ``requeue`` action, for field tools."""

    def __init__(self, current: Callable[[], Loaded], store: OperatorStore) -> None:
        self.current = current
        self.store = store

    async def list_queues(self, request: Request) -> Response:
        return JSONResponse({"queues": await run_in_threadpool(self.store.queue_counts)})

    async def list_items(self, request: Request) -> Response:
        q = _query(request, m.QueueItemsQuery)
        items = await run_in_threadpool(self.store.list_queue_items, request.path_params["name"], q.status, q.limit)
        return JSONResponse({"items": [item_json(i) for i in items]})

    async def claim(self, request: Request) -> Response:
        body = await _body(request, m.ClaimRequest, self.current)
        item = await run_in_threadpool(self.store.claim_queue_item, request.path_params["name"], body.lease)
        if item is None:
            return Response(status_code=204)
        return JSONResponse({"item": item_json(item)})

    async def done(self, request: Request) -> Response:
        item_id = await self._claimed(request)
        item = await run_in_threadpool(self.store.finish_queue_item, item_id)
        return self._changed(item)

    async def fail(self, request: Request) -> Response:
        body = await _body(request, m.FailRequest, self.current)
        item_id = await self._claimed(request)
        item = await run_in_threadpool(self.store.fail_queue_item, item_id, body.retry_in, body.error)
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

    def __init__(self, current: Callable[[], Loaded], store: OperatorStore) -> None:
        self.current = current
        self.store = store

    async def events(self, request: Request) -> Response:
        q = _query(request, m.EventsQuery)
        page = await run_in_threadpool(
            ops.list_events, self.current(), self.store, limit=q.limit, cursor=q.cursor, source=q.source, type=q.type,
            status=q.status, since=q.since, until=q.until,
        )
        return JSONResponse(page)

    async def event(self, request: Request) -> Response:
        event_id = request.path_params["id"]
        detail = await run_in_threadpool(ops.event_detail, self.current(), self.store, event_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no event {event_id!r}")
        return _detail(detail)

    async def replay(self, request: Request) -> Response:
        body = await _body(request, m.ReplayRequest, self.current)
        event_id = request.path_params["id"]
        new = await run_in_threadpool(ops.replay, self.current(), self.store, event_id, body.rules)
        if new is None:
            raise ApiError(404, "not_found", f"no event {event_id!r}")
        return JSONResponse(m.ReplayAccepted(event_id=new, replay_of=event_id).model_dump(), status_code=202)

    async def runs(self, request: Request) -> Response:
        q = _query(request, m.RunsQuery)
        found = await run_in_threadpool(
            ops.list_runs, self.current(), self.store, status=q.status, rule=q.rule, limit=q.limit, shadow=q.shadow,
        )
        return JSONResponse(found)

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["id"]
        detail = await run_in_threadpool(ops.run_detail, self.current(), self.store, run_id)
        if detail is None:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        return _detail(detail)

    async def retry(self, request: Request) -> Response:
        body = await _body(request, m.RetryRequest, self.current)
        try:
            run_id = request.path_params["id"]
            detail = await run_in_threadpool(ops.retry, self.current(), self.store, run_id, body.sets())
        except LookupError as exc:
            raise ApiError(404, "not_found", str(exc.args[0])) from None
        except ParamsError as exc:  # an edit the step's action would refuse: it would only die again
            raise ApiError(400, "bad_request", exc.message) from None
        except UsageError as exc:
            raise ApiError(409, "conflict", exc.message) from None
        return _detail(detail)

    async def skip(self, request: Request) -> Response:
        try:
            detail = await run_in_threadpool(ops.skip, self.current(), self.store, request.path_params["id"])
        except LookupError as exc:
            raise ApiError(404, "not_found", str(exc.args[0])) from None
        except UsageError as exc:
            raise ApiError(409, "conflict", exc.message) from None
        return _detail(detail)

    async def rules(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(ops.rules_info, self.current(), self.store))

    async def sources(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(ops.sources_info, self.current(), self.store))

    async def dry_run(self, request: Request) -> Response:
        from ..rules.dryrun import dry_run, event_source

        body = await _body(request, trials.DryRunRequest, self.current)
        loaded = self.current()
        event_source(loaded, body.source)  # a source that does not exist: 400 naming the ones that do
        headers = {k.lower(): v for k, v in body.headers.items()}
        return _detail(await run_in_threadpool(dry_run, loaded, body.event, body.source, headers))


    async def backtest(self, request: Request) -> Response:
        body = await _body(request, trials.BacktestRequest, self.current)
        return _detail(await run_in_threadpool(_backtest, self.current(), self.store, body))


#: Events a backtest through the API reads at most (it holds one of the server's threads).
BACKTEST_LIMIT = 500_000


def _backtest(loaded: Loaded, store: BacktestStore, body: trials.BacktestRequest) -> dict[str, Any]:
    import time

    from ..rules.backtest import Backtest, rules_from_text, window_start

    rules, masker = loaded.rules, loaded.masker
    if body.rules is not None:
        try:
            rules, masker = rules_from_text(loaded, body.rules)
        except ConfigError as exc:
            problems = (p.masked(loaded.masker.mask) for p in exc.problems)
            raise ApiError(400, "bad_request", "; ".join(map(str, problems))) from None
    now = time.time()
    since = window_start(body.since, now)
    until = ops.parse_time(body.until, "until")
    report = Backtest(loaded, rules, store, since=since, until=until, source=body.source, type=body.type,
                      max_events=BACKTEST_LIMIT, masker=masker).run().json()
    if body.rule is not None:
        report["rules"] = [r for r in report["rules"] if r["rule"] == body.rule]
    return masker.mask_value(report)


def _hosts_endpoint(hosts: Callable[[], list[dict[str, Any]]] | None) -> Handler:
    async def endpoint(request: Request) -> Response:
        return JSONResponse({"hosts": hosts() if hosts is not None else []})

    return endpoint


def _openapi_endpoint() -> Handler:
    """``/openapi.json``: the description of the app's routes, made at the first request."""
    made: list[dict[str, Any]] = []

    async def endpoint(request: Request) -> Response:
        if not made:
            made.append(document(request.app.routes))
        return JSONResponse(made[0])

    return endpoint


_EVENT = {"id": "The event's id."}
_RUN = {"id": "The run's id."}
_QUEUE = {"name": "The queue's name."}
_ITEM = {**_QUEUE, "item": "The item's id."}


def _found(model: type[BaseModel], text: str, missing: str | None = None) -> Mapping[int, Answer]:
    return {200: Answer(text, model), **({404: Answer(missing, m.Error)} if missing else {})}


def api_routes(
    current: Callable[[], Loaded], store: OperatorStore, hosts: Callable[[], list[dict[str, Any]]] | None = None,
) -> list[Route]:
    """The API's routes, each with its description; ``hosts`` is the delivery control's
    state of each destination host (``engine.run.delivery.Delivery.hosts``: this process's
    worker; an empty list without one)."""
    queues = QueueApi(current, store)
    inspect = InspectApi(current, store)

    def route(path: str, handler: Handler, operation: Operation) -> Route:
        return Described(path, guarded(current, handler), operation)

    item_changed = {
        200: Answer("the item", m.QueueItemAnswer), 404: Answer("no such item in the queue", m.Error),
        409: Answer("the item is not claimed (its lease may have run out)", m.Error),
    }
    return [
        Described("/openapi.json", _openapi_endpoint(), Operation(
            "GET", "This description", {200: Answer("the OpenAPI document", m.OpenApiDocument)}, secured=False,
        )),
        route("/api/events", inspect.events, Operation(
            "GET", "Events, newest first, a page at a time", _found(m.EventsPage, "a page of events"),
            query=m.EventsQuery,
        )),
        route("/api/events/{id}", inspect.event, Operation(
            "GET", "An event with its explain record and runs", _found(m.EventDetail, "the event", "no such event"),
            path=_EVENT,
        )),
        route("/api/events/{id}/replay", inspect.replay, Operation(
            "POST", "Replay an event (through some rules only, when named)",
            {202: Answer("the copy is stored", m.ReplayAccepted), 404: Answer("no such event", m.Error)},
            path=_EVENT, body=m.ReplayRequest,
        )),
        route("/api/runs", inspect.runs, Operation(
            "GET", "Runs, the latest changed first", _found(m.Runs, "the runs"), query=m.RunsQuery,
        )),
        route("/api/runs/{id}", inspect.run, Operation(
            "GET", "A run with its steps", _found(m.RunDetail, "the run", "no such run"), path=_RUN,
        )),
        route("/api/runs/{id}/retry", inspect.retry, Operation(
            "POST", "Resume a dead run from its dead step, its params perhaps edited",
            {**_found(m.RunDetail, "the run, active again", "no such run"),
             409: Answer("the run is not dead", m.Error)},
            path=_RUN, body=m.RetryRequest,
        )),
        route("/api/runs/{id}/skip", inspect.skip, Operation(
            "POST", "Put a dead or waiting run aside, so that the next run of its order_by key starts",
            {**_found(m.RunDetail, "the run, skipped", "no such run"),
             409: Answer("the run is neither dead nor waiting", m.Error)},
            path=_RUN,
        )),
        route("/api/rules", inspect.rules, Operation(
            "GET", "The rules with their version, file, line and run counts", _found(m.Rules, "the rules"),
        )),
        route("/api/sources", inspect.sources, Operation(
            "GET", "The sources, with Hover's verification state", _found(m.Sources, "the sources"),
        )),
        route("/api/dry-run", inspect.dry_run, Operation(
            "POST", "Match and render an event with no side effects",
            _found(trials.DryRunResult, "what the event would do"),
            body=trials.DryRunRequest,
        )),
        route("/api/backtest", inspect.backtest, Operation(
            "POST", "Run the rules (or a changed rule file) over stored events with no side effects",
            {200: Answer("per rule: what it would match against what it did", trials.BacktestResult),
             400: Answer("a bad window, or problems in the rule file given", m.Error)},
            body=trials.BacktestRequest,
        )),
        route("/api/hosts", _hosts_endpoint(hosts), Operation(
            "GET", "Destination hosts of the http action: limits, calls in flight, circuit breaker",
            _found(m.Hosts, "the hosts this process has called"),
        )),
        route("/api/queues", queues.list_queues, Operation(
            "GET", "The queues and their items counted by status", _found(m.Queues, "the queues"),
        )),
        route("/api/queues/{name}", queues.list_items, Operation(
            "GET", "Items of a queue", _found(m.QueueItems, "the items"), path=_QUEUE, query=m.QueueItemsQuery,
        )),
        route("/api/queues/{name}/claim", queues.claim, Operation(
            "POST", "Claim the next item due, with a lease",
            {200: Answer("the claimed item", m.QueueItemAnswer), 204: Answer("no item is due")},
            path=_QUEUE, body=m.ClaimRequest,
        )),
        route("/api/queues/{name}/items/{item}/done", queues.done, Operation(
            "POST", "Mark a claimed item done", item_changed, path=_ITEM,
        )),
        route("/api/queues/{name}/items/{item}/fail", queues.fail, Operation(
            "POST", "Give a claimed item back, to be tried again later", item_changed, path=_ITEM, body=m.FailRequest,
        )),
    ]
