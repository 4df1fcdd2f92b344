"""/openapi.json describes the API, and the API keeps to it: schemathesis generates requests
from the description and checks every answer against it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.ingest import Ingest
from engine.loader import Current, load
from engine.openapi import spec
from engine.server import Health, create_app
from engine.store import Incoming, open_store

from .support import free_port, post

TOKEN = "api-t0ken"


class Live:
    def __init__(self, root: Path) -> None:
        (root / "config.yaml").write_text(
            f"store: sqlite:///s.db\nrules: [r.yaml]\napi: {{token: {TOKEN}}}\n"
            "sources:\n  shop: {token: shop-t0ken}\n"
        )
        (root / "r.yaml").write_text("rules:\n  - name: audit\n    source: shop\n    actions: [{log: {message: x}}]\n")
        loaded = load(root / "config.yaml", {})
        self.store = open_store(loaded.config.store_url())
        self.store.put_events([Incoming("shop", "order.created", json.dumps({"id": 1}), {}, {}, time.time())])
        self.store.requeue("field-techs", "1", {"x": 1}, delay=0, max_attempts=3, request_id="r")
        self.port = free_port()
        app = create_app(Current(loaded), Ingest(self.store), Health(), self.store)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Live:
    server = Live(tmp_path_factory.mktemp("openapi"))
    yield server  # type: ignore[misc]
    server.close()


def test_the_served_description_is_the_spec(live: Live) -> None:
    status, served = post(f"http://127.0.0.1:{live.port}/openapi.json", b"", method="GET")
    assert status == 200 and served == spec()
    documented = {path for path in spec()["paths"]}
    assert {"/api/events", "/api/runs/{id}/retry", "/api/queues/{name}/claim", "/hooks/{source}"} <= documented


schema = schemathesis.openapi.from_dict(spec())


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_description(case: schemathesis.Case, live: Live) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live.port}",
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )
