"""The API's models (engine/ops/api_models.py): request bodies and query parameters are
validated with them, each error answered 400 naming its field; and every answer of the
daemon reads through its response model, which refuses a field it does not describe."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from engine.ops import api_models as m
from engine.ops import api_trials as trials
from engine.store import Incoming, Store, open_store

from .support import DaemonProcess, Hit, Sink, free_port, post

TOKEN = "api-t0ken"

RULES = """\
rules:
  - name: push
    source: shop
    event: order.created
    actions:
      - id: crm
        http: {method: POST, url: "{SINK}/crm", json: {order: "{{ event.id }}"}, auth: {bearer: "${CRM_TOKEN}"}}
        retry: {attempts: 2, backoff: 10ms, max_backoff: 20ms}
  - name: dispatch
    source: shop
    event: order.*
    actions:
      - requeue: {queue: field-techs, key: "{{ event.id }}", data: {order: "{{ event.id }}"}, max_attempts: 1}
      - id: never
        if: "false"
        log: {message: never}
      - id: broken
        log: {message: "{{ event.missing.field }}"}
  - name: measure
    source: shop
    event: order.measured
    actions:
      - id: gauge
        http: {method: GET, url: "{SINK}/nan"}
      - id: crm
        http: {method: POST, url: "{SINK}/crm", json: {gauge: "{{ steps.gauge.json.x }}"}}
        retry: {attempts: 1}
  - name: overflow
    source: shop
    event: order.overflow
    actions:
      - requeue: {queue: big, key: "1", data: "{{ event.n * 1e308 }}"}
"""


def answer(hit: Hit) -> tuple[int, str]:
    """A target that reads NaN (Python's JSON does), and a CRM that is down."""
    return (200, '{"x": NaN}') if hit.path == "/nan" else (500, '{"error": "crm down"}')


class Daemon:
    """``hookwise serve`` with a shop source, a hover source and rules whose runs die,
    queue items and fail to render; its store is open here too."""

    def __init__(self, root: Path) -> None:
        self.sink = Sink(answer)
        (root / "rules.yaml").write_text(RULES.replace("{SINK}", self.sink.url))
        (root / "config.yaml").write_text(
            "store: sqlite:///store.db\nrules: [rules.yaml]\nhttp: {allow_private: true}\n"
            f"api: {{token: {TOKEN}}}\nsources:\n  shop: {{token: shop-t0ken}}\n"
            "  hover: {preset: hover, token: h0ver-t0ken}\n"
        )
        self.process = DaemonProcess(root / "config.yaml", free_port(), env={"CRM_TOKEN": "crm-secret-value"})
        self.process.wait_ready()
        self.store: Store = open_store(f"sqlite:///{root / 'store.db'}")

    def api(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
        return post(self.process.url + path, data, {"Authorization": f"Bearer {TOKEN}"}, method=method)

    def send(self, body: dict[str, Any]) -> tuple[int, Any]:
        return post(f"{self.process.url}/hooks/shop?token=shop-t0ken", json.dumps(body))

    def wait(self, check: Any, timeout: float = 20.0) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"timed out:\n{self.process.output()}")

    def close(self) -> None:
        self.process.stop()
        self.store.close()
        self.sink.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("api-models"))
    yield d
    d.close()


def read(model: type[BaseModel], answer: Any) -> Any:
    """``answer`` read through ``model`` (strictly: no coercion, no unknown field)."""
    return model.model_validate(answer, strict=True)


def test_every_answer_reads_through_its_model(daemon: Daemon) -> None:
    d = daemon
    status, accepted = d.send({"type": "order.created", "id": "o-1"})
    assert status == 202
    event_id = read(m.Accepted, accepted).event_id
    assert read(m.Duplicate, d.send({"type": "order.created", "id": "o-1"})[1]).event_id == event_id
    dead = d.wait(lambda: [r for r in d.store.runs_of_event(event_id) if r["status"] == "dead"] if all(
        r["status"] == "dead" for r in d.store.runs_of_event(event_id)) else None)
    run = next(r for r in dead if r["rule"] == "push")  # dispatch dies too, at its step that cannot render
    d.store.save_hover_webhook("230293", source="hover", url="https://hooks.example.com/hooks/hover?token=****")
    stored_long_ago = d.store.put_events([Incoming("shop", "order.paid", "[NaN]", {}, {}, time.time())])[0].event_id

    page = read(m.EventsPage, d.api("GET", "/api/events")[1])
    assert {e.id for e in page.events} == {event_id, stored_long_ago}
    detail = read(m.EventDetail, d.api("GET", f"/api/events/{event_id}")[1])
    assert {r.rule for r in detail.runs} == {"push", "dispatch"} and all(r.steps for r in detail.runs)
    assert read(m.EventDetail, d.api("GET", f"/api/events/{stored_long_ago}")[1]).event.body_note
    status, replayed = d.api("POST", f"/api/events/{event_id}/replay", {"rules": ["push"]})
    assert status == 202 and read(m.ReplayAccepted, replayed).replay_of == event_id
    assert read(m.Runs, d.api("GET", "/api/runs?status=dead")[1]).runs[0].status == "dead"
    assert read(m.RunDetail, d.api("GET", f"/api/runs/{run['id']}")[1]).steps[0].error
    status, retried = d.api("POST", f"/api/runs/{run['id']}/retry", {"set": {"crm.json": {"order": "o-1b"}}})
    assert status == 200 and read(m.RunDetail, retried).status == "active"
    rules = read(m.Rules, d.api("GET", "/api/rules")[1]).rules
    assert {r.name for r in rules} >= {"push", "dispatch"} and any(r.builtin for r in rules)
    sources = read(m.Sources, d.api("GET", "/api/sources")[1]).sources
    assert [w.webhook_id for s in sources if s.hover for w in s.hover.webhooks] == ["230293"]
    assert read(m.Hosts, d.api("GET", "/api/hosts")[1]).hosts[0].host == "127.0.0.1"
    tried = d.api("POST", "/api/dry-run", {"source": "shop", "event": {"type": "order.paid", "id": "o-3"}})[1]
    result = read(trials.DryRunResult, tried)
    assert [(a.id, a.skipped, a.error is not None) for a in result.actions] == [
        ("requeue", None, False), ("never", True, False), ("broken", None, True),
    ]


