"""Work queues: the store's semantics, the requeue action, /api/queues and `hookwise queue`."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from actions.requeue import RequeueAction, RequeueParams
from engine.events import Event
from engine.receive.ingest import Ingest
from engine.receive.server import Health, create_app
from engine.rules.loader import Current, load
from engine.run.action import Context
from engine.secrets import Masker
from engine.store import Store, open_store

from .support import Clock, free_port, post


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'q.db'}", clock=clock)
    yield s
    s.close()


def requeue(  # type: ignore[no-untyped-def]
    store: Store, key: str = "19402492", request: str = "r", data: Any = None, max_attempts: int = 3, delay: float = 0.0
):
    return store.requeue("field-techs", key, data, delay=delay, max_attempts=max_attempts, request_id=request)


def test_same_key_updates_the_waiting_item_and_its_attempts_rise(store: Store) -> None:
    first = requeue(store, request="a", data={"v": 1})
    second = requeue(store, request="b", data={"v": 2})
    other = requeue(store, key="other", request="c")
    assert first.id == second.id != other.id
    assert (second.attempts, second.data, second.status) == (2, {"v": 2}, "waiting")
    assert store.queue_counts() == {"field-techs": {"waiting": 2}}


def test_a_repeated_request_counts_once(store: Store) -> None:
    requeue(store, request="run-1-0")
    again = requeue(store, request="run-1-0")
    assert again.attempts == 1


def test_past_max_attempts_the_item_is_dead_and_an_event_is_stored(store: Store) -> None:
    for i in range(3):
        requeue(store, request=f"r{i}", data={"i": i})
    dead = requeue(store, request="r3", data={"i": 3})
    assert dead.status == "dead" and dead.exhausted_event is not None
    event = store.get_event(dead.exhausted_event)
    assert event is not None and (event["source"], event["type"]) == ("hookwise", "queue.exhausted")
    assert event["body"]["key"] == "19402492" and event["body"]["attempts"] == 4 and event["body"]["data"] == {"i": 3}
    fresh = requeue(store, request="r4")
    assert fresh.id != dead.id and fresh.attempts == 1  # a new item: the dead one stays on the dead list


def test_claim_lease_done_and_fail(store: Store, clock: Clock) -> None:
    requeue(store, request="a")
    requeue(store, key="later", request="b", delay=120)
    item = store.claim_queue_item("field-techs", lease=30)
    assert item is not None and item.key == "19402492" and item.status == "claimed"
    assert item.available_at == clock() + 30
    clock.advance(29.9)
    assert store.claim_queue_item("field-techs", lease=60) is None  # leased, and the other is delayed
    clock.advance(0.1)
    again = store.claim_queue_item("field-techs", lease=60)  # the lease ran out
    assert again is not None and again.id == item.id
    failed = store.fail_queue_item(again.id, retry_in=60, error="no technician")
    assert failed is not None and (failed.status, failed.attempts, failed.error) == ("waiting", 2, "no technician")
    assert store.finish_queue_item(again.id) is None  # not claimed any more
    clock.advance(59.9)
    assert store.claim_queue_item("field-techs", lease=60) is None  # waits 60 s; the other waits 120 s
    clock.advance(0.1)
    back = store.claim_queue_item("field-techs", lease=60)
    assert back is not None and back.id == item.id


def test_failing_past_max_attempts_is_dead(store: Store) -> None:
    requeue(store, request="a", max_attempts=1)
    item = store.claim_queue_item("field-techs", 60)
    assert item is not None
    dead = store.fail_queue_item(item.id, 0, "broken roof")
    assert dead is not None and dead.status == "dead" and dead.exhausted_event


def test_the_requeue_action(store: Store) -> None:
    action = RequeueAction()
    ctx = Context(event=Event("hover", "t", {}), run_id="run", step_id="requeue", attempt=1, idempotency_key="run-0",
                  logger=logging.getLogger("t"), store=store)
    params = RequeueParams(queue="field-techs", key=19402492, data={"x": 1})
    out = action.run(params, ctx)
    assert out == {"item_id": out["item_id"], "attempt": 1, "status": "waiting"}  # type: ignore[index]
    assert action.run(params, ctx)["attempt"] == 1  # type: ignore[index]  # the same step again
    ctx2 = Context(
        event=ctx.event, run_id="run2", step_id="requeue", attempt=1, idempotency_key="run2-0", logger=ctx.logger,
        store=store
    )
    assert action.run(params, ctx2)["attempt"] == 2  # type: ignore[index]


def test_the_requeue_action_stores_its_data_masked(store: Store) -> None:
    masker = Masker(["field-s3cret"])
    ctx = Context(event=Event("hover", "t", {}), run_id="run", step_id="requeue", attempt=1, idempotency_key="run-0",
                  logger=logging.getLogger("t"), store=store, mask=masker.mask_value)
    out = RequeueAction().run(RequeueParams(queue="field-techs", key=1, data={"url": "https://x/?k=field-s3cret"}), ctx)
    assert store.get_queue_item(out["item_id"]).data == {"url": "https://x/?k=****"}  # type: ignore[index, union-attr]


# --- the API over HTTP ----------------------------------------------------------------


class Api:
    def __init__(self, tmp: Path, token: str | None) -> None:
        api = f'api: {{token: "{token}"}}\n' if token else ""
        (tmp / "config.yaml").write_text(f"{api}rules: []\nsources: {{}}\n")
        loaded = load(tmp / "config.yaml", {})
        self.store = open_store(loaded.config.store_url())
        self.port = free_port()
        self.ingest = Ingest(self.store)
        app = create_app(Current(loaded), self.ingest, Health(), self.store)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return post(
            f"http://127.0.0.1:{self.port}{path}", json.dumps(body) if body is not None else b"", headers, method=method
        )

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, "api-t0ken")
    yield a
    a.close()


def test_the_api_needs_its_token(api: Api) -> None:
    assert api.call("GET", "/api/queues")[0] == 401
    assert api.call("GET", "/api/queues", token="wrong")[0] == 401
    assert api.call("GET", "/api/queues", token="api-t0ken") == (200, {"queues": {}})


def test_without_a_token_only_loopback_is_answered(tmp_path: Path) -> None:
    a = Api(tmp_path, None)
    try:
        assert a.call("GET", "/api/queues") == (200, {"queues": {}})  # the test client is on loopback
    finally:
        a.close()


def test_claim_done_and_fail_through_the_api(api: Api) -> None:
    t = "api-t0ken"
    requeue(api.store, request="a", data={"job": 1})
    requeue(api.store, key="k2", request="b")
    status, body = api.call("POST", "/api/queues/field-techs/claim", {"lease": "10m"}, token=t)
    assert status == 200 and body["item"]["data"] == {"job": 1} and body["item"]["status"] == "claimed"
    first = body["item"]["id"]
    second = api.call("POST", "/api/queues/field-techs/claim", token=t)[1]["item"]["id"]
    assert api.call("POST", "/api/queues/field-techs/claim", token=t)[0] == 204
    assert api.call("POST", f"/api/queues/field-techs/items/{first}/done", token=t)[1]["item"]["status"] == "done"
    assert api.call("POST", f"/api/queues/field-techs/items/{first}/done", token=t)[0] == 409
    failed = api.call(
        "POST", f"/api/queues/field-techs/items/{second}/fail", {"retry_in": "1h", "error": "rain"}, token=t
    )
    assert failed[0] == 200 and failed[1]["item"]["error"] == "rain" and failed[1]["item"]["status"] == "waiting"
    assert api.call("POST", "/api/queues/field-techs/items/nope/done", token=t)[0] == 404
    assert api.call("POST", f"/api/queues/field-techs/items/{second}/fail", {"retry_in": "soon"}, token=t)[0] == 400
    listed = api.call("GET", "/api/queues/field-techs?status=waiting", token=t)[1]["items"]
    assert [i["key"] for i in listed] == ["k2"]
    assert api.call("GET", "/api/queues", token=t)[1] == {"queues": {"field-techs": {"done": 1, "waiting": 1}}}


# --- the CLI ------------------------------------------------------------------------------


def test_queue_commands(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rules: []\nsources: {}\n")
    store = open_store(load(config, {}).config.store_url())
    requeue(store, request="a", data={"job": 7})
    store.close()

    def hookwise(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", "queue", *args, "-c", str(config)], capture_output=True, text=True,
            timeout=60
        )

    assert hookwise("list").stdout.strip() == "field-techs: 1 waiting"
    claimed = json.loads(hookwise("claim", "field-techs").stdout)
    assert claimed["data"] == {"job": 7}
    assert json.loads(hookwise("claim", "field-techs").stdout) is None
    result = hookwise("fail", claimed["id"], "--retry-in", "0s", "--error", "no access")
    assert result.returncode == 0 and "waiting (attempt 2 of 3)" in result.stdout
    claimed = json.loads(hookwise("claim", "field-techs", "--lease", "1m").stdout)
    assert hookwise("done", claimed["id"]).returncode == 0
    again = hookwise("done", claimed["id"])
    assert again.returncode == 2 and "is not claimed" in again.stderr
    assert hookwise("fail", "x", "--retry-in", "soon").returncode == 2
    assert "done" in hookwise("list", "field-techs").stdout


ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_queue_items_carry_iso_times_in_the_api_and_the_cli(api: Api, tmp_path: Path) -> None:
    t = "api-t0ken"
    requeue(api.store, request="a")
    requeue(api.store, key="k2", request="b")
    claimed = api.call("POST", "/api/queues/field-techs/claim", {"lease": "10m"}, token=t)[1]["item"]
    listed = api.call("GET", "/api/queues/field-techs", token=t)[1]["items"]
    def hookwise(*args: str) -> str:
        command = [sys.executable, "-m", "engine", "queue", *args, "-c", str(tmp_path / "config.yaml")]
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout

    cli, cli_claimed = hookwise("list", "field-techs", "--json"), hookwise("claim", "field-techs")
    for item in [claimed, *listed, *json.loads(cli), json.loads(cli_claimed)]:
        assert all(ISO_TIME.match(item[k]) for k in ("available_at", "created_at", "updated_at")), item
