"""Looking at and fixing what happened: the API and CLI of SPEC 10, and retention."""

from __future__ import annotations

import json
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

from engine.ops.retention import Retention
from engine.receive.ingest import Ingest
from engine.receive.server import Health, create_app
from engine.rules.loader import Current, load
from engine.run.worker import Worker
from engine.store import Incoming, Store, open_store

from .support import Hit, Sink, free_port, post

RULES = """\
rules:
  - name: push
    source: shop
    event: order.created
    actions:
      - id: crm
        http: {method: POST, url: "{SINK}/crm", json: {order: "{{ event.id }}"}, auth: {bearer: "${CRM_TOKEN}"}}
        retry: {attempts: 2, backoff: 10ms, max_backoff: 20ms}
      - log: {message: "pushed {{ event.id }}"}
  - name: audit
    source: shop
    event: order.*
    actions: [{log: {message: audit}}]
"""


class World:
    """A project with a daemon's parts in process: store, worker, API over HTTP."""

    def __init__(self, tmp: Path, sink: Sink) -> None:
        self.root = tmp
        (tmp / "rules.yaml").write_text(RULES.replace("{SINK}", sink.url))
        (tmp / "config.yaml").write_text(
            "store: sqlite:///store.db\nrules: [rules.yaml]\nhttp: {allow_private: true}\napi: {token: api-t0ken}\n"
            "sources:\n  shop: {token: shop-t0ken}\n"
        )
        self.env = {"CRM_TOKEN": "crm-secret-value"}
        self.current = Current(load(tmp / "config.yaml", self.env))
        self.store: Store = open_store(self.current().config.store_url())
        self.worker = Worker(self.store, self.current, concurrency=2, poll=0.02)
        self.worker.start()
        self.port = free_port()
        app = create_app(self.current, Ingest(self.store, self.worker.wake), Health(), self.store)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def send(self, body: dict[str, Any]) -> str:
        status, answer = post(f"http://127.0.0.1:{self.port}/hooks/shop?token=shop-t0ken", json.dumps(body))
        assert status == 202, answer
        return answer["event_id"]  # type: ignore[index]

    def api(self, method: str, path: str, body: Any = None, token: str | None = "api-t0ken") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return post(
            f"http://127.0.0.1:{self.port}{path}", json.dumps(body) if body is not None else b"", headers, method=method
        )

    def wait(self, check: Any, timeout: float = 10.0) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError("timed out")

    def hookwise(self, *args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run([sys.executable, "-m", "engine", *args, "-c", str(self.root / "config.yaml")],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **self.env})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.worker.stop(5)
        self.store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Sink]]:
    state = {"fail": True}

    def crm(hit: Hit) -> tuple[int, str]:
        return (500, '{"error": "crm down"}') if state["fail"] else (200, '{"id": "c-1"}')

    sink = Sink(crm)
    sink.state = state  # type: ignore[attr-defined]
    w = World(tmp_path, sink)
    yield w, sink
    w.close()
    sink.close()


def dead_run(w: World, event_id: str) -> dict[str, Any]:
    def dead() -> dict[str, Any] | None:
        return next((r for r in w.store.runs_of_event(event_id) if r["rule"] == "push" and r["status"] == "dead"), None)

    return w.wait(dead)  # type: ignore[no-any-return]


def test_event_detail_explain_and_masking(world: tuple[World, Sink]) -> None:
    w, _ = world
    event_id = w.send({"type": "order.created", "id": "o-1"})
    dead_run(w, event_id)
    status, detail = w.api("GET", f"/api/events/{event_id}")
    assert status == 200
    assert detail["event"]["body"] == {"type": "order.created", "id": "o-1"}
    assert detail["event"]["query"] == {"token": "****"}
    assert {r["rule"]: r["reason"] for r in detail["event"]["explain"]} == {"push": "yes", "audit": "yes"}
    push = next(r for r in detail["runs"] if r["rule"] == "push")
    assert push["status"] == "dead" and "500" in push["error"]
    assert push["steps"][0]["params"]["auth"] == {"bearer": "****"}
    assert "crm-secret-value" not in json.dumps(detail)
    assert w.api("GET", "/api/events/nope")[0] == 404
    assert w.api("GET", f"/api/events/{event_id}", token=None)[0] == 401


