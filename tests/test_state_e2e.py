"""Stateful rules end to end (SPEC 14): the daemon as a real process, killed with -9 between
an absence's ``after`` event and its deadline; workers on PostgreSQL racing due timers; and
order_by across two receivers and two workers."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.rules.stateful import TimerOp
from engine.store import Incoming, Matched

from .support import DaemonProcess, Sink, free_port, post
from .test_postgres_store import in_threads, pg_database, pg_url, two  # noqa: F401  (fixtures)

ABSENCE = """\
rules:
  - name: stuck
    absence:
      after: {event: job, when: {state: processing}}
      expect: {event: job, when: {state: complete}}
      key: "{{ event.job_id }}"
      within: 2s
    actions:
      - http: {method: POST, url: "{SINK}/stuck", json: {key: "{{ event.key }}", after: "{{ event.after.body.id }}"}}
"""

ORDERED = """\
rules:
  - name: crm
    source: open
    event: job
    order_by: "{{ event.job_id }}"
    actions:
      - http: {method: POST, url: "{SINK}/crm", json: {job: "{{ event.job_id }}", n: "{{ event.n }}"}}
        retry: {attempts: 20, backoff: 50ms, max_backoff: 200ms}
"""


def config(tmp_path: Path, rules: str, sink: Sink, store: str = "sqlite:///data/hookwise.db") -> Path:
    (tmp_path / "rules.yaml").write_text(rules.replace("{SINK}", sink.url))
    path = tmp_path / "hookwise.yaml"
    path.write_text(f"store: {json.dumps(store)}\nrules: [rules.yaml]\nhttp: {{allow_private: true}}\n"
                    "sources:\n  open: {type: 'body:type', id: 'body:id', verify: none}\n")
    return path


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(lambda hit: (200, "{}"))
    yield s
    s.close()


def wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_a_daemon_killed_between_after_and_deadline_fires_once_after_restart(tmp_path: Path, sink: Sink) -> None:
    path = config(tmp_path, ABSENCE, sink)
    daemon = DaemonProcess(path, free_port())
    daemon.wait_ready()
    status, _ = post(daemon.url + "/hooks/open", json.dumps({"type": "job", "id": "e1", "job_id": 7,
                                                              "state": "processing"}))
    assert status == 202
    db = tmp_path / "data" / "hookwise.db"

    def pending() -> bool:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM rule_timers WHERE status = 'pending'").fetchone()[0] == 1

    wait(pending)
    daemon.stop(signal.SIGKILL)  # kill -9 before the deadline: the timer is in the store only
    assert sink.hits == []
    daemon = DaemonProcess(path, free_port())
    try:
        daemon.wait_ready()
        (hit,) = sink.wait_for(1, timeout=30)
        assert hit.json() == {"key": "7", "after": "e1"}
        time.sleep(1.0)  # a fired timer must stay fired: give a second fire its chance
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert len(sink.hits) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM rule_timers").fetchall() == [("fired",)]
        assert conn.execute("SELECT COUNT(*) FROM events WHERE type = 'rule.absence'").fetchone() == (1,)


def test_workers_racing_due_timers_fire_each_once(two: tuple[Any, Any]) -> None:  # noqa: F811
    a, b = two
    a.put_events([Incoming("open", "job", json.dumps({"job_id": i}), {}, {}, time.time()) for i in range(40)])
    events = a.claim_events(100, 60)
    ops = [[TimerOp("after", "stuck", str(i), 0.001)] for i in range(40)]
    a.record_matches([Matched(e.id, [{"rule": "stuck"}], [], e, op) for e, op in zip(events, ops, strict=True)])
    time.sleep(0.01)  # the database clock decides when they are due: past a millisecond
    fired = in_threads(8, lambda i: sum((a, b)[i % 2].fire_timers(3) for _ in range(20)))
    assert sum(fired) == 40
    absences = [e for e in a.list_events(limit=200) if e["type"] == "rule.absence"]
    assert len(absences) == 40 and len({a.get_event(e["id"])["body"]["key"] for e in absences}) == 40


def test_order_by_holds_across_two_receivers_and_two_workers(
    tmp_path: Path, sink: Sink, pg_url: str  # noqa: F811
) -> None:
    path = config(tmp_path, ORDERED, sink, store=pg_url)
    receivers = [DaemonProcess(path, free_port(), "--role", "receiver") for _ in range(2)]
    workers = [DaemonProcess(path, free_port(), "--role", "worker") for _ in range(2)]
    sent = [(k, n) for k in "abc" for n in range(50)]
    random.Random(15).shuffle(sent)
    arrival: dict[str, list[int]] = {k: [] for k in "abc"}
    try:
        for d in receivers:  # a worker has no HTTP side to be ready
            d.wait_ready()
        for i, (k, n) in enumerate(sent):  # each answered once committed: arrival order is this order
            status, _ = post(receivers[i % 2].url + "/hooks/open", json.dumps({"type": "job", "id": f"{k}{n}",
                                                                               "job_id": k, "n": n}))
            assert status == 202
            arrival[k].append(n)
        sink.wait_for(150, timeout=90)
    finally:
        codes = [d.stop() for d in receivers + workers]
        assert codes == [0, 0, 0, 0], "".join(d.output() for d in receivers + workers)
    started: dict[str, list[int]] = {k: [] for k in "abc"}
    for hit in sink.hits:
        started[hit.json()["job"]].append(int(hit.json()["n"]))
    assert started == arrival
