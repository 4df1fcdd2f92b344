"""engine/run/worker.py in process: a real store, real rules, real actions and plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import Retry, StoreError
from engine.hover.client import HoverClient
from engine.ops import operations
from engine.rules.loader import Current, load
from engine.run.worker import Worker
from engine.secrets import MASK
from engine.store import Incoming, Store, open_store

from .fakehover import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeHover
from .support import Clock, Hit, Sink
from .test_postgres_store import pg_database, pg_url  # noqa: F401  (fixtures)
from .test_secrets import SECRET, SHOWN_FORMS

PLUGIN = '''
import queue, threading
import pydantic
from engine import Action, Fail, Retry

CALLS = []
#: instances made, and those closed
MADE, CLOSED = [], []
#: "hold" steps say they started here, then wait for the test to let one go
STARTED = queue.SimpleQueue()
GATE = threading.Semaphore(0)

class Crashy(Action):
    name = "crashy"
    class Params(pydantic.BaseModel):
        mode: str
    def __init__(self, settings=None):
        super().__init__(settings)
        MADE.append(self)
    def close(self):
        CLOSED.append(self)
    def run(self, params, ctx):
        CALLS.append((ctx.idempotency_key, ctx.attempt, params.mode))
        if params.mode == "crash":
            raise ZeroDivisionError("plugin bug")
        if params.mode == "fail":
            raise Fail("no such customer")
        if params.mode == "hold":
            STARTED.put(ctx.idempotency_key)
            GATE.acquire(timeout=60)
        if params.mode == "surrogate":  # an output no store can hold as text
            return {"text": "lone \\udfff"}
        if params.mode == "retry-once" and ctx.attempt == 1:
            raise Retry("busy", after=0.05)
        return {"mode": params.mode, "attempt": ctx.attempt, "key": ctx.idempotency_key}
'''


class Harness:
    """A worker on a real store, with the plugin above. ``clock`` (else the wall clock)
    times the store and the worker alike."""

    def __init__(
        self, root: Path, rules: str, environ: dict[str, str] | None = None, *, clock: Callable[[], float] = time.time,
        concurrency: int = 4, store: str = "sqlite:///store.db", config: str = "",
        wrap: Callable[[Store], Store] | None = None,
    ) -> None:
        (root / "plugins").mkdir()
        (root / "plugins" / "wplug.py").write_text(PLUGIN)
        sys.path.insert(0, str(root / "plugins"))
        (root / "rules.yaml").write_text(rules)
        (root / "config.yaml").write_text(
            f"store: {json.dumps(store)}\nrules: [rules.yaml]\nplugins: {{crashy: 'wplug:Crashy'}}\n"
            "defaults: {retry: {attempts: 3, backoff: 20ms, max_backoff: 50ms}}\n"
            "sources:\n  s: {token: abcd1234}\n" + config
        )
        self.root = root
        self.clock = clock
        self.current = Current(load(root / "config.yaml", environ or {}))
        self.store: Store = open_store(self.current().config.store_url(), clock=clock)
        self.worker = Worker(
            wrap(self.store) if wrap else self.store, self.current, concurrency=concurrency, poll=0.02, clock=clock
        )
        self.worker.start()
        self.plugin: Any = sys.modules["wplug"]

    def put(self, type_: str, body: dict[str, Any]) -> str:
        (stored,) = self.store.put_events([Incoming("s", type_, json.dumps(body), {}, {}, self.clock())])
        self.worker.wake()
        return stored.event_id

    def started(self) -> str:
        """The idempotency key of the next "hold" step to start, once it has."""
        return str(self.plugin.STARTED.get(timeout=10))

    def let_go(self) -> None:
        """Let one held step finish."""
        self.plugin.GATE.release()

    def looked_over(self) -> None:
        """Return once the dispatcher has looked over the running steps (their time limits)
        and claimed the due ones after this call. A round of the dispatcher looks over
        running steps, then matches events, then claims steps: once an event stored now is
        matched, and then a second one, the round that matched the first has claimed, and
        the round that matched the second began after the first was matched."""
        for _ in range(2):
            event_id = self.put("nothing-matches-this", {})
            self.wait(lambda event_id=event_id: (self.store.get_event(event_id) or {}).get("status") == "matched")

    def wait(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError("timed out")

    def finished_run(self, event_id: str, rule: str | None = None) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            runs = [r for r in self.store.runs_of_event(event_id) if rule is None or r["rule"] == rule]
            return runs[0] if runs and runs[0]["status"] != "active" else None

        return self.wait(done)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.worker.stop(5)
        self.store.close()
        sys.path.remove(str(self.root / "plugins"))
        sys.modules.pop("wplug", None)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(rules: str, **kwargs: Any) -> Harness:
        made.append(Harness(tmp_path, rules, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def steps(h: Harness, run_id: str) -> list[tuple[str, str, Any, Any]]:
    return [(s["id"], s["status"], s["output"], s["error"]) for s in h.store.steps_of_run(run_id)]


def test_a_steps_time_limit_counts_from_its_start_not_its_wait_for_a_thread(
    harness: Callable[..., Harness], clock: Clock
) -> None:
    # Two steps claimed at once, one step thread: the second waits 0.9 s in the queue,
    # then runs 0.6 s, within its 1 s limit (1.5 s after it was claimed).
    h = harness("""
