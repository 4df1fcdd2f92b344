"""The store contract on both backends, and what only the PostgreSQL store promises: claims
that never overlap across processes, one run per (event, rule) under a race, a Hover lock
that holds across processes, a schema created safely by processes starting together,
leases judged by the database's clock, and LISTEN/NOTIFY wake-ups.

The PostgreSQL server is the one on the machine (``HOOKWISE_TEST_POSTGRES``, by default
``postgresql://postgres@127.0.0.1:5432/hookwise_test``; the database is created if missing);
each test gets a schema of its own. Without a server these tests skip, unless ``CI`` is set:
then they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoreError
from engine.store import HoverTokens, Incoming, Matched, NewRun, Store, open_store
from tests.conftest import FIXTURES
from tests.support import POSTGRES_URL, Clock, NoPostgres, free_port, postgres_database

# The contract suites, collected again here: pytest resolves their ``store`` argument to the
# fixture of this module, so each runs on SQLite and on PostgreSQL.
from tests.test_queues import (  # noqa: F401
    requeue,
    test_a_repeated_request_counts_once,
    test_claim_lease_done_and_fail,
    test_failing_past_max_attempts_is_dead,
    test_past_max_attempts_the_item_is_dead_and_an_event_is_stored,
    test_same_key_updates_the_waiting_item_and_its_attempts_rise,
    test_the_requeue_action,
)
from tests.test_store import (  # noqa: F401
    MADE_AT,
    check_made_before_the_core,
    incoming,
    matched_run,
    new_run,
    result,
    test_a_delayed_event_waits,
    test_a_result_the_store_cannot_hold_fails_alone,
    test_a_retry_makes_the_step_due_later_then_dead_ends_the_run,
    test_an_emitted_event_is_stored_once,
    test_an_expired_step_claim_is_taken_again_and_the_late_result_ignored,
    test_claimed_events_are_hidden_until_the_lease_ends,
    test_continue_on_error_moves_on,
    test_delivery_ids_deduplicate_within_the_window_per_source,
    test_events_come_back_as_events,
    test_events_per_minute_counts_the_window_by_source,
    test_one_batch_of_results_takes_every_path_of_the_step_state_machine,
    test_one_run_per_event_and_rule_even_when_matched_twice,
    test_put_and_read_back,
    test_run_status_counts_and_retrying_steps,
    test_scan_events_pages_a_window_in_order_and_samples_bodies,
    test_shadow_runs_are_marked_and_listed_apart,
    test_steps_run_in_order_and_outputs_reach_later_steps,
    test_the_step_delay_is_honoured,
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_database() -> str:
    """The test database's URL, the database created if missing."""
    try:
        return postgres_database()
    except NoPostgres as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The URL of a fresh, empty schema of the test database."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{pg_database}{'&' if '?' in pg_database else '?'}options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Store]:
    """The store on each backend, its time given by ``clock`` (the database's clock is
    tested on its own below)."""
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url, clock=clock)
    yield s
    s.close()


