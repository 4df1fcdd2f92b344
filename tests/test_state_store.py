"""Stateful rules on both stores (SPEC 14): throttle, threshold, absence timers and order_by,
applied where the event's matches are recorded, with time moved by an injected clock.

Real rules (loaded from YAML), the real worker's matching, a real SQLite file and the
real PostgreSQL server; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.rules.loader import Loaded, load
from engine.run.matching import match_event
from engine.run.runs import StepResult
from engine.run.worker import Worker
from engine.store import Incoming, Store, open_store

from .support import Clock
from .test_postgres_store import in_threads, pg_database, pg_url  # noqa: F401  (fixtures)

RULES = """\
rules:
  - name: one-email
    event: job-state-changed-v2
    when: {state: complete}
    throttle: {key: "{{ event.customer.email }}", once_within: 1h}
    actions: [{log: {message: "mail {{ event.customer.email }}"}}]
  - name: keeps-failing
    event: job-state-changed-v2
    when: {state: failed}
    threshold: {key: "{{ event.job_id }}", count: 3, within: 1d}
    actions: [{log: {message: "escalate {{ event.job_id }}"}}]
  - name: stuck
    absence:
      after: {event: job-state-changed-v2, when: {state: processing}}
      expect: {event: job-state-changed-v2, when: {state: complete}}
      key: "{{ event.job_id }}"
      within: 3d
    actions: [{log: {message: "stuck {{ event.key }} since {{ event.after.id }}"}}]
  - name: crm
    event: crm
    order_by: "{{ event.job_id }}"
    actions: [{log: {message: "push {{ event.job_id }} {{ event.n }}"}}, {log: {message: second}}]
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def loaded(project: Callable[..., Path]) -> Loaded:
    return load(project(RULES))


@pytest.fixture
def worker(store: Store, loaded: Loaded, clock: Clock) -> Worker:
    return Worker(store, lambda: loaded, clock=clock)


def send(store: Store, clock: Clock, body: dict[str, Any], type_: str = "job-state-changed-v2") -> str:
    (stored,) = store.put_events([Incoming("hover", type_, json.dumps(body), {}, {}, clock())])
    return stored.event_id


def match(store: Store, worker: Worker, loaded: Loaded, claim: int = 0) -> list[Any]:
    _, tasks = store.match_events(
        256, lambda events: [match_event(loaded, e) for e in events], event_lease=10, claim=claim, lease=60,
        serial=True,
    )
    return tasks


def reason(store: Store, event_id: str, rule: str) -> str:
    event = store.get_event(event_id)
    assert event is not None
    return next(str(e["reason"]) for e in event["explain"] if e["rule"] == rule)


def rules_run(store: Store, event_id: str) -> list[str]:
    return sorted(r["rule"] for r in store.runs_of_event(event_id))


def test_throttle_skips_later_matches_of_a_key_and_says_until_when(
    store: Store, worker: Worker, loaded: Loaded, clock: Clock
) -> None:
    ada = {"job_id": 1, "state": "complete", "customer": {"email": "ada@example.com"}}
    first = send(store, clock, ada)
    match(store, worker, loaded)
    assert rules_run(store, first) == ["one-email"]
    (run,) = store.runs_of_event(first)
    clock.advance(1800)
    second = send(store, clock, {**ada, "job_id": 2})
    other = send(store, clock, {**ada, "customer": {"email": "bob@example.com"}})
    match(store, worker, loaded)
    assert rules_run(store, second) == [] and rules_run(store, other) == ["one-email"]
    assert reason(store, second, "one-email").startswith("no: throttled until ")
    assert f"by run {run['id']}" in reason(store, second, "one-email")
    throttled = store.rule_state("one-email")["throttled"]
    assert sorted(t["key"] for t in throttled) == ["ada@example.com", "bob@example.com"]
    clock.advance(1801)  # the hour since the first run has passed
    third = send(store, clock, ada)
    match(store, worker, loaded)
    assert rules_run(store, third) == ["one-email"]


def test_threshold_fires_on_the_count_th_within_the_window_then_starts_over(
    store: Store, worker: Worker, loaded: Loaded, clock: Clock
) -> None:
    failed = {"job_id": 7, "state": "failed"}
    ids = []
    for _ in range(2):
        ids.append(send(store, clock, failed))
        match(store, worker, loaded)
        clock.advance(3600)
    assert reason(store, ids[1], "keeps-failing") == "no: 2 of 3 within 1d (key '7')"
    assert store.rule_state("keeps-failing")["counters"][0]["count"] == 2
    ids.append(send(store, clock, failed))
    match(store, worker, loaded)
    assert rules_run(store, ids[2]) == ["keeps-failing"]
    assert reason(store, ids[2], "keeps-failing") == "yes: 3 of 3 within 1d (key '7')"
    ids.append(send(store, clock, failed))  # starts over
    match(store, worker, loaded)
    assert reason(store, ids[3], "keeps-failing") == "no: 1 of 3 within 1d (key '7')"
    clock.advance(86400 + 1)  # the window slides past it
    ids.append(send(store, clock, failed))
    match(store, worker, loaded)
    assert reason(store, ids[4], "keeps-failing") == "no: 1 of 3 within 1d (key '7')"


def test_an_event_is_counted_once_even_when_recorded_twice(store: Store, loaded: Loaded, worker: Worker,
                                                           clock: Clock) -> None:
    event_id = send(store, clock, {"job_id": 9, "state": "failed"})
    events = store.claim_events(10, 10)
    matched = [match_event(loaded, e) for e in events]
    store.record_matches(matched)
    store.record_matches(matched)  # a worker whose claim ran out records it again
    assert store.rule_state("keeps-failing")["counters"][0]["count"] == 1
    assert reason(store, event_id, "keeps-failing") == "no: 1 of 3 within 1d (key '9')"


def test_an_absence_timer_fires_once_when_nothing_came_in_time(
    store: Store, worker: Worker, loaded: Loaded, clock: Clock
) -> None:
    after = send(store, clock, {"job_id": 5, "state": "processing"})
    match(store, worker, loaded)
    assert "absence timer for key '5' started, due" in reason(store, after, "stuck")
    assert store.fire_timers() == 0
    clock.advance(3 * 86400 - 1)
    assert store.fire_timers() == 0
    clock.advance(2)
    assert store.fire_timers() == 1 and store.fire_timers() == 0
    match(store, worker, loaded)
    (fired,) = [e for e in store.list_events() if e["type"] == "rule.absence"]
    assert fired["source"] == "hookwise" and rules_run(store, fired["id"]) == ["stuck"]
    body = store.get_event(fired["id"])["body"]  # type: ignore[index]
    assert body["rule"] == "stuck" and body["key"] == "5" and body["after"]["id"] == after
    assert body["after"]["body"] == {"job_id": 5, "state": "processing"}
    (timer,) = store.rule_state("stuck")["timers"]
    assert timer["status"] == "fired" and timer["ended_by"] == fired["id"]


def test_an_expect_in_time_cancels_the_timer(store: Store, worker: Worker, loaded: Loaded, clock: Clock) -> None:
    send(store, clock, {"job_id": 5, "state": "processing"})
    send(store, clock, {"job_id": 6, "state": "processing"})
    match(store, worker, loaded)
    clock.advance(86400)
    done = send(store, clock, {"job_id": 5, "state": "complete", "customer": {"email": "a@b.c"}})
    match(store, worker, loaded)
    assert reason(store, done, "stuck") == "no: absence timer for key '5' cancelled: the expected event came in time"
    clock.advance(3 * 86400)
    assert store.fire_timers() == 1  # job 6's only
    match(store, worker, loaded)
    (fired,) = [e for e in store.list_events() if e["type"] == "rule.absence"]
    assert store.get_event(fired["id"])["body"]["key"] == "6"  # type: ignore[index]


def test_a_second_after_keeps_the_first_deadline(store: Store, worker: Worker, loaded: Loaded, clock: Clock) -> None:
    send(store, clock, {"job_id": 5, "state": "processing"})
    match(store, worker, loaded)
    clock.advance(86400)
    again = send(store, clock, {"job_id": 5, "state": "processing"})
    match(store, worker, loaded)
    assert "already pending" in reason(store, again, "stuck")
    clock.advance(2 * 86400 + 1)
    assert store.fire_timers() == 1


def _finish(store: Store, worker: Worker, task: Any, clock: Clock, ok: bool = True) -> None:
    rule = worker.runner.rule(task)
    assert rule is not None
    result = StepResult(task=task, outcome="succeeded" if ok else "failed", error=None if ok else "boom",
                        started_at=clock(), finished_at=clock(), step_count=len(rule.steps),
                        next_delay=0.0, ordered=True)
    store.record_steps([result])


def run_all(store: Store, worker: Worker, clock: Clock, started: list[str], fail: set[str] = frozenset()) -> None:
    """Claim and finish steps until none is due; ``started`` gets each run's first step, in order."""
    while tasks := store.claim_steps(100, 60):
        for task in tasks:
            if task.index == 0:
                started.append(task.run_id)
            _finish(store, worker, task, clock, ok=task.run_id not in fail)


