"""engine/ops/metrics.py: counters moved by the real receiver and worker, the queue depth read
from a real store, and /metrics as Prometheus parses it."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from engine.events import Event
from engine.ops.metrics import Metrics, step_outcome
from engine.receive.ingest import Ingest
from engine.receive.server import Health, create_app
from engine.rules.config import Http
from engine.rules.loader import Current, load
from engine.run.delivery import Delivery
from engine.run.runs import StepResult, StepTask
from engine.run.worker import Worker
from engine.store import Incoming, Store, open_store

from .support import Hit, Sink, free_port, post

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, as Prometheus' own parser reads it."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


# --- recording, without a server ---------------------------------------------------------

EVENT = Event(source="s", type="t", body={}, id="ev1")


def result(
    outcome: str, *, retry_in: float | None = None, continue_on_error: bool = False, action: str = "http"
) -> StepResult:
    task = StepTask(run_id="r", index=0, step_id="s", action=action, attempt=1, rule="x", rule_version="v", event=EVENT)
    return StepResult(
        task=task, outcome=outcome, retry_in=retry_in, continue_on_error=continue_on_error, started_at=10.0,
        finished_at=10.3
    )


@pytest.mark.parametrize(
    ("recorded", "outcome"),
    [
        (result("succeeded"), "succeeded"),
        (result("skipped"), "skipped"),
        (result("failed", retry_in=2.0), "retried"),
        (result("failed", continue_on_error=True), "failed"),
        (result("failed"), "dead"),
        (result("failed", retry_in=2.0, continue_on_error=True), "retried"),
    ],
)
def test_a_recorded_result_counts_as_its_outcome(recorded: StepResult, outcome: str) -> None:
    assert step_outcome(recorded) == outcome
    metrics = Metrics()
    metrics.recorded([recorded])
    found = samples(metrics.exposition().decode())
    assert value(found, "hookwise_steps_total", action="http", outcome=outcome) == 1
    assert value(found, "hookwise_dead_runs_total") == (1 if outcome == "dead" else 0)
    # Latency: every attempt that ran, in seconds; a skipped step did not run.
    assert value(found, "hookwise_step_duration_seconds_count", action="http") == (0 if outcome == "skipped" else 1)
    if outcome != "skipped":
        assert value(found, "hookwise_step_duration_seconds_sum", action="http") == pytest.approx(0.3)
        assert value(found, "hookwise_step_duration_seconds_bucket", action="http", le="0.25") == 0
        assert value(found, "hookwise_step_duration_seconds_bucket", action="http", le="0.5") == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.matched("a")
    one.reloaded(True)
    two.reloaded(False)
    first, second = samples(one.exposition().decode()), samples(two.exposition().decode())
    assert value(first, "hookwise_rule_matches_total", rule="a") == 1
    assert value(second, "hookwise_rule_matches_total", rule="a") == 0
    assert (value(first, "hookwise_reloads_total"), value(first, "hookwise_reload_failures_total")) == (1, 0)
    assert (value(second, "hookwise_reloads_total"), value(second, "hookwise_reload_failures_total")) == (0, 1)


# --- the receiver and /metrics over real HTTP --------------------------------------------

CONFIG = """\
server: {max_body: 1KiB}
rules: []
sources:
  tok: {token: t0ken-for-metrics}
  open: {type: "body:kind", id: "header:X-Delivery", verify: none}
