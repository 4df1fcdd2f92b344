"""The OpenAPI description of hookwise's HTTP interface, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

VERSION = "0.1.0"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid request", 401: "no or wrong bearer token", 403: "not allowed", 404: "not found",
        409: "conflict with the current state"
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def _op(
    summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None, body: Any = None,
    secured: bool = True
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **(_errors(401, 403) if secured else {})}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    if not secured:
        op["security"] = []
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


OBJECT = {"type": "object"}
LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str, items: Any) -> dict[str, Any]:
    """An object whose one required property ``name`` is an array of ``items``."""
    return {"type": "object", "required": [name], "properties": {name: {"type": "array", "items": items}}}


def spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    event_list = {"type": "object", "required": ["events", "next_cursor"], "properties": {
        "events": {"type": "array", "items": _ref("EventSummary")},
        "next_cursor": {"type": "string", "nullable": True}}}
    replayed = {"type": "object", "required": ["event_id", "replay_of"],
                "properties": {"event_id": {"type": "string"}, "replay_of": {"type": "string"}}}
    dry_run = {"type": "object", "required": ["source", "event"], "properties": {
        "source": {"type": "string"}, "event": {},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}}}}
    claimed = {"type": "object", "required": ["item"], "properties": {"item": _ref("QueueItem")}}
    item = {"type": "object", "required": ["item"]}
    duplicate = {"type": "object", "properties": {"event_id": {"type": "string"}, "duplicate": {"type": "boolean"}}}
    refusals = ((400, "malformed body"), (401, "verification failed"), (403, "sender not allowed"),
                (404, "no such source"), (413, "body too large"), (415, "unsupported content type"),
                (503, "the store cannot take the event now"))
    run_status = _query("status", {"type": "string", "enum": ["active", "succeeded", "dead"]}, "only this status")
    item_status = _query(
        "status", {"type": "string", "enum": ["waiting", "claimed", "done", "dead"]}, "only this status"
    )
    paths: dict[str, Any] = {
        "/api/events": {"get": _op("List events, newest first",
                                   {"200": _json(event_list, "a page of events"), **_errors(400)}, params=[
            _query("source", {"type": "string"}, "only this source"),
            _query("type", {"type": "string"}, "only this type"),
            _query("status", {"type": "string", "enum": ["pending", "matched"]}, "only this status"),
            _query("since", {"type": "string", "format": "date-time"}, "received at or after"),
            _query("until", {"type": "string", "format": "date-time"}, "received before"),
            _query("cursor", {"type": "string", "pattern": "^[0-9]+$"}, "next_cursor of the previous page"), LIMIT])},
        "/api/events/{id}": {"get": _op("An event with its explain record and runs",
                                        {"200": _json(_ref("EventDetail"), "the event"), **_errors(404)},
                                        params=[_path("id")])},
        "/api/events/{id}/replay": {"post": _op("Replay an event (optionally for some rules)", {
            "202": _json(replayed, "the replay is stored"),
            **_errors(400, 404)}, params=[_path("id")], body={
                "type": "object", "properties": {"rules": {"type": "array", "items": {"type": "string"}}}
            })},
        "/api/runs": {"get": _op("List runs", {"200": _json(_list_of("runs", _ref("Run")), "runs"), **_errors(400)},
                                 params=[run_status, _query("rule", {"type": "string"}, "only this rule"), LIMIT])},
        "/api/runs/{id}": {"get": _op("A run with its steps",
                                      {"200": _json(_ref("RunDetail"), "the run"), **_errors(404)},
                                      params=[_path("id")])},
        "/api/runs/{id}/retry": {"post": _op("Resume a dead run from its dead step",
                                             {"200": _json(_ref("RunDetail"), "the run, active again"),
                                              **_errors(400, 404, 409)},
                                             params=[_path("id")], body={"type": "object", "properties": {
                                                 "set": {"type": "object", "description": "STEP.PARAM -> value"}}})},
        "/api/rules": {"get": _op("Rules with version, file, line and run counts",
                                  {"200": _json(_list_of("rules", OBJECT), "the rules")})},
        "/api/sources": {"get": _op("Sources, with Hover verification state",
                                    {"200": _json(_list_of("sources", OBJECT), "the sources")})},
        "/api/hosts": {"get": _op(
            "Destination hosts of the http action: limits, calls in flight, circuit breaker",
            {"200": _json(
                {"type": "object", "required": ["hosts"], "properties": {"hosts": {"type": "array", "items": OBJECT}}},
                "the hosts this process has called",
            )},
        )},
        "/api/dry-run": {"post": _op("Match and render an event with no side effects",
                                     {"200": _json({"type": "object", "required": ["event", "explain", "actions"]},
                                                   "the result"), **_errors(400)},
                                     body=dry_run)},
        "/api/queues": {"get": _op("Queues and their counts by status", {"200": _json(
            {"type": "object", "required": ["queues"], "properties": {"queues": OBJECT}}, "the queues")})},
        "/api/queues/{name}": {"get": _op("Items of a queue",
                                          {"200": _json(_list_of("items", _ref("QueueItem")), "items"), **_errors(400)},
                                          params=[_path("name"), item_status, LIMIT])},
        "/api/queues/{name}/claim": {"post": _op("Claim the next item with a lease",
                                                 {"200": _json(claimed, "the claimed item"),
                                                  "204": {"description": "the queue is empty"}, **_errors(400)},
                                                 params=[_path("name")], body={"type": "object", "properties": {
                                                     "lease": {"description": "a duration: 30m, 600 ..."}}})},
        "/api/queues/{name}/items/{item}/done": {"post": _op("Mark a claimed item done",
                                                            {"200": _json(item, "the item"), **_errors(404, 409)},
                                                            params=[_path("name"), _path("item")])},
        "/api/queues/{name}/items/{item}/fail": {"post": _op("Give a claimed item back",
                                                            {"200": _json(item, "the item"), **_errors(400, 404, 409)},
                                                            params=[_path("name"), _path("item")],
                                                            body={"type": "object", "properties": {
                                                                "retry_in": {}, "error": {"type": "string"}}})},
        "/hooks/{source}": {"post": _op("Receive a webhook", {
            "202": _json({"type": "object", "properties": {"event_id": {"type": "string"}}}, "the event is committed"),
            "200": _json(duplicate, "a duplicate delivery, or the source's own response"),
            **{str(c): _json(_ERROR, t) for c, t in refusals}},
            params=[_path("source")], body=OBJECT, secured=False)},
        "/livez": {"get": _op("The process is alive", {"200": _json(OBJECT, "alive")}, secured=False)},
        "/readyz": {"get": _op("Ready: store can commit, rules loaded, not draining",
                               {"200": _json(OBJECT, "ready"), "503": _json(OBJECT, "not ready")}, secured=False)},
        "/healthz": {"get": _op("The readiness checks",
                                {"200": _json(OBJECT, "healthy"), "503": _json(OBJECT, "unhealthy")}, secured=False)},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hookwise", "version": VERSION,
            "description": "Receive webhooks, match rules, run workflows; the management API."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "description": "api.token; without one, loopback clients only"}},
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict[str, Any]:
    nullable_str = {"type": "string", "nullable": True}
    run = {"type": "object", "required": ["id", "event_id", "rule", "rule_version", "status"], "properties": {
        "id": {"type": "string"}, "event_id": {"type": "string"}, "rule": {"type": "string"},
        "rule_version": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "succeeded", "dead"]}, "step": {"type": "integer"},
        "error": nullable_str,
        "created_at": nullable_str, "updated_at": nullable_str}}
    step = {"type": "object", "required": ["index", "id", "action", "status", "attempt"], "properties": {
        "index": {"type": "integer"}, "id": {"type": "string"}, "action": {"type": "string"},
        "status": {"type": "string", "enum": ["waiting", "ready", "running", "succeeded", "skipped", "failed", "dead"]},
        "attempt": {"type": "integer"}, "params": {}, "output": {}, "error": nullable_str}}
    return {
        "Error": {
            "type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}}
        },
        "EventSummary": {
            "type": "object", "required": ["id", "source", "type", "received_at", "status"], "properties": {
                "id": {"type": "string"}, "source": {"type": "string"}, "type": {"type": "string"},
                "delivery_id": nullable_str,
                "received_at": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "matched"]},
                "replay_of": nullable_str, "runs": {"type": "integer", "nullable": True},
                "outcome": {"type": "string"}}},
        "EventDetail": {"type": "object", "required": ["event", "runs"], "properties": {
            "event": {"type": "object", "required": ["id", "source", "type", "body", "headers", "explain"]},
            "runs": {"type": "array", "items": _ref("RunDetail")}}},
        "Run": run,
        "RunDetail": {"allOf": [run, _list_of("steps", step)]},
        "QueueItem": {
            "type": "object", "required": ["id", "queue", "key", "status", "attempts", "max_attempts"], "properties": {
                "id": {"type": "string"}, "queue": {"type": "string"}, "key": {"type": "string"},
                "status": {"type": "string", "enum": ["waiting", "claimed", "done", "dead"]}, "data": {},
                "attempts": {"type": "integer"},
                "max_attempts": {"type": "integer"}, "error": nullable_str,
                "available_at": {"type": "string"}, "created_at": {"type": "string"},
                "updated_at": {"type": "string"}}},
    }