rules:
  - name: r
    event: go
    actions:
      - {timeout: 1s, retry: {attempts: 1}, crashy: {mode: hold}}
""", clock=clock, concurrency=1)
    events = [h.put("go", {"n": n}) for n in range(2)]
    h.started()
    clock.advance(0.9)
    h.let_go()
    h.started()
    clock.advance(0.6)
    h.looked_over()
    h.let_go()
    runs = [h.finished_run(e) for e in events]
    assert [r["status"] for r in runs] == ["succeeded"] * 2


def test_skip_continue_on_error_and_outputs(harness: Callable[[str], Harness]) -> None:
    h = harness("""
rules:
  - name: r
    event: go
    actions:
      - {id: a, crashy: {mode: ok}}
      - {id: b, if: "steps.a.mode == 'other'", crashy: {mode: ok}}
      - {id: c, continue_on_error: true, crashy: {mode: fail}}
      - {id: d, crashy: {mode: "{{ steps.a.mode }}-{{ steps.a.attempt }}"}}
""")
    run = h.finished_run(h.put("go", {}))
    assert run["status"] == "succeeded"
    found = steps(h, run["id"])
    assert [(i, s) for i, s, _, _ in found] == [
        ("a", "succeeded"), ("b", "skipped"), ("c", "failed"), ("d", "succeeded")
    ]
    assert found[2][3] == "no such customer"
    assert found[3][2]["mode"] == "ok-1" and found[3][2]["key"] == f"{run['id']}-3"


def test_a_plugin_crash_is_a_step_failure_retried_then_dead(harness: Callable[[str], Harness]) -> None:
    h = harness("rules:\n  - name: r\n    event: go\n    actions: [{crashy: {mode: crash}}, {log: {message: after}}]\n")
    run = h.finished_run(h.put("go", {}))
    assert run["status"] == "dead" and run["error"] == "ZeroDivisionError: plugin bug"
    (first, second) = h.store.steps_of_run(run["id"])
    assert (first["status"], first["attempt"], second["status"]) == ("dead", 3, "waiting")
    assert h.worker._thread is not None and h.worker._thread.is_alive()  # the worker lives on


def test_retry_after_and_permanent_failures(harness: Callable[[str], Harness]) -> None:
    h = harness("""
rules:
  - {name: once, event: once, actions: [{crashy: {mode: retry-once}}]}
  - {name: perm, event: perm, actions: [{crashy: {mode: fail}}]}
  - {name: render, event: render, actions: [{crashy: {mode: "{{ event.missing }}"}}]}