def test_a_backtest_reads_through_its_model(daemon: Daemon) -> None:
    d = daemon
    event_id = d.send({"type": "order.created", "id": "o-9"})[1]["event_id"]
    d.wait(lambda: (d.store.get_event(event_id) or {}).get("status") == "matched")
    live = read(trials.BacktestResult, d.api("POST", "/api/backtest", {"since": "1h", "rule": "push"})[1])
    (push,) = live.rules
    assert push.rule == "push" and push.would == push.did >= 1 and push.would_not_did.count == 0
    changed = RULES.replace("event: order.created", "event: order.never").replace("{SINK}", d.sink.url)
    status, answer = d.api("POST", "/api/backtest", {"since": "1h", "rules": changed, "type": "order.created"})
    assert status == 200, answer
    rules = {r.rule: r for r in read(trials.BacktestResult, answer).rules}
    assert rules["push"].would == 0 and event_id in rules["push"].did_not_would.examples
    assert rules["dispatch"].render_errors.count >= 1  # its broken step reads event.missing.field
    status, refused = d.api("POST", "/api/backtest", {"rules": "rules: [{name: x, event: a, actions: [{lg: {}}]}]"})
    assert status == 400 and "rules[0].actions[0].lg: unknown key (did you mean 'log'?)" in refused["message"]


def test_queue_answers_read_through_their_models(daemon: Daemon) -> None:
    d = daemon
    d.send({"type": "order.shipped", "id": "o-2"})
    d.wait(lambda: d.store.list_queue_items("field-techs", "waiting", 10))
    assert read(m.Queues, d.api("GET", "/api/queues")[1]).queues["field-techs"]["waiting"] >= 1
    assert read(m.QueueItems, d.api("GET", "/api/queues/field-techs?status=waiting")[1]).items
    item = read(m.QueueItemAnswer, d.api("POST", "/api/queues/field-techs/claim", {"lease": "1m"})[1]).item
    gave_back = d.api("POST", f"/api/queues/field-techs/items/{item.id}/fail", {"error": "rain"})[1]
    failed = read(m.QueueItemAnswer, gave_back)
    assert failed.item.status == "dead" and failed.item.exhausted_event  # max_attempts: 1
    assert read(m.Error, d.api("POST", f"/api/queues/field-techs/items/{item.id}/done")[1]).error == "conflict"


def test_a_value_json_cannot_carry_is_answered_as_text(daemon: Daemon) -> None:
    d = daemon
    event_id = d.send({"type": "order.measured", "id": "o-4"})[1]["event_id"]
    run = d.wait(lambda: next((r for r in d.store.runs_of_event(event_id) if r["rule"] == "measure"
                               and r["status"] == "dead"), None))
    status, retried = d.api("POST", f"/api/runs/{run['id']}/retry")
    assert status == 200 and read(m.RunDetail, retried).steps[0].output["json"] == {"x": "NaN"}
    status, tried = d.api("POST", "/api/dry-run", {"source": "shop", "event": {"type": "order.overflow", "n": 10}})
    overflow = next(a for a in read(trials.DryRunResult, tried).actions if a.rule == "overflow")
    assert status == 200 and overflow.params == {"queue": "big", "key": "1", "data": "Infinity"}


def test_health_answers_read_through_their_models(daemon: Daemon) -> None:
    assert read(m.Alive, post(daemon.process.url + "/livez", b"", method="GET")[1]).status == "ok"
    assert read(m.Readiness, post(daemon.process.url + "/readyz", b"", method="GET")[1]).checks.store == "writable"