"""


class Served:
    def __init__(self, tmp: Path) -> None:
        (tmp / "config.yaml").write_text(CONFIG)
        loaded = load(tmp / "config.yaml", {})
        self.store = open_store(loaded.config.store_url())
        breaker = Http.model_validate({"breaker": {"failures": 2, "cooldown": "30s"}})
        self.delivery = Delivery(breaker, clock=lambda: 100.0)
        self.metrics = Metrics(self.store.queue_counts, self.delivery.hosts)
        self.ingest = Ingest(self.store)
        self.port = free_port()
        app = create_app(Current(loaded), self.ingest, Health(), self.store, self.metrics, self.delivery.hosts)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def scrape(self) -> tuple[str, Samples]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as r:
            assert r.status == 200
            return r.headers["Content-Type"], samples(r.read().decode())

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ingest.stop()
        self.store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path)
    yield s
    s.close()


def test_events_are_counted_by_source_and_answered_status(served: Served) -> None:
    body = json.dumps({"kind": "k"})
    answers = [
        post(served.url("/hooks/tok?token=t0ken-for-metrics"), body)[0],
        post(served.url("/hooks/tok?token=wrong-token"), body)[0],
        post(served.url("/hooks/tok"), body)[0],
        post(served.url("/hooks/open"), body, {"X-Delivery": "d1"})[0],
        post(served.url("/hooks/open"), body, {"X-Delivery": "d1"})[0],
        post(served.url("/hooks/open"), "x" * 2048)[0],
        post(served.url("/hooks/open"), "[", {"X-Delivery": "d2"})[0],
        post(served.url("/hooks/open"), body, {"Content-Type": "text/plain"})[0],
        post(served.url("/hooks/no-such-source-a1b2c3"), body)[0],
    ]
    assert answers == [202, 401, 401, 202, 200, 413, 400, 415, 404]
    content_type, found = served.scrape()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    received = {dict(labels)["source"] + " " + dict(labels)["status"]: v for (name, labels), v in found.items()
                if name == "hookwise_events_received_total"}
    assert received == {
        "tok 202": 1, "tok 401": 2, "open 202": 1, "open 200": 1, "open 413": 1, "open 400": 1, "open 415": 1,
        "unknown 404": 1,
    }


def test_no_series_is_doubled_by_a_created_timestamp(served: Served) -> None:
    assert post(served.url("/hooks/tok?token=t0ken-for-metrics"), json.dumps({"kind": "k"}))[0] == 202
    served.metrics.recorded([result("succeeded")])  # a histogram series too
    served.metrics.matched("a")
    _, found = served.scrape()
    names = {name for name, _ in found}
    counted = {"hookwise_events_received_total", "hookwise_step_duration_seconds_count", "hookwise_rule_matches_total"}
    assert counted <= names
    assert [name for name in names if name.endswith("_created")] == []


def test_a_path_segment_never_becomes_a_label(served: Served) -> None:
    for n in range(3):
        post(served.url(f"/hooks/guess-{n}-secretish"), "{}")
    with urllib.request.urlopen(served.url("/metrics"), timeout=10) as r:
        text = r.read().decode()
    assert "guess-" not in text
    assert value(samples(text), "hookwise_events_received_total", source="unknown", status="404") == 3


def test_queue_depth_is_read_from_the_store_when_scraped(served: Served) -> None:
    _, before = served.scrape()
    assert not any(name == "hookwise_queue_items" for name, _ in before)  # no queue yet, no series
    store: Store = served.store
    for key in ("a", "b", "c"):
        store.requeue("field-techs", key, {"k": key}, delay=0, max_attempts=5, request_id=f"req-{key}")
    store.requeue("office", "x", {}, delay=0, max_attempts=5, request_id="req-x")
    claimed = store.claim_queue_item("field-techs", 60)
    assert claimed is not None
    store.finish_queue_item(claimed.id)
    store.claim_queue_item("field-techs", 60)
    _, found = served.scrape()
    depth = {
        tuple(sorted(dict(labels).items())): v for (name, labels), v in found.items() if name == "hookwise_queue_items"
    }
    assert depth == {
        (("queue", "field-techs"), ("status", "claimed")): 1, (("queue", "field-techs"), ("status", "dead")): 0,
        (("queue", "field-techs"), ("status", "done")): 1, (("queue", "field-techs"), ("status", "waiting")): 1,
        (("queue", "office"), ("status", "claimed")): 0, (("queue", "office"), ("status", "dead")): 0,
        (("queue", "office"), ("status", "done")): 0, (("queue", "office"), ("status", "waiting")): 1,
    }


def test_destination_hosts_and_their_breakers_are_in_the_metrics_and_the_api(served: Served) -> None:
    _, before = served.scrape()
    assert not any(name.startswith("hookwise_host_") for name, _ in before)  # no call yet, no series
    for n in range(2):
        served.delivery.done(served.delivery.admit("crm.example.com", f"k{n}"), False)
    served.delivery.admit("fine.example.com", "k")
    _, found = served.scrape()
    assert value(found, "hookwise_host_breaker", host="crm.example.com", state="open") == 1
    assert value(found, "hookwise_host_breaker", host="crm.example.com", state="closed") == 0
    assert value(found, "hookwise_host_failures_total", host="crm.example.com") == 2
    assert value(found, "hookwise_host_in_flight", host="fine.example.com") == 1
    with urllib.request.urlopen(served.url("/api/hosts"), timeout=10) as r:
        hosts = {h["host"]: h for h in json.loads(r.read())["hosts"]}
    assert (hosts["crm.example.com"]["breaker"], hosts["crm.example.com"]["retry_in_s"]) == ("open", 30.0)
    assert (hosts["fine.example.com"]["breaker"], hosts["fine.example.com"]["in_flight"]) == ("closed", 1)


def test_an_app_without_metrics_has_no_metrics_endpoint(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    loaded = load(tmp_path / "config.yaml", {})
    store = open_store(loaded.config.store_url())
    try:
        app = create_app(Current(loaded), None, Health(), store)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False, lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            assert post(f"http://127.0.0.1:{port}/metrics", "", method="GET")[0] == 404
        finally:
            server.should_exit = True
            thread.join(10)
    finally:
        store.close()


# --- the worker --------------------------------------------------------------------------

RULES = """\
rules:
  - name: good
    event: good
    actions:
      - http: {method: POST, url: "{SINK}/ok"}
      - log: {message: skipped}
        if: "false"
  - name: flaky
    event: flaky
    actions:
      - http: {method: POST, url: "{SINK}/flaky"}
        retry: {attempts: 3, backoff: 10ms, max_backoff: 20ms}
  - name: doomed
    event: doomed
    actions:
      - http: {method: POST, url: "{SINK}/down"}
        retry: {attempts: 2, backoff: 10ms, max_backoff: 20ms}
  - name: tolerant
    event: tolerant
    actions:
      - http: {method: POST, url: "{SINK}/down"}
        retry: {attempts: 1}
        continue_on_error: true
      - http: {method: POST, url: "{SINK}/ok"}
