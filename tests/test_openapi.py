"""/openapi.json describes the app, and the app keeps to it: every route outside the web UI
is described and every described one exists; schemathesis generates requests from the
description served and checks every answer against it."""

from __future__ import annotations

import importlib.metadata
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from engine.ops.metrics import Metrics
from engine.ops.openapi import document
from engine.receive.ingest import Ingest
from engine.receive.server import App, Health, create_app
from engine.rules.loader import Current, load
from engine.store import Incoming, Store, open_store

from .support import free_port, post

TOKEN = "api-t0ken"


def project(root: Path) -> tuple[Current, Store]:
    """A project with one source, one rule, an event and a queue item."""
    (root / "config.yaml").write_text(
        f'store: sqlite:///s.db\nrules: [r.yaml]\napi: {{token: {TOKEN}}}\nsources:\n  shop: {{token: shop-t0ken}}\n'
    )
    (root / "r.yaml").write_text("rules:\n  - name: audit\n    source: shop\n    actions: [{log: {message: x}}]\n")
    loaded = load(root / "config.yaml", {})
    store = open_store(loaded.config.store_url())
    store.put_events([Incoming("shop", "order.created", json.dumps({"id": 1}), {}, {}, time.time())])
    store.requeue("field-techs", "1", {"x": 1}, delay=0, max_attempts=3, request_id="r")
    return Current(loaded), store


def app_of(current: Current, store: Store) -> App:
    """The whole app: receiver, API, UI, health and metrics."""
    return create_app(current, Ingest(store), Health(), store, Metrics())


def described_app() -> dict[str, Any]:
    """The description of an app like the one served below, made before the tests are
    collected: schemathesis makes one test per operation from it."""
    with tempfile.TemporaryDirectory() as tmp:
        current, store = project(Path(tmp))
        try:
            return document(app_of(current, store).rest.routes)
        finally:
            store.close()


class Live:
    def __init__(self, root: Path) -> None:
        current, self.store = project(root)
        self.port = free_port()
        self.app = app_of(current, self.store)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("openapi"))
    yield server
    server.close()


def served(live: Live) -> dict[str, Any]:
    status, answer = post(f"http://127.0.0.1:{live.port}/openapi.json", b"", method="GET")
    assert status == 200 and isinstance(answer, dict)
    return answer


DESCRIBED = described_app()


def test_the_served_description_is_made_from_the_routes_and_names_the_package_version(live: Live) -> None:
    described = served(live)
    assert described == document(live.app.rest.routes) == DESCRIBED
    assert described["info"]["version"] == importlib.metadata.version("hookwise")
    assert described["openapi"] == "3.1.0"


#: The web UI's pages are HTML for people (README "Web UI"), not part of the description.
UI = "/ui"


def test_every_route_of_the_app_is_described_and_every_described_path_exists(live: Live) -> None:
    routes: dict[str, set[str]] = {}
    for route in live.app.rest.routes:
        assert isinstance(route, Route), route  # a Mount would hide routes from this check
        if route.path != UI and not route.path.startswith(UI + "/"):
            assert route.methods is not None
            implied = {"HEAD"} if "GET" in route.methods else set()  # Starlette answers HEAD for every GET
            routes[route.path] = {m.lower() for m in route.methods - implied}
    paths = served(live)["paths"]
    assert {path: set(operations) for path, operations in paths.items()} == routes
    assert {"/api/events", "/api/runs/{id}/retry", "/api/queues/{name}/claim", "/hooks/{source}", "/metrics",
            "/hover/callback", "/openapi.json"} <= set(paths)


def test_every_operation_has_its_parameters_bodies_answers_and_security_described(live: Live) -> None:
    described = served(live)
    schemas = described["components"]["schemas"]
    assert described["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "api.token; without one, loopback clients only",
    }
    for path, operations in described["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert in_path == {part[1:-1] for part in path.split("/") if part.startswith("{")}, where
            assert all(p.get("description") for p in op["parameters"]), where
            assert op["summary"] and op["responses"], where
            if path.startswith("/api/"):
                assert "security" not in op and {"401", "403"} <= set(op["responses"]), where
            else:
                assert op["security"] == [], where
    for name, schema in schemas.items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"
    retry = described["paths"]["/api/runs/{id}/retry"]["post"]
    body = retry["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RetryRequest"}
    assert set(retry["responses"]) == {"200", "400", "401", "403", "404", "409"}
    assert schemas["RetryRequest"]["additionalProperties"] is False and "set" in schemas["RetryRequest"]["properties"]
    limit = next(p for p in described["paths"]["/api/events"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}


schema = schemathesis.openapi.from_dict(DESCRIBED)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_keeps_to_its_description(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live.port}", headers={"Authorization": f"Bearer {TOKEN}"},
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