@pytest.fixture
def two(pg_url: str) -> Iterator[tuple[Any, Any]]:
    """Two PostgreSQL stores on the same schema, as two processes would have."""
    from engine.store.postgres import PostgresStore

    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    yield a, b
    a.close()
    b.close()


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads started together; their results, or the first
    exception one raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def main(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=main, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


# --- more of the contract, on both backends ------------------------------------------------


def test_a_batch_is_stored_in_order_with_its_duplicates(store: Store) -> None:
    emitted = incoming(id="emitted-1", depth=1)
    items = [incoming(delivery="d1"), emitted, incoming(), incoming(delivery="d1"), emitted, incoming(delivery="d2")]
    out = store.put_events(items)
    assert [s.duplicate for s in out] == [False, False, False, True, True, False]
    assert out[3].event_id == out[0].event_id == items[0].id and out[4].event_id == "emitted-1"
    assert [e["id"] for e in store.list_events()] == [items[n].id for n in (5, 2, 1, 0)]
    assert store.put_events([]) == []


def test_record_matches_claims_first_steps_when_asked(store: Store) -> None:
    store.put_events([incoming(), incoming(), incoming()])
    events = store.claim_events(10, 60)
    runs = [
        new_run(events[0].id), new_run(events[1].id, steps=0),
        NewRun(id=f"{events[2].id}-late", rule="late", version="v2", rule_file="f.yaml", rule_text="name: late",
               steps=[(0, "s0", "log")], first_delay=60.0),
        new_run(events[2].id, rule="r2"),
    ]
    matches = [Matched(events[0].id, [], [runs[0]], events[0]), Matched(events[1].id, [], [runs[1]], events[1]),
               Matched(events[2].id, [], runs[2:], events[2])]
    tasks = store.record_matches(matches, claim=1, lease=60)
    assert [(t.run_id, t.index, t.attempt, t.event.id) for t in tasks] == [(runs[0].id, 0, 1, events[0].id)]
    assert store.steps_of_run(runs[0].id)[0]["status"] == "running"
    empty = store.get_run(runs[1].id)
    assert empty is not None and empty["status"] == "succeeded"
    (due,) = store.claim_steps(10, 60)  # the claimed step is not due again; the delayed one waits
    assert due.run_id == runs[3].id
    assert store.rule_text("v2") == ("late", "f.yaml", "name: late")


def test_match_events_matches_records_and_claims_in_one_call(store: Store) -> None:
    later = incoming(available_at=time.time() + 60)
    ids = [s.event_id for s in store.put_events([incoming({"n": 1}), incoming({"n": 2}), later])]
    seen: list[Any] = []

    def match(events: list[Any]) -> list[Matched]:
        seen.extend(events)
        return [Matched(e.id, [{"rule": "r", "matched": True}], [new_run(e.id)], e) for e in events]

    count, tasks = store.match_events(10, match, event_lease=60, claim=1, lease=60)
    assert count == 2 and [e.body for e in seen] == [{"n": 1}, {"n": 2}]  # the delayed one waits
    assert [(t.run_id, t.event.id) for t in tasks] == [(f"{ids[0]}-r", ids[0])]
    assert [e["status"] for e in store.list_events()] == ["pending", "matched", "matched"]
    assert store.get_event(ids[1])["explain"] == [{"rule": "r", "matched": True}]  # type: ignore[index]
    (due,) = store.claim_steps(10, 60)  # the second run's first step, not claimed by the call
    assert due.run_id == f"{ids[1]}-r"
    assert store.match_events(10, match, event_lease=60) == (0, [])


def test_an_exception_while_matching_leaves_the_events_to_a_later_claim(store: Store, clock: Clock) -> None:
    (stored,) = store.put_events([incoming()])

    def broken(events: list[Any]) -> list[Matched]:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        store.match_events(10, broken, event_lease=10)
    clock.advance(10)  # PostgreSQL's claim was taken for 10 s; SQLite's rolled back
    count, _ = store.match_events(10, lambda events: [Matched(e.id, [], [], e) for e in events], event_lease=60)
    assert count == 1 and store.get_event(stored.event_id)["status"] == "matched"  # type: ignore[index]


def test_extended_leases_keep_the_claim(store: Store, clock: Clock) -> None:
    run_id = matched_run(store, steps=1)
    (task,) = store.claim_steps(10, lease=15)
    clock.advance(10)
    store.extend_leases([task], 15)  # until 25 s from the claim
    clock.advance(14.9)
    assert store.claim_steps(10, 60) == []
    clock.advance(0.1)
    (again,) = store.claim_steps(10, 60)  # a lease not renewed runs out
    assert again.attempt == 2
    store.record_steps([result(again, output=1)])
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "succeeded"


def test_a_deferred_step_is_due_later_without_spending_its_attempt(store: Store, clock: Clock) -> None:
    run_id = matched_run(store, steps=1)
    (task,) = store.claim_steps(10, 60)
    assert task.attempt == 1
    store.record_steps([result(task, "deferred", retry_in=300.0)])
    assert store.claim_steps(10, 60) == []  # not due yet
    (step,) = store.steps_of_run(run_id)
    assert (step["status"], step["attempt"], step["error"]) == ("ready", 0, None)
    assert store.next_due() == clock() + 300  # by the store's clock
    store.record_steps([result(task, "deferred", retry_in=0.0)])  # a stale claim changes nothing
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "active"
    clock.advance(300)
    (again,) = store.claim_steps(10, 60)
    assert (again.run_id, again.attempt) == (task.run_id, 1)


def test_a_step_deferred_now_is_claimed_again_with_the_same_attempt(store: Store) -> None:
    matched_run(store, steps=1)
    (task,) = store.claim_steps(10, 60)
    store.record_steps([result(task, "deferred", retry_in=0.0)])
    (again,) = store.claim_steps(10, 60)
    assert (again.run_id, again.attempt) == (task.run_id, 1)


def test_next_due_sees_steps_too(store: Store, clock: Clock) -> None:
    assert store.next_due() is None
    matched_run(store)
    (task,) = store.claim_steps(10, 60)
    store.record_steps([result(task, next_delay=300.0)])
    assert store.next_due() == clock() + 300


def test_replay_makes_a_pending_copy(store: Store) -> None:
    (stored,) = store.put_events([incoming({"v": 1}, "d1")])
    copy = store.replay_event(stored.event_id, ["r"])
    assert copy is not None and copy != stored.event_id
    event = store.get_event(copy)
    assert event is not None
    assert (event["body"], event["delivery_id"], event["status"], event["replay_of"], event["only_rules"]) == (
        {"v": 1}, None, "pending", stored.event_id, ["r"]
    )
    (claimed,) = [e for e in store.claim_events(10, 60) if e.id == copy]
    assert claimed.replay_of == stored.event_id and claimed.only_rules == ("r",)
    assert store.replay_event("no-such-event") is None


def test_a_dead_run_is_retried_from_its_dead_step_with_overrides(store: Store) -> None:
    run_id = matched_run(store)
    (first,) = store.claim_steps(10, 60)
    store.record_steps([result(first)])
    (second,) = store.claim_steps(10, 60)
    assert store.retry_run(run_id) is None  # not dead
    store.record_steps([result(second, "failed", error="gone")])
    retried = store.retry_run(run_id, {"url": "https://example.org"})
    assert retried is not None and (retried["status"], retried["step"], retried["error"]) == ("active", 1, None)
    (again,) = store.claim_steps(10, 60)
    assert (again.index, again.attempt, again.overrides, again.outputs) == (
        1, 1, {"url": "https://example.org"}, {"s0": None}
    )
    assert store.rule_counts() == {"r": {"active": 1}}


def test_prune_keeps_dead_and_active_runs(store: Store, clock: Clock) -> None:
    done, dead, active = matched_run(store, steps=1), matched_run(store, steps=1), matched_run(store, steps=1)
    tasks = {t.run_id: t for t in store.claim_steps(10, 60)}
    store.record_steps([result(tasks[done]), result(tasks[dead], "failed", error="x")])
    (no_runs,) = store.put_events([incoming()])
    store.record_matches([Matched(no_runs.event_id, [])])
    store.put_events([incoming(delivery="old", dedupe_window=0.0), incoming(delivery="kept")])
    clock.advance(0.01)
    counts = store.prune(clock() + 1)
    # the events: the one without runs, and the one whose run was just pruned
    assert counts == {"runs": 1, "events": 2, "deliveries": 1, "state": 0}
    assert store.get_run(done) is None and store.steps_of_run(done) == []
    assert store.get_run(dead) is not None and store.get_run(active) is not None
    assert store.get_event(no_runs.event_id) is None
    assert store.put_events([incoming(delivery="kept")])[0].duplicate
    assert store.prune(clock() + 1) == {"runs": 0, "events": 0, "deliveries": 0, "state": 0}


def test_list_events_filters_and_pages(store: Store) -> None:
    store.put_events([incoming({"i": i}) for i in range(5)])
    store.put_events([Incoming("github", "push", "{}", {}, {}, time.time() + 100)])
    newest = store.list_events(3)
    assert [e["source"] for e in newest] == ["github", "hover", "hover"]
    page2 = store.list_events(3, cursor=newest[-1]["seq"])
    assert len(page2) == 3 and all(e["seq"] < newest[-1]["seq"] for e in page2)
    assert len(store.list_events(source="hover")) == 5
    assert [e["type"] for e in store.list_events(type="push")] == ["push"]
    assert len(store.list_events(since=time.time() + 50)) == 1 and len(store.list_events(until=time.time() + 50)) == 5
    assert store.list_events(status="matched") == []
    assert set(newest[0]) == {
        "seq", "id", "source", "type", "delivery_id", "received_at", "status", "replay_of", "runs",
    }
    assert {e["runs"] for e in store.list_events()} == {0}
    matched = store.claim_events(1, 60)[0].id
    store.record_matches([Matched(matched, [], [new_run(matched, "a"), new_run(matched, "b")])])
    assert {e["id"]: e["runs"] for e in store.list_events(status="matched")} == {matched: 2}


def test_record_shapes_are_the_same(store: Store) -> None:
    run_id = matched_run(store, steps=1)
    run = store.get_run(run_id)
    assert run is not None and set(run) == {
        "id", "event_id", "rule", "rule_version", "status", "step", "error", "created_at", "updated_at", "shadow"
    }
    (step,) = store.steps_of_run(run_id)
    assert set(step) == {
        "run_id", "index", "id", "action", "status", "attempt", "due_at", "params", "output", "error", "started_at",
        "finished_at"
    }
    event = store.get_event(run["event_id"])
    assert event is not None and set(event) == {
        "id", "source", "type", "delivery_id", "body", "headers", "query", "received_at", "depth", "status", "explain",
        "replay_of", "only_rules"
    }
    assert isinstance(run["created_at"], float) and isinstance(event["depth"], int)
    assert store.get_event("nope") is None and store.get_run("nope") is None and store.rule_text("nope") is None


def test_queue_items_are_listed_and_read(store: Store) -> None:
    first = requeue(store, request="a", data={"n": 1})
    requeue(store, key="k2", request="b")
    assert [i.key for i in store.list_queue_items("field-techs")] == ["19402492", "k2"]
    assert store.list_queue_items("field-techs", status="claimed") == [] and store.list_queue_items("other") == []
    assert store.get_queue_item(first.id) == first and store.get_queue_item("nope") is None
    assert store.fail_queue_item(first.id, 0, "x") is None  # not claimed


def test_hover_tokens_and_webhooks(store: Store) -> None:
    assert store.hover_tokens() is None
    store.save_hover_tokens(HoverTokens("a1", "r1", 100.0))
    store.save_hover_tokens(HoverTokens("a2", "r2", 200.0))
    assert store.hover_tokens() == HoverTokens("a2", "r2", 200.0) and store.hover_tokens("other") is None
    store.save_hover_webhook("w1", source="hover", url="https://h/1")
    store.save_hover_webhook("w1", verified_at=5.0, last_error="late")
    (hook,) = store.hover_webhooks()
    assert {k: hook[k] for k in ("webhook_id", "source", "url", "verified_at", "last_error")} == {
        "webhook_id": "w1", "source": "hover", "url": "https://h/1", "verified_at": 5.0, "last_error": "late"}


def test_a_webhook_keeps_the_verification_method_that_worked(store: Store) -> None:
    store.save_hover_webhook("w1", source="hover", url="https://h/1")
    assert store.hover_webhooks()[0]["verify_method"] is None
    store.save_hover_webhook("w1", verified_at=5.0, verify_method="POST")
    store.save_hover_webhook("w1", last_error="later: 404")
    (hook,) = store.hover_webhooks()
    assert (hook["verified_at"], hook["verify_method"], hook["last_error"]) == (5.0, "POST", "later: 404")


def test_a_hover_login_state_is_taken_once_and_only_while_fresh(store: Store, clock: Clock) -> None:
    store.begin_hover_login("s-1", 600)
    assert store.hover_login("s-1") == {"status": "pending", "error": None, "expired": False}
    assert store.take_hover_login("s-1") == "default"
    assert store.take_hover_login("s-1") is None  # once
    assert store.take_hover_login("never-issued") is None and store.hover_login("never-issued") is None
    store.finish_hover_login("s-1")
    assert store.hover_login("s-1") == {"status": "done", "error": None, "expired": False}

    store.begin_hover_login("s-2", 600, account="other")
    assert store.take_hover_login("s-2") == "other"
    store.finish_hover_login("s-2", "hover: refused")
    assert store.hover_login("s-2") == {"status": "failed", "error": "hover: refused", "expired": False}

    store.begin_hover_login("s-3", 60)
    clock.advance(61)
    assert store.take_hover_login("s-3") is None  # expired
    assert store.hover_login("s-3") == {"status": "pending", "error": None, "expired": True}


def test_wake_steps_makes_the_waiting_steps_of_an_action_due_now(store: Store) -> None:
    store.put_events([incoming(), incoming()])
    first, second = store.claim_events(10, 60)
    store.record_matches([
        Matched(first.id, [], [NewRun("waits", "r", "v1", "f", "t", steps=[(0, "verify", "hover")])]),
        Matched(second.id, [], [NewRun("other", "r", "v1", "f", "t", steps=[(0, "job", "hover")])]),
    ])
    tasks = {t.run_id: t for t in store.claim_steps(10, 60)}
    store.record_steps([
        result(
            tasks["waits"], "failed", error="hover: not logged in: run `hookwise hover login`; waits", retry_in=3600
        ),
        result(tasks["other"], "failed", error="hover: GET /api/v3/jobs/1: 503", retry_in=3600),
    ])
    assert store.claim_steps(10, 60) == []
    assert store.wake_steps("log", "hover: not logged in") == 0
    assert store.wake_steps("hover", "hover: not logged in") == 1
    (woken,) = store.claim_steps(10, 60)
    assert (woken.run_id, woken.attempt) == ("waits", 2)
    assert store.wake_steps("hover", "hover: not logged in") == 0  # running now, not waiting


def test_the_hover_lock(store: Store, clock: Clock) -> None:
    assert store.lock_hover_account("a", 60)
    assert store.lock_hover_account("a", 60)  # its holder keeps it
    assert not store.lock_hover_account("b", 60)
    assert store.lock_hover_account("b", 60, account="other")
    store.unlock_hover_account("b")  # not the holder: changes nothing
    assert not store.lock_hover_account("b", 60)
    store.unlock_hover_account("a")
    assert store.lock_hover_account("b", 30)
    clock.advance(29.9)
    assert not store.lock_hover_account("a", 60)
    clock.advance(0.2)
    assert store.lock_hover_account("a", 60)  # b's lock ran out
    store.save_hover_tokens(HoverTokens("t", "r", 1.0))
    assert store.hover_tokens() == HoverTokens("t", "r", 1.0)  # the lock row holds the tokens too


def test_nul_characters_do_not_break_a_batch(store: Store) -> None:
    first, second = store.put_events([Incoming("hover", "bad\x00type", "{}", {}, {}, time.time(), "d\x00"), incoming()])
    assert not first.duplicate and not second.duplicate
    event = store.get_event(first.event_id)
    assert event is not None and event["type"].startswith("bad") and event["type"].endswith("type")
    assert len(store.claim_events(10, 60)) == 2
    run_id = matched_run(store, steps=1)
    (task,) = [t for t in store.claim_steps(10, 60) if t.run_id == run_id]
    store.record_steps([result(task, "failed", error="got \x00 in the answer")])
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "dead" and run["error"].startswith("got ")


# --- PostgreSQL only: the boundary ------------------------------------------------------


def test_open_store_takes_both_schemes(pg_url: str) -> None:
    from engine.store.postgres import PostgresStore

    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        s = open_store(url)
        try:
            assert isinstance(s, PostgresStore)
            s.ping()
        finally:
            s.close()


def test_migrate_is_idempotent_and_keeps_the_data(pg_url: str) -> None:
    from engine.store.postgres import PostgresStore

    first = PostgresStore(pg_url)
    try:
        (stored,) = first.put_events([incoming()])
        first.migrate()
    finally:
        first.close()
    second = PostgresStore(pg_url)
    try:
        assert second.get_event(stored.event_id) is not None
    finally:
        second.close()


def _made_before_the_core(pg_url: str) -> None:
    """The schema of ``pg_url`` as hookwise made it before the store core (version 3), with
    an event of each kind, runs, a queue item and the Hover account in it."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute((FIXTURES / "store" / "postgres_before_core.sql").read_text())


def test_a_database_made_before_the_store_core_opens_and_works_on(pg_url: str) -> None:
    _made_before_the_core(pg_url)
    check_made_before_the_core(open_store(pg_url, clock=MADE_AT))


def test_a_version_1_schema_is_migrated_and_loses_its_phantom_webhooks(pg_url: str) -> None:
    import psycopg

    from engine.store.postgres import PostgresStore

    _made_before_the_core(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to version 1, as the first release made it
        conn.execute("DELETE FROM schema_version WHERE version > 1; DROP INDEX events_received;"
                     "DROP TABLE hover_logins; ALTER TABLE hover_webhooks DROP COLUMN verify_method")
        conn.execute("INSERT INTO hover_webhooks (webhook_id, url, updated_at) VALUES ('1', 'https://h/1', 1)")
        conn.execute("INSERT INTO hover_webhooks (webhook_id, verified_at, updated_at) VALUES ('2', 5, 1)")
        conn.execute(
            "INSERT INTO hover_webhooks (webhook_id, last_error, updated_at) VALUES ('230293', 'not logged in', 1)"
        )
    store = PostgresStore(pg_url)
    try:
        assert sorted(w["webhook_id"] for w in store.hover_webhooks()) == ["1", "2", "w1"]
        store.save_hover_webhook("1", verify_method="POST")
        store.begin_hover_login("s", 60)
        assert store.take_hover_login("s") == "default"
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3, 4, 5]
        assert conn.execute("SELECT to_regclass('events_received') IS NOT NULL").fetchone() == (True,)
        assert conn.execute("SELECT to_regclass('rule_timers') IS NOT NULL").fetchone() == (True,)


def test_a_version_2_schema_gets_the_events_index_and_keeps_its_hover_logins(pg_url: str, clock: Clock) -> None:
    import psycopg

    from engine.store.postgres import PostgresStore

    _made_before_the_core(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # version 2, as the Hover release made it
        conn.execute("DELETE FROM schema_version WHERE version > 2; DROP INDEX events_received")
        conn.execute("INSERT INTO hover_logins (state, account, status, expires_at, updated_at) "
                     "VALUES ('s', 'default', 'pending', %s, 1)", (clock() + 60,))
    store = PostgresStore(pg_url, clock=clock)
    try:
        assert store.take_hover_login("s") == "default"
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version, applied_at FROM schema_version WHERE version = 3").fetchone() == (
            3, clock()
        )
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (5,)
        assert conn.execute("SELECT to_regclass('events_received') IS NOT NULL").fetchone() == (True,)
        # version 4: runs know whether a shadow rule made them
        assert conn.execute("SELECT COUNT(*) FROM information_schema.columns "
                            "WHERE table_name = 'runs' AND column_name = 'shadow'").fetchone() == (1,)
        # version 5: the tables of stateful rules
        assert conn.execute("SELECT to_regclass('rule_timers') IS NOT NULL").fetchone() == (True,)


def test_processes_starting_together_create_the_schema_once(pg_url: str) -> None:
    from engine.store.postgres import PostgresStore

    stores = in_threads(6, lambda _: PostgresStore(pg_url))
    try:
        stores[0].put_events([incoming()])
        assert all(len(s.list_events()) == 1 for s in stores)
    finally:
        for s in stores:
            s.close()


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(
        StoreError,
        match=r"cannot connect to the PostgreSQL store postgresql://\*\*\*\*@127\.0\.0\.1:1/nowhere: .*refused"
    ):
        open_store("postgresql://nobody:s3cret@127.0.0.1:1/nowhere")
    try:
        open_store("postgresql://nobody:s3cret@127.0.0.1:1/nowhere")
    except StoreError as exc:
        assert "s3cret" not in str(exc)


def test_the_cli_exits_69_when_the_store_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text('store: "postgresql://postgres@127.0.0.1:1/nowhere"\nrules: []\nsources: {}\n')
    done = subprocess.run(
        [sys.executable, "-m", "engine", "store", "migrate", "-c", str(config)], check=False, capture_output=True,
        text=True, timeout=60
    )
    assert done.returncode == 69 and "cannot connect to the PostgreSQL store" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_psycopg_the_message_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    monkeypatch.delitem(sys.modules, "engine.store.postgres", raising=False)
    with pytest.raises(StoreError, match=r"pip install 'hookwise\[postgres\]'"):
        open_store("postgresql://postgres@127.0.0.1/db")


def test_a_failed_batch_stores_nothing_and_burns_no_delivery_id(two: tuple[Any, Any]) -> None:
    store, _ = two
    too_deep = Incoming("hover", "t", "{}", {}, {}, time.time(), depth=2**40)  # beyond integer: the insert fails
    with pytest.raises(StoreError):
        store.put_events([incoming(delivery="d1"), too_deep])
    (again,) = store.put_events([incoming(delivery="d1")])
    assert not again.duplicate and len(store.list_events()) == 1


def test_leases_are_judged_by_the_database_clock(two: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    a.put_events([incoming()])
    assert len(a.claim_events(10, 60)) == 1
    matched_run(a, steps=1)
    assert len(a.claim_steps(10, 60)) == 1
    requeue(a, request="x")
    assert a.claim_queue_item("field-techs", 60) is not None
    assert a.lock_hover_account("a", 60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this host's clock runs an hour ahead
    assert b.claim_events(10, 60) == [] and b.claim_steps(10, 60) == []
    assert b.claim_queue_item("field-techs", 60) is None and not b.lock_hover_account("b", 60)


# --- PostgreSQL only: processes side by side ---------------------------------------------


def test_concurrent_event_claims_never_take_the_same_event(two: tuple[Any, Any]) -> None:
    a, b = two
    a.put_events([incoming({"i": i}) for i in range(300)])

    def claim_all(i: int) -> list[str]:
        s, got = (a, b)[i % 2], []
        while batch := s.claim_events(7, 60):
            got += [e.id for e in batch]
        return got

    ids = [e for got in in_threads(8, claim_all) for e in got]
    assert len(ids) == 300 and len(set(ids)) == 300


def test_concurrent_step_claims_never_take_the_same_step(two: tuple[Any, Any]) -> None:
    a, b = two
    a.put_events([incoming({"i": i}) for i in range(120)])
    events = a.claim_events(200, 60)
    a.record_matches([Matched(e.id, [], [new_run(e.id, steps=1)]) for e in events])

    def claim_all(i: int) -> list[tuple[str, int]]:
        s, got = (a, b)[i % 2], []
        while batch := s.claim_steps(5, 60):
            got += [(t.run_id, t.index) for t in batch]
        return got

    keys = [k for got in in_threads(8, claim_all) for k in got]
    assert len(keys) == 120 and len(set(keys)) == 120


def test_concurrent_queue_claims_never_take_the_same_item(two: tuple[Any, Any]) -> None:
    a, b = two
    for i in range(60):
        requeue(a, key=f"k{i}", request=f"r{i}")

    def claim_all(i: int) -> list[str]:
        s, got = (a, b)[i % 2], []
        while (item := s.claim_queue_item("field-techs", 60)) is not None:
            got.append(item.id)
        return got

    ids = [x for got in in_threads(6, claim_all) for x in got]
    assert len(ids) == 60 and len(set(ids)) == 60


def test_one_run_per_event_and_rule_when_two_record_the_same_match(two: tuple[Any, Any]) -> None:
    a, b = two
    a.put_events([incoming({"i": i}) for i in range(30)])
    events = a.claim_events(100, 60)
    matches = [Matched(e.id, [{"rule": "r"}], [new_run(e.id)], e) for e in events]

    def record(i: int) -> list[str]:
        s = (a, b)[i % 2]
        return [t.run_id for m in matches for t in s.record_matches([m], claim=1, lease=60)]

    claimed = [r for got in in_threads(4, record) for r in got]
    assert sorted(claimed) == sorted(f"{e.id}-r" for e in events)  # each first step claimed once
    for e in events:
        (run,) = a.runs_of_event(e.id)
        assert [s["status"] for s in a.steps_of_run(run["id"])] == ["running", "waiting"]


def test_concurrent_requeues_of_one_key_make_one_item(two: tuple[Any, Any]) -> None:
    a, b = two
    in_threads(8, lambda i: requeue((a, b)[i % 2], key="same", request=f"r{i}", max_attempts=100))
    (item,) = a.list_queue_items("field-techs")
    assert item.attempts == 8 and item.status == "waiting"


def test_the_hover_lock_holds_across_processes(two: tuple[Any, Any]) -> None:
    a, b = two
    for round_ in range(15):

        def lock(i: int, account: str = f"acct{round_}") -> bool:
            return bool((a, b)[i % 2].lock_hover_account(f"holder{i}", 60, account=account))

        got = in_threads(6, lock)
        assert got.count(True) == 1, got


# --- PostgreSQL only: wake-ups --------------------------------------------------------------


def test_stored_events_wake_a_waiting_process(two: tuple[Any, Any]) -> None:
    a, b = two
    assert a.wait_for_events(0.05) is False  # listening from now on; nothing stored
    (stored,) = b.put_events([incoming(delivery="d1")])
    assert a.wait_for_events(30) is True
    assert a.wait_for_events(0.05) is False  # the wake-up was used up
    b.put_events([incoming(delivery="d1")])  # a duplicate stores nothing, wakes nobody
    assert a.wait_for_events(0.05) is False
    with pytest.raises(StoreError):  # a failed batch is rolled back, its wake-up with it
        b.put_events([incoming(), Incoming("hover", "t", "{}", {}, {}, time.time(), depth=2**40)])
    assert a.wait_for_events(0.05) is False
    assert b.replay_event(stored.event_id) is not None
    assert a.wait_for_events(30) is True
    b.notify_events()
    assert a.wait_for_events(30) is True



def test_stores_in_other_schemas_do_not_wake_each_other(two: tuple[Any, Any], pg_database: str) -> None:
    """The wake-up channel is the schema's own: two hookwise stores in one database, each in
    its schema, wake only their own workers."""
    import psycopg

    from engine.store.postgres import PostgresStore

    a, b = two
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    other = PostgresStore(f"{pg_database}{'&' if '?' in pg_database else '?'}options=-csearch_path%3D{schema}")
    try:
        assert a.wait_for_events(0.05) is False  # listening from now on
        other.put_events([incoming(delivery="elsewhere")])
        other.notify_events()
        assert a.wait_for_events(0.2) is False
        b.put_events([incoming(delivery="here")])
        assert a.wait_for_events(30) is True
    finally:
        other.close()
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")

# --- the test database itself --------------------------------------------------------------


def test_a_missing_test_database_is_created(pg_database: str) -> None:
    import psycopg
    from psycopg import conninfo, sql

    name = f"hookwise_t_{uuid.uuid4().hex[:10]}"
    url = conninfo.make_conninfo(pg_database, dbname=name)
    try:
        assert postgres_database(url) == url
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
        assert postgres_database(url) == url  # and found the second time
    finally:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_test_database_that_cannot_be_created_is_explained(pg_database: str) -> None:
    import psycopg
    from psycopg import conninfo, sql

    role, name = f"hw_nocreate_{uuid.uuid4().hex[:8]}", f"hookwise_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    try:
        with pytest.raises(NoPostgres) as info:
            postgres_database(conninfo.make_conninfo(pg_database, user=role, dbname=name))
        host = conninfo.conninfo_to_dict(POSTGRES_URL).get("host") or "127.0.0.1"
        assert "permission denied to create database" in str(info.value)
        assert str(info.value).endswith(
            f"cannot be created here (permission denied to create database): createdb -h {host} -U postgres {name}"
        )
    finally:
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_no_server_is_said_so() -> None:
    port = free_port()
    with pytest.raises(NoPostgres, match=rf"^no PostgreSQL server answers at 127\.0\.0\.1 -p {port}: "):
        postgres_database(f"postgresql://postgres@127.0.0.1:{port}/hookwise_test")