REPLAY, RETRY, DRY_RUN = "/api/events/EVENT/replay", "/api/runs/nope/retry", "/api/dry-run"
CLAIM, FAIL = "/api/queues/field-techs/claim", "/api/queues/field-techs/items/nope/fail"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (REPLAY, {"rules": "push"}, "rules: Input should be a valid list"),
        (REPLAY, {"rules": ["push", 7]}, "rules[1]: Input should be a valid string"),
        (REPLAY, {"rule": ["push"]}, "rule: unknown key (did you mean 'rules'?)"),
        (REPLAY, {"rules": ["nope"]}, "no rule named 'nope'"),
        (RETRY, {"set": {"crm": 1}}, "set: 'crm' is not STEP.PARAM"),
        (RETRY, {"set": {".json": 1}}, "set: '.json' is not STEP.PARAM"),
        (RETRY, {"set": ["crm.json"]}, "set: Input should be a valid dictionary"),
        (RETRY, {"sets": {}}, "sets: unknown key (did you mean 'set'?)"),
        (DRY_RUN, {}, "source: required; event: required"),
        (DRY_RUN, {"source": "", "event": {}}, "source: String should have at least 1 character"),
        (DRY_RUN, {"source": "shop", "event": "text"},
         "event: Input should be a valid dictionary, or input should be a valid list"),
        (DRY_RUN, {"source": "shop", "event": {}, "headers": {"n": 1}}, "headers.n: Input should be a valid string"),
        (DRY_RUN, {"source": "nope", "event": {}}, "no source named 'nope' in config.yaml"),
        ("/api/backtest", {"since": "soon"}, "--since: expected a duration (7d, 12h) or an ISO-8601 time"),
        ("/api/backtest", {"rule": 1}, "rule: Input should be a valid string"),
        (CLAIM, {"lease": "soon"}, "lease: invalid duration 'soon'"),
        (CLAIM, {"lease": True}, "lease: a duration must be a number or a string, got bool"),
        (CLAIM, {"leese": "1m"}, "leese: unknown key (did you mean 'lease'?)"),
        (FAIL, {"retry_in": -1}, "retry_in: a duration must be a finite number >= 0, got -1"),
        (FAIL, {"error": 5}, "error: Input should be a valid string"),
    ],
)
def test_a_body_the_model_refuses_is_answered_400_naming_the_field(
    daemon: Daemon, path: str, body: Any, message: str
) -> None:
    event_id = daemon.store.list_events(1)[0]["id"] if "EVENT" in path else ""
    status, answer = daemon.api("POST", path.replace("EVENT", event_id), body)
    assert status == 400, answer
    assert read(m.Error, answer).error == "bad_request" and answer["message"].startswith(message), answer


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "the body is not valid JSON: Expecting property name"),
        (b"[]", "the body must be a JSON object"),
        (b"7", "the body must be a JSON object"),
        (b'{"source": "shop", "event": {"n": NaN}}', "the body is not valid JSON: NaN is not a JSON value"),
        (b'{"source": "shop", "event": ' + b"[" * 200 + b"]" * 200 + b"}", "the body is nested deeper than 128 levels"),
        (b'{"source": "shop", "event": ' + b"[" * 100_000 + b"}", "the body is nested deeper than 128 levels"),
        (b'{"source": "\xff", "event": {}}', "the body is not UTF-8"),
        (b'{"source": "\\ud800", "event": {}}', "no source named '\ufffd'"),
    ],
)
def test_a_body_json_cannot_carry_is_answered_400(daemon: Daemon, raw: bytes, message: str) -> None:
    status, answer = daemon.api("POST", DRY_RUN, raw=raw)
    assert status == 400, answer
    assert read(m.Error, answer).error == "bad_request" and answer["message"].startswith(message), answer


def test_an_empty_body_takes_the_defaults(daemon: Daemon) -> None:
    assert daemon.api("POST", "/api/queues/empty/claim")[0] == 204
    assert daemon.api("POST", "/api/queues/empty/claim", raw=b"  \n")[0] == 204


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/events?limit=0", "limit: Input should be greater than or equal to 1"),
        ("/api/events?limit=1001", "limit: Input should be less than or equal to 1000"),
        ("/api/events?limit=ten", "limit: Input should be a valid integer"),
        ("/api/events?status=weird", "status: expected one of pending, matched"),
        ("/api/events?since=yesterday", "since: expected an ISO-8601 date-time, got 'yesterday'"),
        ("/api/events?cursor=x", "cursor: expected the next_cursor of a previous page"),
        ("/api/runs?status=failed", "status: expected one of active, succeeded, dead"),
        ("/api/runs?limit=-1", "limit: Input should be greater than or equal to 1"),
        ("/api/queues/field-techs?status=busy", "status: expected one of waiting, claimed, done, dead"),
    ],
)
def test_a_query_the_model_refuses_is_answered_400_naming_the_parameter(
    daemon: Daemon, path: str, message: str
) -> None:
    status, answer = daemon.api("GET", path)
    assert status == 400 and read(m.Error, answer).message.startswith(message), answer


def test_a_parameter_given_twice_counts_once_and_unknown_ones_are_ignored(daemon: Daemon) -> None:
    status, answer = daemon.api("GET", "/api/events?limit=0&limit=1&utm_source=x")
    assert status == 200 and len(read(m.EventsPage, answer).events) == 1