""")
    once = h.finished_run(h.put("once", {}))
    assert once["status"] == "succeeded" and h.store.steps_of_run(once["id"])[0]["attempt"] == 2
    perm = h.finished_run(h.put("perm", {}))
    assert perm["status"] == "dead" and h.store.steps_of_run(perm["id"])[0]["attempt"] == 1
    render = h.finished_run(h.put("render", {}))
    assert render["status"] == "dead" and "missing" in render["error"]
    assert h.store.steps_of_run(render["id"])[0]["attempt"] == 1


def test_a_step_past_its_timeout_fails(harness: Callable[..., Harness], clock: Clock) -> None:
    h = harness(
        "rules:\n  - {name: r, event: go, actions: [{crashy: {mode: hold}, timeout: 200ms, retry: {attempts: 1}}]}\n",
        clock=clock
    )
    event_id = h.put("go", {})
    h.started()
    clock.advance(0.2)
    h.looked_over()
    assert h.store.runs_of_event(event_id)[0]["status"] == "active"  # at its limit, not past it
    clock.advance(0.01)
    run = h.finished_run(event_id)
    h.let_go()
    assert run["status"] == "dead" and run["error"] == "timed out after 0.2s"


def test_delay_between_steps(harness: Callable[..., Harness], clock: Clock) -> None:
    h = harness(
        "rules:\n  - {name: r, event: go, actions: [{crashy: {mode: ok}}, {crashy: {mode: ok}, delay: 500ms}]}\n",
        clock=clock
    )
    event_id = h.put("go", {})
    (run,) = h.wait(lambda: [r for r in h.store.runs_of_event(event_id) if steps(h, r["id"])[0][1] == "succeeded"])
    first, second = h.store.steps_of_run(run["id"])
    assert (second["status"], second["due_at"]) == ("ready", clock() + 0.5)
    clock.advance(0.49)
    h.looked_over()
    assert h.store.steps_of_run(run["id"])[1]["status"] == "ready"
    clock.advance(0.01)
    assert h.finished_run(event_id)["status"] == "succeeded"
    second = h.store.steps_of_run(run["id"])[1]
    assert second["started_at"] - first["finished_at"] == pytest.approx(0.5)


def test_a_failed_step_waits_for_its_backoff(harness: Callable[..., Harness], clock: Clock) -> None:
    h = harness(
        "rules:\n  - {name: r, event: go, actions: [{retry: {attempts: 2, backoff: 30s}, crashy: {mode: crash}}]}\n",
        clock=clock
    )
    event_id = h.put("go", {})
    (run,) = h.wait(lambda: [r for r in h.store.runs_of_event(event_id) if steps(h, r["id"])[0][3]])
    (step,) = h.store.steps_of_run(run["id"])
    assert (step["status"], step["attempt"]) == ("ready", 1) and step["due_at"] > clock()  # 30 s with jitter
    clock.advance(step["due_at"] - clock() - 0.01)
    h.looked_over()
    assert h.store.steps_of_run(run["id"])[0]["attempt"] == 1  # not before it is due
    clock.advance(0.02)
    assert h.finished_run(event_id)["status"] == "dead"
    assert h.store.steps_of_run(run["id"])[0]["attempt"] == 2


def test_emit_chains_stop_past_eight(harness: Callable[[str], Harness]) -> None:
    h = harness("""
rules:
  - name: again
    event: [start, loop]
    actions:
      - emit: {type: loop, data: {n: "{{ (event.n | default(0)) + 1 }}"}}
""")
    h.put("start", {})

    def dead_run() -> list[dict[str, Any]]:
        return h.store.list_runs("dead")

    (dead,) = h.wait(dead_run)
    assert "deeper than 8" in dead["error"]
    loops = [e for e in h.store.list_events(100) if e["type"] == "loop"]
    assert len(loops) == 8
    depths = sorted(h.store.get_event(e["id"])["depth"] for e in loops)  # type: ignore[index]
    assert depths == list(range(1, 9))
    bodies = sorted(h.store.get_event(e["id"])["body"]["n"] for e in loops)  # type: ignore[index]
    assert bodies == list(range(1, 9))


def test_a_run_in_flight_keeps_its_rule_version_after_a_reload(harness: Callable[[str], Harness]) -> None:
    h = harness("rules:\n  - name: r\n    event: go\n"
                "    actions: [{crashy: {mode: old}}, {id: two, crashy: {mode: old}, delay: 400ms}]\n")
    event_id = h.put("go", {})
    h.wait(lambda: [s for r in h.store.runs_of_event(event_id) for s in h.store.steps_of_run(r["id"])
                    if s["status"] == "succeeded"])
    (h.root / "rules.yaml").write_text(
        "rules:\n  - name: r\n    event: go\n    actions: [{crashy: {mode: new}}, {id: two, crashy: {mode: new}}]\n"
    )
    h.current.swap(load(h.root / "config.yaml", {}))
    h.worker.runner._rules_by_version.clear()
    run = h.finished_run(event_id)
    assert [s[2]["mode"] for s in steps(h, run["id"])] == ["old", "old"]
    assert h.current().rules.get("r").version != run["rule_version"]  # type: ignore[union-attr]
    fresh = h.finished_run(h.put("go", {}))
    assert [s[2]["mode"] for s in steps(h, fresh["id"])] == ["new", "new"]


def test_an_exhausted_queue_item_emits_an_event_rules_match(harness: Callable[[str], Harness]) -> None:
    h = harness("""
rules:
  - name: to-queue
    event: failed
    actions: [{requeue: {queue: field-techs, key: "{{ event.job }}", max_attempts: 2}}]
  - name: alert
    source: hookwise
    event: queue.exhausted
    when: {queue: field-techs}
    actions: [{crashy: {mode: "alert {{ event.key }} after {{ event.attempts }}"}}]