def test_event_list_filters_and_cursor(world: tuple[World, Sink]) -> None:
    w, _ = world
    ids = [w.send({"type": "order.paid" if i % 2 else "order.created", "id": f"o-{i}"}) for i in range(5)]
    status, page = w.api("GET", "/api/events?limit=2")
    assert status == 200 and [e["id"] for e in page["events"]] == ids[::-1][:2]
    _, page2 = w.api("GET", f"/api/events?limit=2&cursor={page['next_cursor']}")
    assert [e["id"] for e in page2["events"]] == ids[::-1][2:4]
    _, paid = w.api("GET", "/api/events?type=order.paid")
    assert [e["id"] for e in paid["events"]] == [ids[3], ids[1]] and paid["next_cursor"] is None
    assert w.api("GET", "/api/events?status=weird")[0] == 400
    assert w.api("GET", "/api/events?since=yesterday")[0] == 400
    _, none = w.api("GET", "/api/events?since=2999-01-01T00:00:00Z")
    assert none["events"] == []


def test_retry_a_dead_run_with_an_edited_param(world: tuple[World, Sink]) -> None:
    w, sink = world
    event_id = w.send({"type": "order.created", "id": "o-9"})
    run = dead_run(w, event_id)
    sink.state["fail"] = False  # type: ignore[attr-defined]
    status, retried = w.api("POST", f"/api/runs/{run['id']}/retry", {"set": {"crm.json": {"order": "o-9-fixed"}}})
    assert status == 200 and retried["status"] == "active"
    w.wait(lambda: w.store.get_run(run["id"])["status"] == "succeeded")  # type: ignore[index]
    last = [h for h in sink.hits if h.path == "/crm"][-1]
    assert last.json() == {"order": "o-9-fixed"}
    steps = w.store.steps_of_run(run["id"])
    assert [s["status"] for s in steps] == ["succeeded", "succeeded"] and steps[0]["attempt"] == 1
    assert w.api("POST", f"/api/runs/{run['id']}/retry")[0] == 409  # not dead any more
    assert w.api("POST", "/api/runs/nope/retry")[0] == 404


def test_replay_for_one_rule_and_rule_counts(world: tuple[World, Sink]) -> None:
    w, sink = world
    sink.state["fail"] = False  # type: ignore[attr-defined]
    event_id = w.send({"type": "order.created", "id": "o-5"})
    w.wait(lambda: len([r for r in w.store.runs_of_event(event_id) if r["status"] == "succeeded"]) == 2)
    status, answer = w.api("POST", f"/api/events/{event_id}/replay", {"rules": ["audit"]})
    assert status == 202 and answer["replay_of"] == event_id
    replayed = answer["event_id"]
    runs = w.wait(lambda: [r for r in w.store.runs_of_event(replayed) if r["status"] == "succeeded"])
    assert [r["rule"] for r in runs] == ["audit"]
    assert w.api("POST", f"/api/events/{event_id}/replay", {"rules": ["nope"]})[0] == 400
    _, rules = w.api("GET", "/api/rules")
    counts = {r["name"]: r["counts"] for r in rules["rules"]}
    assert counts["audit"]["succeeded"] == 2 and counts["push"]["succeeded"] == 1
    push = next(r for r in rules["rules"] if r["name"] == "push")
    assert push["file"].endswith("rules.yaml") and push["line"] == 2 and len(push["version"]) == 12


def test_sources_and_dry_run(world: tuple[World, Sink]) -> None:
    w, _ = world
    _, sources = w.api("GET", "/api/sources")
    assert sources["sources"] == [
        {"name": "shop", "preset": None, "path": "/hooks/shop", "authenticated": True, "checks": ["token"]}
    ]
    status, result = w.api("POST", "/api/dry-run", {"source": "shop", "event": {"type": "order.paid", "id": "x"}})
    assert status == 200
    assert {r["rule"]: r["matched"] for r in result["explain"]} == {"push": False, "audit": True}
    assert w.api("POST", "/api/dry-run", {"source": "shop", "event": "text"})[0] == 400