def test_order_by_runs_one_key_at_a_time_in_arrival_order(
    store: Store, worker: Worker, loaded: Loaded, clock: Clock
) -> None:
    order = [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1)]
    ids = {send(store, clock, {"job_id": k, "n": n}, type_="crm"): (k, n) for k, n in order}
    match(store, worker, loaded)
    runs = {r["id"]: r for r in store.list_runs(limit=100)}
    assert sorted(r["status"] for r in runs.values()) == ["active", "active", "waiting", "waiting", "waiting"]
    waiting = [r for r in runs.values() if r["status"] == "waiting"]
    assert all(r["error"].startswith("waiting for run ") for r in waiting)
    tasks = store.claim_steps(100, 60)
    assert sorted(ids[store.get_run(t.run_id)["event_id"]] for t in tasks) == [("a", 0), ("b", 0)]  # type: ignore[index]
    started = [t.run_id for t in tasks]
    for t in tasks:
        _finish(store, worker, t, clock)
    run_all(store, worker, clock, started)
    arrivals = [ids[store.get_run(r)["event_id"]] for r in started]  # type: ignore[index]
    assert [n for k, n in arrivals if k == "a"] == [0, 1, 2] and [n for k, n in arrivals if k == "b"] == [0, 1]
    assert {r["status"] for r in store.list_runs(limit=100)} == {"succeeded"}


def test_a_dead_run_holds_its_key_until_skipped(store: Store, worker: Worker, loaded: Loaded, clock: Clock) -> None:
    first = send(store, clock, {"job_id": "a", "n": 0}, type_="crm")
    second = send(store, clock, {"job_id": "a", "n": 1}, type_="crm")
    match(store, worker, loaded)
    (run1,), (run2,) = store.runs_of_event(first), store.runs_of_event(second)
    started: list[str] = []
    run_all(store, worker, clock, started, fail={run1["id"]})
    assert started == [run1["id"]]
    assert store.get_run(run1["id"])["status"] == "dead"  # type: ignore[index]
    assert store.get_run(run2["id"])["status"] == "waiting"  # type: ignore[index]
    assert store.run_waiting_for(run2["id"]) == {"key": "a", "run_id": run1["id"], "status": "dead"}
    assert store.skip_run(run2["id"] + "x") is None
    skipped = store.skip_run(run1["id"])
    assert skipped is not None and skipped["status"] == "skipped"
    run_all(store, worker, clock, started)
    assert started == [run1["id"], run2["id"]]
    assert store.get_run(run2["id"])["status"] == "succeeded"  # type: ignore[index]


def test_a_retried_dead_run_lets_the_next_go_when_it_succeeds(
    store: Store, worker: Worker, loaded: Loaded, clock: Clock
) -> None:
    first = send(store, clock, {"job_id": "a", "n": 0}, type_="crm")
    second = send(store, clock, {"job_id": "a", "n": 1}, type_="crm")
    match(store, worker, loaded)
    (run1,), (run2,) = store.runs_of_event(first), store.runs_of_event(second)
    started: list[str] = []
    run_all(store, worker, clock, started, fail={run1["id"]})
    assert store.retry_run(run1["id"]) is not None
    assert store.get_run(run2["id"])["status"] == "waiting"  # type: ignore[index]
    run_all(store, worker, clock, started)
    assert started == [run1["id"], run1["id"], run2["id"]]


def test_state_is_pruned_by_retention(store: Store, worker: Worker, loaded: Loaded, clock: Clock) -> None:
    send(store, clock, {"job_id": 1, "state": "complete", "customer": {"email": "a@b.c"}})
    send(store, clock, {"job_id": 1, "state": "failed"})
    match(store, worker, loaded)
    assert store.rule_state("one-email")["throttled"] and store.rule_state("keeps-failing")["counters"]
    clock.advance(2 * 86400)
    counts = store.prune(clock() - 86400)
    assert counts["state"] == 2
    assert not store.rule_state("one-email")["throttled"] and not store.rule_state("keeps-failing")["counters"]


def test_order_with_shuffled_keys_holds_per_key(store: Store, worker: Worker, loaded: Loaded, clock: Clock) -> None:
    sequence = [(k, n) for n in range(20) for k in "xyz"]
    random.Random(4).shuffle(sequence)
    ids = {}
    for k, n in sequence:
        ids[send(store, clock, {"job_id": k, "n": n}, type_="crm")] = (k, n)
        if random.random() < 0.3:
            match(store, worker, loaded)
    match(store, worker, loaded)
    started: list[str] = []
    run_all(store, worker, clock, started)
    arrivals = [ids[store.get_run(r)["event_id"]] for r in started]  # type: ignore[index]
    for key in "xyz":
        assert [n for k, n in arrivals if k == key] == [n for k, n in sequence if k == key]