""")
    for _ in range(3):
        h.finished_run(h.put("failed", {"job": 42}))
    alert = h.wait(lambda: [r for r in h.store.list_runs() if r["rule"] == "alert" and r["status"] == "succeeded"])
    assert steps(h, alert[0]["id"])[0][2]["mode"] == "alert 42 after 3"
    (dead,) = h.store.list_queue_items("field-techs", "dead")
    assert dead.attempts == 3


SECRET_RULES = """
rules:
  - name: crm
    event: go
    actions:
      - id: echo
        http: {method: POST, url: "SINK/echo", params: {key: "${CRM_TOKEN}"}, json: {token: "${CRM_TOKEN}"}}
      - id: later
        crashy: {mode: "seen {{ steps.echo.json.got.token }}"}
      - emit: {type: crm.synced, data: {token: "${CRM_TOKEN}", echoed: "{{ steps.echo.text }}"}}
      - id: login
        http: {method: GET, url: "SINK/login", auth: {basic: [crm-user, "${CRM_TOKEN}"]}}
        retry: {attempts: 1}
"""


def echo(hit: Hit) -> tuple[int, str]:
    """The target echoes what it got: the body and query (/echo), the credentials (/login)."""
    if hit.path.startswith("/echo"):
        return 200, json.dumps({"got": hit.json(), "path": hit.path})
    return 401, f"denied: {hit.headers['authorization']}"


def test_secrets_are_stored_masked_in_every_form_and_shown_masked(tmp_path: Path) -> None:
    sink = Sink(echo)
    secret_forms = SHOWN_FORMS
    env = {"CRM_TOKEN": SECRET}
    h = Harness(tmp_path, SECRET_RULES.replace("SINK", sink.url), environ=env, config="http: {allow_private: true}\n")
    try:
        run = h.finished_run(h.put("go", {}))
        # A sender's event that holds the secret JSON-escaped in a string: stored as received
        sent = h.put("note", {"note": json.dumps({"token": SECRET})})
        steps_ = {s["id"]: s for s in h.store.steps_of_run(run["id"])}
        assert steps_["echo"]["output"]["json"]["got"] == {"token": MASK}  # outputs are stored masked ...
        assert steps_["later"]["output"]["mode"] == f"seen {MASK}"  # ... so later steps see the mask
        assert run["status"] == "dead" and run["error"].endswith(f"denied: Basic {MASK} (expected 2xx)")
        emitted = h.store.get_event(steps_["emit"]["output"]["event_id"])
        assert emitted is not None and emitted["body"]["token"] == MASK
        assert len(h.wait(lambda: sink.hits if len(sink.hits) == 2 else None)) == 2  # the target got the real values
        assert sink.hits[0].json() == {"token": SECRET}
    finally:
        h.close()
        sink.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("store.db*"))
    assert sent.encode() in stored and [f for f in secret_forms if f.encode() in stored] == []

    def hookwise(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "engine", *args, "-c", str(tmp_path / "config.yaml")], capture_output=True,
            text=True,
            timeout=60, env={**os.environ, **env, "PYTHONPATH": str(tmp_path / "plugins")}, cwd=tmp_path, check=True,
        ).stdout

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        api = [operations.event_detail(h.current(), store, e) for e in (run["event_id"], sent)]
    finally:
        store.close()
    values = api + [
        json.loads(hookwise(*args, "--json")) for args in (("runs", "show", run["id"]), ("events", "show", sent))
    ]
    shown = [strings(v) for v in values] + [hookwise("runs", "show", run["id"]), hookwise("events", "show", sent)]
    assert "note" in shown[1] and [f for f in secret_forms for text in shown if f in text] == []


def strings(value: Any) -> str:
    """Every string in a JSON-like value (keys too), one a line."""
    if isinstance(value, dict):
        return "\n".join(strings(k) + "\n" + strings(v) for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(strings(v) for v in value)
    return value if isinstance(value, str) else ""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    return "sqlite:///store.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_a_result_that_cannot_be_stored_is_a_failed_attempt(store_url: str, harness: Callable[..., Harness]) -> None:
    # (store_url first: the schema is dropped after the worker has stopped)
    # The target is called and answers, but the step's rendered params hold a lone surrogate
    # that no store can write as text: each attempt fails with that error, and the step
    # runs no more times than its attempts. The other rules' steps are recorded as usual.
    sink = Sink()
    try:
        h = harness(f"""
rules:
  - name: echo
    event: go
    actions:
      - retry: {{attempts: 2, backoff: 10ms, max_backoff: 10ms}}
        http: {{method: POST, url: "{sink.url}/echo", json: {{text: '{{{{ "\\udfff" }}}}'}}}}
  - name: odd
    event: go
    actions: [{{retry: {{attempts: 1}}, crashy: {{mode: surrogate}}}}]
  - name: fine
    event: go
    actions: [{{crashy: {{mode: ok}}}}]