def test_the_cli_works_on_the_store(world: tuple[World, Sink]) -> None:
    w, sink = world
    event_id = w.send({"type": "order.created", "id": "o-7"})
    run = dead_run(w, event_id)
    listed = w.hookwise("runs", "list", "--status", "dead")
    assert listed.returncode == 0 and run["id"] in listed.stdout
    shown = w.hookwise("events", "show", event_id)
    lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
    assert "push yes" in lines and "audit yes" in lines and "crm-secret-value" not in shown.stdout
    assert any(line.startswith(f"run {run['id']} rule push") and " dead: " in line for line in lines)
    explained = w.hookwise("explain", event_id, "--json")
    assert {r["rule"] for r in json.loads(explained.stdout)["explain"]} == {"push", "audit"}
    bad = w.hookwise("runs", "retry", run["id"], "--set", "log.message=x")
    assert bad.returncode == 2 and "can change that step only" in bad.stderr
    sink.state["fail"] = False  # type: ignore[attr-defined]
    ok = w.hookwise("runs", "retry", run["id"], "--set", "crm.json.order=from-cli")
    assert ok.returncode == 0, ok.stderr
    w.wait(lambda: w.store.get_run(run["id"])["status"] == "succeeded")  # type: ignore[index]
    assert [h for h in sink.hits if h.path == "/crm"][-1].json() == {"order": "from-cli"}
    replayed = w.hookwise("replay", event_id, "--rule", "audit")
    assert replayed.returncode == 0 and "replayed" in replayed.stdout
    assert w.hookwise("events", "show", "nope").returncode == 2
    listed_events = w.hookwise("events", "list", "--json")
    assert len(json.loads(listed_events.stdout)["events"]) == 2


def test_retention_prunes_finished_work_and_keeps_dead_runs(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("store: sqlite:///s.db\nrules: []\nretention: {events: 1s}\nsources: {}\n")
    current = Current(load(tmp_path / "config.yaml", {}))
    store = open_store(current().config.store_url())
    from engine.run.runs import StepResult
    from engine.store import Matched, NewRun

    old = time.time() - 10
    old_events = [Incoming("s", "t", "{}", {}, {}, old, delivery_id=f"d{i}", dedupe_window=1) for i in range(3)]
    ids = [s.event_id for s in store.put_events(old_events)]
    pending = store.put_events([Incoming("s", "t", "{}", {}, {}, old, available_at=time.time() + 3600)])[0].event_id
    store.claim_events(10, 60)
    store.record_matches([Matched(e, [], [NewRun(f"r{i}", "rule", "v", "f", "t", [(0, "s", "log")])] if i < 2 else [])
                          for i, e in enumerate(ids)])
    tasks = sorted(store.claim_steps(10, 60), key=lambda t: t.run_id)
    store.record_steps(
        [StepResult(tasks[0], "succeeded", finished_at=old), StepResult(tasks[1], "failed", error="x", finished_at=old)]
    )
    import sqlite3

    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE runs SET updated_at = ?", (old,))
    db.commit()
    db.close()
    totals = Retention(store, current).prune_once()
    assert totals == {"runs": 1, "events": 2, "deliveries": 3, "state": 0}
    assert store.get_event(ids[0]) is None and store.get_event(ids[2]) is None
    assert store.get_event(ids[1]) is not None and store.get_run("r1")["status"] == "dead"  # type: ignore[index]
    assert store.get_event(pending) is not None  # not matched yet: never pruned
    store.close()


def test_runs_show_prints_each_steps_times_params_output_and_error(world: tuple[World, Sink]) -> None:
    w, sink = world
    event_id = w.send({"type": "order.created", "id": "o-3"})
    dead = dead_run(w, event_id)
    shown = w.hookwise("runs", "show", dead["id"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    crm = lines.index("  step 0 crm (http)  dead, attempt 2")
    assert lines[crm + 1].startswith("    started 20") and ", finished 20" in lines[crm + 1]
    assert lines[crm + 2] == "    params:"
    assert lines[crm + 3 : crm + 5] == ["      {", '        "method": "POST",']
    assert f'        "url": "{sink.url}/crm",' in lines and '          "bearer": "****"' in lines
    assert any(line.startswith("    error: ") and "500" in line for line in lines)
    assert "crm-secret-value" not in shown.stdout
    # A long output is shortened; --json has all of it.
    sink.responder = lambda hit: (200, json.dumps({"items": list(range(100))}))
    assert w.hookwise("runs", "retry", dead["id"]).returncode == 0
    w.wait(lambda: w.store.get_run(dead["id"])["status"] == "succeeded")  # type: ignore[index]
    lines = w.hookwise("runs", "show", dead["id"]).stdout.splitlines()
    output = lines.index("    output:")
    assert lines[output + 1] == "      {" and lines[output + 2] == '        "status": 200,'
    assert re.fullmatch(r"      … \d+ more lines \(--json shows everything\)", lines[output + 41])
    assert lines[output + 42] == "  step 1 log (log)  succeeded, attempt 1"
    full = json.loads(w.hookwise("runs", "show", dead["id"], "--json").stdout)
    assert full["steps"][0]["output"]["json"] == {"items": list(range(100))}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"crm.nonsense": 1}, "crm.nonsense: unknown key"),
        ({"crm.jsn": {"order": 1}}, "crm.jsn: unknown key (did you mean 'json'?)"),
        ({"crm.auth.bearr": "t"}, "crm.auth.bearr: unknown key (did you mean 'bearer'?)"),
        ({"crm.method": "FETCH"}, "crm.method: Input should be 'GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE' or "),
        ({"crm.timeout": "soon"}, "crm.timeout: invalid duration 'soon'"),
        ({"log.message": "x"}, "log.message: run {RUN} is dead at step 0 (crm): --set can change that step only"),
    ],
)
def test_a_retry_edit_the_action_would_refuse_is_refused_and_the_run_stays_dead(
    world: tuple[World, Sink], edit: dict[str, Any], message: str
) -> None:
    w, _ = world
    run = dead_run(w, w.send({"type": "order.created", "id": "o-4"}))
    message = message.replace("{RUN}", run["id"])
    status, answer = w.api("POST", f"/api/runs/{run['id']}/retry", {"set": edit})
    assert status == 400 and answer["error"] == "bad_request" and answer["message"].startswith(message), answer
    ((key, value),) = edit.items()
    cli = w.hookwise("runs", "retry", run["id"], "--set", f"{key}={json.dumps(value)}")
    assert cli.returncode == 2 and cli.stderr.startswith(f"error: {message}") and len(cli.stderr.splitlines()) == 1
    assert w.store.get_run(run["id"])["status"] == "dead"  # type: ignore[index]