"""


def flaky_then_ok() -> Callable[[Hit], tuple[int, str]]:
    calls = {"flaky": 0}

    def respond(hit: Hit) -> tuple[int, str]:
        if hit.path == "/down":
            return 500, "{}"
        if hit.path == "/flaky":
            calls["flaky"] += 1
            return (503, "{}") if calls["flaky"] == 1 else (200, "{}")
        return 200, "{}"

    return respond


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def run_statuses(store: Store) -> dict[str, str]:
    return {r["rule"]: r["status"] for r in store.list_runs(limit=100)}


def test_worker_counts_matches_step_outcomes_latency_and_dead_runs(tmp_path: Path) -> None:
    sink = Sink(flaky_then_ok())
    (tmp_path / "rules.yaml").write_text(RULES.replace("{SINK}", sink.url))
    (tmp_path / "config.yaml").write_text(
        "store: sqlite:///store.db\nrules: [rules.yaml]\nhttp: {allow_private: true}\nsources: {s: {verify: none}}\n"
    )
    current = Current(load(tmp_path / "config.yaml", {}))
    store = open_store(current().config.store_url())
    metrics = Metrics(store.queue_counts)
    worker = Worker(store, current, concurrency=4, poll=0.02, metrics=metrics)
    worker.start()
    try:
        for type_ in ("good", "flaky", "doomed", "tolerant", "nothing-matches"):
            store.put_events([Incoming("s", type_, "{}", {}, {}, time.time())])
        worker.wake()
        done = {"good": "succeeded", "flaky": "succeeded", "doomed": "dead", "tolerant": "succeeded"}
        wait_until(lambda: run_statuses(store) == done)
    finally:
        worker.stop(5)
        store.close()
        sink.close()
    found = samples(metrics.exposition().decode())
    matches = {dict(labels)["rule"]: v for (name, labels), v in found.items() if name == "hookwise_rule_matches_total"}
    assert matches == {"good": 1, "flaky": 1, "doomed": 1, "tolerant": 1}
    steps = {(dict(labels)["action"], dict(labels)["outcome"]): v for (name, labels), v in found.items()
             if name == "hookwise_steps_total"}
    assert steps == {
        ("http", "succeeded"): 3,  # good, flaky's second attempt, tolerant's second step
        ("log", "skipped"): 1,
        ("http", "retried"): 2,  # flaky's first attempt, doomed's first
        ("http", "dead"): 1,
        ("http", "failed"): 1,  # tolerant: attempts used up, continue_on_error
    }
    assert value(found, "hookwise_dead_runs_total") == 1
    assert value(found, "hookwise_step_duration_seconds_count", action="http") == 7
    assert value(found, "hookwise_step_duration_seconds_count", action="log") == 0
