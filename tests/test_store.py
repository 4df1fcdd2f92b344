"""The store contract, on a real SQLite file."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.events import Event
from engine.run.runs import StepResult, StepTask
from engine.store import Incoming, Matched, NewRun, Store, open_store

from .conftest import FIXTURES
from .support import Clock


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}", clock=clock)
    yield s
    s.close()


def incoming(body: dict[str, object] | None = None, delivery: str | None = None, **kw: object) -> Incoming:
    return Incoming(  # type: ignore[arg-type]
        source="hover", type="t", body=json.dumps(body or {"a": 1}), headers={"x": "y"}, query={},
        received_at=time.time(), delivery_id=delivery, **kw,
    )


def new_run(event_id: str, rule: str = "r", steps: int = 2) -> NewRun:
    return NewRun(
        id=f"{event_id}-{rule}", rule=rule, version="v1", rule_file="f.yaml", rule_text="name: r",
        steps=[(i, f"s{i}", "log") for i in range(steps)]
    )


def result(task: StepTask, outcome: str = "succeeded", **kw: object) -> StepResult:
    return StepResult(task=task, outcome=outcome, finished_at=time.time(), **kw)  # type: ignore[arg-type]


def test_put_and_read_back(store: Store) -> None:
    (stored,) = store.put_events([incoming({"k": [1, 2]}, "d1")])
    assert not stored.duplicate
    event = store.get_event(stored.event_id)
    assert event is not None
    assert (event["body"], event["headers"], event["status"], event["delivery_id"]) == (
        {"k": [1, 2]}, {"x": "y"}, "pending", "d1"
    )


def test_delivery_ids_deduplicate_within_the_window_per_source(store: Store) -> None:
    first, again, other_source = store.put_events(
        [incoming(delivery="d1"), incoming(delivery="d1"), Incoming("github", "t", "{}", {}, {}, time.time(), "d1")]
    )
    assert not first.duplicate and again.duplicate and again.event_id == first.event_id
    assert not other_source.duplicate
    (expired,) = store.put_events([incoming(delivery="d2", dedupe_window=0.0)])
    (after,) = store.put_events([incoming(delivery="d2")])
    assert not after.duplicate and after.event_id != expired.event_id
    assert len(store.list_events()) == 4


def test_a_large_batch_is_stored_whole_and_a_late_duplicate_in_it_is_found(store: Store) -> None:
    # 300 events: more than one multi-row statement takes (128 + 128 + 32 + 8 + 4).
    items = [incoming({"n": n}, f"d{n}") for n in range(299)] + [incoming(delivery="d7")]
    stored = store.put_events(items)
    assert [s.duplicate for s in stored] == [False] * 299 + [True]
    assert stored[-1].event_id == stored[7].event_id
    assert len(store.list_events(limit=1000)) == 299
    assert store.get_event(stored[298].event_id)["body"] == {"n": 298}  # type: ignore[index]
    fresh = store.put_events([incoming({"m": n}, f"e{n}") for n in range(300)])
    assert not any(s.duplicate for s in fresh) and len({s.event_id for s in fresh}) == 300
    assert len(store.list_events(limit=1000)) == 599


def test_claimed_events_are_hidden_until_the_lease_ends(store: Store, clock: Clock) -> None:
    store.put_events([incoming(), incoming()])
    assert len(store.claim_events(10, lease=20)) == 2
    clock.advance(19.9)
    assert store.claim_events(10, lease=20) == []
    clock.advance(0.2)
    assert len(store.claim_events(10, lease=60)) == 2


def test_a_delayed_event_waits(store: Store, clock: Clock) -> None:
    store.put_events([incoming(available_at=clock() + 60)])
    assert store.claim_events(10, 60) == []
    assert store.next_due() == clock() + 60
    clock.advance(59.9)
    assert store.claim_events(10, 60) == []
    clock.advance(0.1)
    assert len(store.claim_events(10, 60)) == 1


def test_one_run_per_event_and_rule_even_when_matched_twice(store: Store) -> None:
    (stored,) = store.put_events([incoming()])
    (event,) = store.claim_events(10, 60)
    match = Matched(event.id, [{"rule": "r", "matched": True}], [new_run(event.id)])
    store.record_matches([match])
    store.record_matches([match])  # a second worker whose claim had run out
    runs = store.runs_of_event(stored.event_id)
    assert [r["status"] for r in runs] == ["active"]
    assert [s["status"] for s in store.steps_of_run(runs[0]["id"])] == ["ready", "waiting"]
    record = store.get_event(stored.event_id)
    assert record is not None and record["status"] == "matched" and record["explain"] == [
        {"rule": "r", "matched": True}
    ]
    assert store.rule_text("v1") == ("r", "f.yaml", "name: r")


def test_shadow_runs_are_marked_and_listed_apart(store: Store) -> None:
    store.put_events([incoming()])
    (event,) = store.claim_events(10, 60)
    shadow = dataclasses.replace(new_run(event.id, "s"), shadow=True)
    store.record_matches([Matched(event.id, [], [new_run(event.id, "live"), shadow])])
    assert {r["rule"]: r["shadow"] for r in store.runs_of_event(event.id)} == {"live": False, "s": True}
    assert [r["rule"] for r in store.list_runs(shadow=True)] == ["s"]
    assert [r["rule"] for r in store.list_runs(shadow=False)] == ["live"]
    assert len(store.list_runs()) == 2
    run = store.get_run(f"{event.id}-s")
    assert run is not None and run["shadow"] is True


def test_scan_events_pages_a_window_in_order_and_samples_bodies(store: Store) -> None:
    now = time.time()
    store.put_events([
        dataclasses.replace(incoming({"n": n}), received_at=now + n, source="github" if n == 2 else "hover")
        for n in range(5)
    ])
    (first, *_) = store.claim_events(1, 60)
    store.record_matches([Matched(first.id, [{"rule": "r", "matched": False}])])
    page = store.scan_events(since=now + 1, until=now + 4, limit=2)
    assert [event.body for _, event, _ in page] == [{"n": 1}, {"n": 2}]
    rest = store.scan_events(since=now + 1, until=now + 4, after=page[-1][0])
    assert [(event.body, explain) for _, event, explain in rest] == [({"n": 3}, None)]
    scanned = store.scan_events(since=now, source="hover", type="t")
    assert [(e.body, x) for _, e, x in scanned[:2]] == [({"n": 0}, [{"rule": "r", "matched": False}]), ({"n": 1}, None)]
    assert len(scanned) == 4 and all(isinstance(e, Event) for _, e, _ in scanned)
    assert store.sample_bodies("hover", "t", 2) == [{"n": 4}, {"n": 3}]
    assert store.sample_bodies("github", "t") == [{"n": 2}] and store.sample_bodies("github", "x") == []


def matched_run(store: Store, steps: int = 2) -> str:
    store.put_events([incoming()])
    (event,) = store.claim_events(10, 60)
    store.record_matches([Matched(event.id, [], [new_run(event.id, steps=steps)])])
    return f"{event.id}-r"


def test_steps_run_in_order_and_outputs_reach_later_steps(store: Store) -> None:
    run_id = matched_run(store)
    (first,) = store.claim_steps(10, 60)
    assert (first.index, first.attempt, first.outputs) == (0, 1, {})
    assert store.claim_steps(10, 60) == []  # the second waits for the first
    store.record_steps([result(first, output={"n": 1})])
    (second,) = store.claim_steps(10, 60)
    assert (second.index, second.outputs) == (1, {"s0": {"n": 1}})
    assert second.event.body == {"a": 1} and second.idempotency_key == f"{run_id}-1"
    store.record_steps([result(second, "skipped")])
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "succeeded"
    assert [s["status"] for s in store.steps_of_run(run_id)] == ["succeeded", "skipped"]


def test_a_retry_makes_the_step_due_later_then_dead_ends_the_run(store: Store, clock: Clock) -> None:
    run_id = matched_run(store)
    (task,) = store.claim_steps(10, 60)
    store.record_steps([result(task, "failed", error="boom", retry_in=30)])
    assert store.steps_of_run(run_id)[0]["due_at"] == clock() + 30
    clock.advance(29.9)
    assert store.claim_steps(10, 60) == []
    clock.advance(0.1)
    (again,) = store.claim_steps(10, 60)
    assert again.attempt == 2
    store.record_steps([result(again, "failed", error="still boom")])
    run = store.get_run(run_id)
    assert run is not None and (run["status"], run["error"]) == ("dead", "still boom")
    assert [r["id"] for r in store.list_runs("dead")] == [run_id]
    assert store.steps_of_run(run_id)[1]["status"] == "waiting"


def test_a_result_the_store_cannot_hold_fails_alone(store: Store) -> None:
    bad, good, late = matched_run(store, steps=1), matched_run(store, steps=1), matched_run(store, steps=1)
    tasks = {t.run_id: t for t in store.claim_steps(10, 60)}
    results = [result(tasks[bad], output={"text": "lone \udfff"}), result(tasks[good], output={"ok": True}),
               result(tasks[late], "failed", error="boom", params={"p": "\udfff"})]
    unrecorded = store.record_steps(results)
    assert [u.result for u in unrecorded] == [results[0], results[2]]
    assert all("surrogates not allowed" in u.reason for u in unrecorded)
    assert store.steps_of_run(good)[0]["output"] == {"ok": True}  # the others of the batch are recorded
    assert [store.get_run(r)["status"] for r in (bad, good, late)] == ["active", "succeeded", "active"]  # type: ignore[index]
    assert [store.steps_of_run(r)[0]["status"] for r in (bad, late)] == ["running", "running"]  # left for the caller
    assert store.record_steps([result(tasks[bad], "failed", error="its result cannot be stored")]) == []
    assert store.get_run(bad)["error"] == "its result cannot be stored"  # type: ignore[index]


def test_continue_on_error_moves_on(store: Store) -> None:
    run_id = matched_run(store)
    (task,) = store.claim_steps(10, 60)
    store.record_steps([result(task, "failed", error="x", continue_on_error=True)])
    (nxt,) = store.claim_steps(10, 60)
    assert nxt.index == 1 and nxt.outputs == {}
    assert store.steps_of_run(run_id)[0]["status"] == "failed"


def test_an_expired_step_claim_is_taken_again_and_the_late_result_ignored(store: Store, clock: Clock) -> None:
    run_id = matched_run(store, steps=1)
    (lost,) = store.claim_steps(10, lease=15)
    clock.advance(14.9)
    assert store.claim_steps(10, 60) == []
    clock.advance(0.1)
    (again,) = store.claim_steps(10, 60)
    assert again.attempt == 2 and again.idempotency_key == lost.idempotency_key
    store.record_steps([result(lost, output={"from": "the lost worker"})])  # ignored: not its claim any more
    assert store.steps_of_run(run_id)[0]["status"] == "running"
    store.record_steps([result(again, output={"from": "the live worker"})])
    assert store.steps_of_run(run_id)[0]["output"] == {"from": "the live worker"}


def test_the_step_delay_is_honoured(store: Store, clock: Clock) -> None:
    matched_run(store)
    (task,) = store.claim_steps(10, 60)
    store.record_steps([result(task, next_delay=60.0)])
    clock.advance(59.9)
    assert store.claim_steps(10, 60) == []
    clock.advance(0.1)
    (second,) = store.claim_steps(10, 60)
    assert second.index == 1


def test_an_emitted_event_is_stored_once(store: Store) -> None:
    item = incoming(id="fixed-id", depth=1)
    (a,) = store.put_events([item])
    (b,) = store.put_events([item])
    assert not a.duplicate and b.duplicate and a.event_id == b.event_id == "fixed-id"


def test_events_come_back_as_events(store: Store) -> None:
    store.put_events([incoming({"x": 1}, "d9")])
    (event,) = store.claim_events(1, 60)
    assert isinstance(event, Event) and event.body == {"x": 1} and event.delivery_id == "d9"
    assert event.received_at.tzinfo is not None


def test_an_older_file_is_upgraded_and_loses_its_phantom_webhooks(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    open_store(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    with db:  # what the first release left: no verify_method, no hover_logins, a row made by an event alone
        db.execute("ALTER TABLE hover_webhooks DROP COLUMN verify_method")
        db.execute("DROP TABLE hover_logins")
        db.execute("DROP INDEX events_received")
        db.execute("INSERT INTO hover_webhooks (webhook_id, url, updated_at) VALUES ('1', 'https://h/1', 1)")
        db.execute("INSERT INTO hover_webhooks (webhook_id, verified_at, updated_at) VALUES ('2', 5, 1)")
        db.execute(
            "INSERT INTO hover_webhooks (webhook_id, last_error, updated_at) VALUES ('230293', 'not logged in', 1)"
        )
    db.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert sorted(w["webhook_id"] for w in store.hover_webhooks()) == ["1", "2"]
        store.save_hover_webhook("1", verify_method="POST")
        assert [w["verify_method"] for w in store.hover_webhooks() if w["webhook_id"] == "1"] == ["POST"]
        store.begin_hover_login("s", 60)
        assert store.take_hover_login("s") == "default"
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        index = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'events_received'"
        assert db.execute(index).fetchall() == [(1,)]
    finally:
        db.close()


def test_events_per_minute_counts_the_window_by_source(store: Store) -> None:
    minute = 29_000_000  # a whole minute, in minutes since the epoch
    at = minute * 60.0
    store.put_events([
        Incoming("hover", "t", "{}", {}, {}, at - 1),  # before the window
        Incoming("hover", "t", "{}", {}, {}, at + 5), Incoming("hover", "t", "{}", {}, {}, at + 59),
        Incoming("github", "push", "{}", {}, {}, at + 30), Incoming("hover", "t", "{}", {}, {}, at + 60),
    ])
    assert store.events_per_minute(at) == [("github", minute, 1), ("hover", minute, 2), ("hover", minute + 1, 1)]
    assert store.events_per_minute(at + 3600) == []


def test_run_status_counts_and_retrying_steps(store: Store, clock: Clock) -> None:
    dead, retrying, fine = matched_run(store, steps=1), matched_run(store, steps=1), matched_run(store, steps=1)
    tasks = {t.run_id: t for t in store.claim_steps(10, 60)}
    store.record_steps([
        result(tasks[dead], "failed", error="gone"),
        result(tasks[retrying], "failed", error="503 from the CRM", retry_in=60),
        result(tasks[fine], step_count=1),
    ])
    assert store.run_status_counts() == {"dead": 1, "active": 1, "succeeded": 1}
    (step,) = store.retrying_steps()
    assert (step["run_id"], step["rule"], step["index"], step["id"], step["attempt"], step["error"]) == (
        retrying, "r", 0, "s0", 1, "503 from the CRM")
    assert step["due_at"] == clock() + 60 and step["event_id"] == retrying[: -len("-r")]
    assert store.retrying_steps(limit=0) == []


#: A time soon after the stores of tests/fixtures/store were made.
MADE_AT = Clock(1_700_000_100.0)


def check_made_before_the_core(store: Store) -> None:
    """What a store made by hookwise before the store core holds (tests/fixtures/store/*),
    read and changed by this version: events, runs and steps, a queue item, the Hover account."""
    try:
        events = store.list_events()
        assert [(e["source"], e["status"], e["runs"]) for e in events] == [("github", "matched", 1),
                                                                         ("hover", "matched", 1)]
        hover = store.get_event(events[1]["id"])
        assert hover is not None and (hover["body"], hover["headers"]) == ({"id": 7}, {"x": "y"})
        assert store.put_events([incoming(delivery="d1")])[0].duplicate  # its delivery ids still count
        runs = {r["event_id"]: r for r in store.list_runs()}
        assert sorted(r["status"] for r in runs.values()) == ["active", "dead"]
        assert not any(r["shadow"] for r in runs.values()) and store.list_runs(shadow=True) == []
        dead = next(r for r in runs.values() if r["status"] == "dead")
        assert store.retry_run(dead["id"]) is not None
        tasks = store.claim_steps(10, 60)
        assert sorted((t.index, t.outputs.get("s0")) for t in tasks) == [(0, None), (1, {"n": 1})]
        assert store.record_steps([result(t) for t in tasks]) == []
        assert {r["status"] for r in store.list_runs()} == {"active", "succeeded"}
        assert [i.key for i in store.list_queue_items("techs")] == ["k1"]
        assert store.claim_queue_item("techs", 60) is not None
        assert store.hover_tokens() is not None and store.hover_webhooks()[0]["verify_method"] == "POST"
        assert store.rule_text("v1") == ("r", "rules/r.yaml", "name: r")
    finally:
        store.close()


def test_a_file_made_before_the_store_core_opens_and_works_on(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript((FIXTURES / "store" / "sqlite_before_core.sql").read_text())
    db.close()
    check_made_before_the_core(open_store(f"sqlite:///{path}", clock=MADE_AT))


def test_one_batch_of_results_takes_every_path_of_the_step_state_machine(store: Store, clock: Clock) -> None:
    """Every outcome in one record_steps call (one statement per kind on PostgreSQL): each
    step and run ends as it would alone, and a stale claim in the batch changes nothing."""
    stale_run = matched_run(store)
    (lost,) = store.claim_steps(10, lease=15)
    clock.advance(15)
    (current,) = store.claim_steps(10, 600)  # the lost claim's step, claimed again
    names = ("next", "last", "retry", "deferred", "onward", "dead")
    runs = {name: matched_run(store, steps=1 if name == "last" else 2) for name in names}
    tasks = {t.run_id: t for t in store.claim_steps(10, 600)}
    assert set(tasks) == set(runs.values())
    store.record_steps([
        result(tasks[runs["next"]], output={"n": 1}, next_delay=30.0),
        result(tasks[runs["last"]], output={"n": 2}, step_count=1),
        result(tasks[runs["retry"]], "failed", error="503", retry_in=60.0),
        result(tasks[runs["deferred"]], "deferred", retry_in=90.0),
        result(tasks[runs["onward"]], "failed", error="ignored", continue_on_error=True),
        result(tasks[runs["dead"]], "failed", error="gone"),
        result(lost, output={"from": "the lost claim"}),
    ])
    runs["stale"] = stale_run
    got = {name: store.get_run(run) for name, run in runs.items()}
    assert {name: (r["status"], r["step"], r["error"]) for name, r in got.items() if r} == {
        "next": ("active", 1, None), "last": ("succeeded", 0, None), "retry": ("active", 0, None),
        "deferred": ("active", 0, None), "onward": ("active", 1, None), "dead": ("dead", 0, "gone"),
        "stale": ("active", 0, None),
    }
    steps = {name: [(s["status"], s["attempt"]) for s in store.steps_of_run(run)] for name, run in runs.items()}
    assert steps == {
        "next": [("succeeded", 1), ("ready", 0)], "last": [("succeeded", 1)], "retry": [("ready", 1), ("waiting", 0)],
        "deferred": [("ready", 0), ("waiting", 0)], "onward": [("failed", 1), ("ready", 0)],
        "dead": [("dead", 1), ("waiting", 0)], "stale": [("running", 2), ("waiting", 0)],
    }
    assert store.steps_of_run(stale_run)[0]["output"] is None  # the lost claim's result was dropped
    assert {t.run_id for t in store.claim_steps(10, 600)} == {runs["onward"]}  # the others wait for their delays
    clock.advance(90)
    due = {t.run_id: t for t in store.claim_steps(10, 60)}
    assert set(due) == {runs["next"], runs["retry"], runs["deferred"]}
    assert due[runs["next"]].outputs == {"s0": {"n": 1}} and due[runs["deferred"]].attempt == 1
    assert store.record_steps([result(current)]) == []  # the live claim's result counts
    assert store.steps_of_run(stale_run)[0]["status"] == "succeeded"