""", store=store_url, config="http: {allow_private: true}\n")
        event_id = h.put("go", {})
        echo, odd, fine = (h.finished_run(event_id, rule) for rule in ("echo", "odd", "fine"))
        assert echo["status"] == odd["status"] == "dead" and fine["status"] == "succeeded"
        assert echo["error"].startswith("the step's result cannot be stored: ")
        assert "surrogates not allowed" in echo["error"]
        assert [(s["status"], s["attempt"]) for s in h.store.steps_of_run(echo["id"])] == [("dead", 2)]
        assert len(sink.hits) == 2  # once per attempt
        assert [c for c in h.plugin.CALLS if c[2] == "surrogate"] == [(f"{odd['id']}-0", 1, "surrogate")]
        assert h.store.steps_of_run(fine["id"])[0]["output"]["mode"] == "ok"
    finally:
        sink.close()


class FailingOnce:
    """The store, whose first ``record_steps`` fails as a store that is down does."""

    def __init__(self, store: Store) -> None:
        self._store, self.failed = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record_steps(self, results: Any) -> Any:
        if not self.failed:
            self.failed += 1
            raise StoreError("store write failed: disk I/O error")
        return self._store.record_steps(results)


def test_results_the_store_cannot_take_now_are_recorded_later(harness: Callable[..., Harness]) -> None:
    h = harness("rules:\n  - name: r\n    event: go\n    actions: [{crashy: {mode: ok}}]\n", wrap=FailingOnce)
    run = h.finished_run(h.put("go", {}))
    assert run["status"] == "succeeded"
    assert [c[1] for c in h.plugin.CALLS] == [1]  # run once: kept, not left to run again when its claim ran out


def test_actions_live_with_their_config_and_are_closed_when_it_is_retired_and_idle(
    harness: Callable[..., Harness]
) -> None:
    h = harness(
        "rules:\n  - {name: r, event: go, actions: [{crashy: {mode: hold}}]}\n"
        "  - {name: q, event: quick, actions: [{crashy: {mode: ok}}]}\n"
    )
    running = h.put("go", {})
    h.started()
    config = h.root / "config.yaml"
    config.write_text(config.read_text() + "http: {timeout: 7s}\n")
    h.current.swap(load(config, {}))  # a reload, while a step runs with the old config's action
    (old,) = h.plugin.MADE
    assert h.plugin.CLOSED == []  # its step still uses it
    h.let_go()
    h.finished_run(running)
    h.wait(lambda: h.plugin.CLOSED == [old])
    h.finished_run(h.put("quick", {}))
    (_, new) = h.plugin.MADE
    assert new.settings.http.timeout == 7.0 and old.settings.http.timeout != 7.0  # made from the new settings
    assert h.plugin.CLOSED == [old]
    h.worker.stop(5)
    h.current.close()  # the process stops
    assert h.plugin.CLOSED == [old, new]


def test_the_hover_client_is_closed_when_a_reload_replaces_it_and_when_the_worker_stops(
    harness: Callable[..., Harness],
) -> None:
    with FakeHover() as fake:
        fake.add_job(42)
        hover = (f"hover: {{base_url: '{fake.url}', client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET}, "
                 f"redirect_uri: '{REDIRECT_URI}'}}\n")
        h = harness("rules:\n  - {name: r, event: go, actions: [{hover: {path: /api/v3/jobs/42}}]}\n", config=hover)
        login = HoverClient(h.current().config.settings.hover, h.store)
        login.tokens.exchange_code(fake.authorize())
        login.close()
        assert h.finished_run(h.put("go", {}))["status"] == "succeeded"
        with h.worker.hover.use(h.current().config.settings.hover) as first:  # the client that step used
            pass
        config = h.root / "config.yaml"
        config.write_text(config.read_text().replace(f"client_id: {CLIENT_ID}", "client_id: another-client"))
        h.current.swap(load(config, {}))  # a reload that changes the hover: settings
        assert h.finished_run(h.put("go", {}))["status"] == "succeeded"
        with pytest.raises(Retry, match="the client is closed"):
            first.request("GET", "/api/v3/jobs/42", timeout=5)
        with h.worker.hover.use(h.current().config.settings.hover) as second:
            assert second is not first
        h.worker.stop(5)
        with pytest.raises(Retry, match="the client is closed"):
            second.request("GET", "/api/v3/jobs/42", timeout=5)
        assert [c.status for c in fake.api_calls("/api/v3/jobs/42")] == [200, 200]