def test_the_event_list_says_what_each_event_produced_and_marks_replays(world: tuple[World, Sink]) -> None:
    w, sink = world
    sink.state["fail"] = False  # type: ignore[attr-defined]
    both = w.send({"type": "order.created", "id": "o-1"})
    one = w.send({"type": "order.paid", "id": "o-2"})
    none = w.send({"type": "refund", "id": "o-3"})
    w.wait(lambda: all(e["status"] == "matched" for e in w.store.list_events(10)))
    replay = w.api("POST", f"/api/events/{one}/replay", {})[1]["event_id"]
    w.wait(lambda: w.store.get_event(replay)["status"] == "matched")  # type: ignore[index]
    _, page = w.api("GET", "/api/events")
    found = {e["id"]: (e["runs"], e["outcome"], e["replay_of"]) for e in page["events"]}
    assert found == {
        both: (2, "2 runs", None), one: (1, "1 run", None), none: (0, "no rule matched", None),
        replay: (1, "1 run", one),
    }
    listed = w.hookwise("events", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: " ".join(line.split()[4:]) for line in listed.stdout.splitlines()[1:]}
    assert listed.stdout.split()[:5] == ["ID", "RECEIVED", "SOURCE", "TYPE", "OUTCOME"]
    assert rows == {both: "2 runs", one: "1 run", none: "no rule matched", replay: f"1 run replay of {one}"}


def test_a_dry_run_on_a_source_that_is_not_configured_is_refused(world: tuple[World, Sink]) -> None:
    w, _ = world
    status, answer = w.api("POST", "/api/dry-run", {"source": "nope", "event": {"type": "order.paid"}})
    assert status == 400 and answer == {
        "error": "bad_request",
        "message": "no source named 'nope' in config.yaml "
                   "(sources: shop; hookwise for the events hookwise emits itself)",
    }
    assert w.api("POST", "/api/dry-run", {"source": "hookwise", "event": {"type": "order.paid"}})[0] == 200
