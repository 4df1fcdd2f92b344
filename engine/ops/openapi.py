"""The OpenAPI description of hookwise's HTTP interface, served at ``/openapi.json``:
generated from the app's routes and the models of :mod:`engine.ops.api_models`.

A route that is part of the interface is a :class:`Described` route: it carries an
:class:`Operation` per method, naming its query and body models and its answers by
status. :func:`document` walks the routes of the app and turns each operation into the
description: its path parameters from the route's path, its query parameters and request
body from the models, its answers from the models (the shared ones as components). The web
UI's pages (HTML for people, under ``/ui``) are not described.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from .api_models import Error

#: Where the models' schemas are put in the document.
_REF = "#/components/schemas/{model}"

#: The name of the distribution whose version the document gives.
DISTRIBUTION = "hookwise"

#: The answers of an operation behind the API's guard (engine.ops.api.guarded).
_GUARD_ANSWERS = {401: "no bearer token, or a wrong one", 403: "without api.token: a client not on this machine"}


@dataclass(frozen=True)
class Answer:
    """One answer of an operation: what it means, and what it carries (a model, in JSON;
    else a body of ``media_type``, or nothing)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class Operation:
    """One method of one path: what it does, what it takes and what it answers.

    Path parameters are those of the route's path, described by ``path``. An operation
    with a ``query`` or a ``body`` also answers 400; a ``secured`` one (behind the API's
    bearer token) also 401 and 403."""

    method: Literal["GET", "POST"]
    summary: str
    answers: Mapping[int, Answer]
    path: Mapping[str, str] = field(default_factory=dict)
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    #: the body's media types; a body is optional unless it is required
    body_media: tuple[str, ...] = ("application/json",)
    body_required: bool = False
    secured: bool = True

    def all_answers(self) -> dict[int, Answer]:
        """``answers`` with those the operation gives for being what it is."""
        out = dict(self.answers)
        if self.query is not None or self.body is not None:
            out.setdefault(400, Answer("the request is not valid: the message names the field", Error))
        if self.secured:
            for status, text in _GUARD_ANSWERS.items():
                out.setdefault(status, Answer(text, Error))
        return dict(sorted(out.items()))


class Described(Route):
    """A route that is part of the described interface: one operation per method."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *operations: Operation) -> None:
        super().__init__(path, endpoint, methods=[op.method for op in operations])
        self.operations = operations


def version() -> str:
    """The installed package's version."""
    return importlib.metadata.version(DISTRIBUTION)


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the :class:`Described` routes among ``routes``."""
    described = [(route.path, op) for route in routes if isinstance(route, Described) for op in route.operations]
    refs, components = _schemas(op for _, op in described)
    paths: dict[str, dict[str, Any]] = {}
    for path, op in described:
        paths.setdefault(path, {})[op.method.lower()] = _operation(path, op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookwise", "version": version(),
            "description": "Receive webhooks, match rules, run workflows; the management API.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer", "description": "api.token; without one, loopback clients only",
            }},
            "schemas": components,
        },
    }


#: The schema of each (model, mode): a reference to a component.
Refs = Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]


def _schemas(operations: Iterable[Operation]) -> tuple[Refs, dict[str, Any]]:
    """The schema (a reference) of every body and answer model, and the components they refer to."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in operations:
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        for answer in op.answers.values():
            if answer.model is not None:
                wanted[(answer.model, "serialization")] = None
    wanted[(Error, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=_REF)
    components: dict[str, Any] = top.get("$defs", {})
    return refs, components


def _operation(path: str, op: Operation, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "parameters": [*_path_parameters(path, op), *_query_parameters(op)]}
    if op.body is not None:
        content = {media: {"schema": refs[(op.body, "validation")]} for media in op.body_media}
        out["requestBody"] = {"required": op.body_required, "content": content}
    out["responses"] = {str(status): _answer(answer, refs) for status, answer in op.all_answers().items()}
    if not op.secured:
        out["security"] = []
    return out


def _path_parameters(path: str, op: Operation) -> list[dict[str, Any]]:
    names = [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
    if set(names) != set(op.path):
        raise ValueError(f"{op.method} {path}: describe the path parameters {names}, not {sorted(op.path)}")
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": op.path[name]}
        for name in names
    ]


def _query_parameters(op: Operation) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema(mode="validation")
    if "$defs" in schema:
        raise ValueError(f"{op.query.__name__}: a query parameter is a plain value, not a model")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = _without_null(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop,
                       **({"description": description} if description else {})})
    return params


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without its ``null`` branch: a query string is text or absent."""
    branches = schema.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return dict(schema)
    rest = [b for b in branches if b != {"type": "null"}]
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    if schema.get("default", ...) is None:
        del merged["default"]
    return {**merged, **rest[0]} if len(rest) == 1 else {**merged, "anyOf": rest}


def _answer(answer: Answer, refs: Refs) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        out["content"] = {"application/json": {"schema": refs[(answer.model, "serialization")]}}
    elif answer.media_type is not None:
        out["content"] = {answer.media_type: {"schema": {"type": "string"}}}
    return out
