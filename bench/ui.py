"""The web UI: how long each page takes with 100,000 events stored (SPEC 13; a figure, not
a target checked by a test).

A SQLite store is filled first, in process, through the store's own methods: N events from
three sources over the last 24 hours (a tenth of them in the last hour, so the overview's
chart has an hour's worth to count), 2,000 of them matched by one rule into runs of two
steps (one in ten dead), the rest marked matched with an explain record, and 200 items in a
work queue. Then the daemon (``serve --role receiver``: the UI reads the store, no worker
changes it) answers each page in turn, pinned to core 0: a few requests to warm up, then
``ROUNDS`` timed ones, one at a time over a keep-alive connection. The time is the request
as the client sees it (loopback HTTP included), median and worst.

    python -m bench.ui [EVENTS]
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.run.runs import StepResult
from engine.store import Incoming, Matched, NewRun, Store, open_store

from .ingest import free_port, pinned, stop, wait_up

EVENTS = 100_000
RUNS = 2_000
ROUNDS = 20
SOURCES = ("hover", "github", "shop")
TYPES = {
    "hover": ("job-state-changed-v2", "model-state-changed"),
    "github": ("push", "pull_request"),
    "shop": ("order.created",),
}

CONFIG = """\
store: sqlite:///hookwise.db
rules: [rules.yaml]
sources:
  hover: {preset: hover, token: bench-t0ken}
  github: {preset: github, secret: bench-secret}
  shop: {token: bench-t0ken, type: "body:type"}
"""
RULES = """\
rules:
  - name: crm-push
    description: Push completed jobs to the CRM
    source: hover
    event: job-state-changed-v2
    when: {state: completed}
    actions:
      - id: crm
        http: {method: POST, url: "https://crm.example.com/jobs", json: {job: "{{ event.job_id }}"}}
      - log: {message: "pushed {{ event.job_id }}"}
  - name: review
    source: shop
    event: order.created
    when: {total: {gte: 1000}}
    actions:
      - requeue: {queue: review, key: "{{ event.id }}"}
"""


def seed(folder: Path, count: int, now: float | None = None) -> dict[str, Any]:
    """Fill ``folder/hookwise.db`` as described above; returns what a page can link to."""
    now = time.time() if now is None else now
    rng = random.Random(7)
    store = open_store(f"sqlite:///{folder / 'hookwise.db'}")
    try:
        batch: list[Incoming] = []
        for n in range(count):
            source = SOURCES[n % len(SOURCES)]
            recent = n >= count - count // 10
            at = now - (rng.uniform(0, 3600) if recent else rng.uniform(3600, 86400))
            body = {
                "event": TYPES[source][n % len(TYPES[source])],
                "type": "order.created",
                "job_id": n,
                "state": "completed",
                "id": f"o-{n}",
                "total": n % 2000,
                "pad": "x" * 700,
            }
            batch.append(
                Incoming(
                    source, TYPES[source][n % len(TYPES[source])], json.dumps(body), {"user-agent": "bench"}, {}, at
                )
            )
            if len(batch) == 1000:
                store.put_events(batch)
                batch = []
        if batch:
            store.put_events(batch)
        runs = _runs(store, min(RUNS, count))
        for n in range(200):
            store.requeue("review", f"o-{n}", {"total": 1000 + n}, delay=0, max_attempts=5, request_id=f"bench-{n}")
        newest = store.list_events(1)[0]["id"]
    finally:
        store.close()
    _mark_matched(folder / "hookwise.db")
    return {"event": newest, **runs}


def _runs(store: Store, count: int) -> dict[str, str]:
    explain = [{"rule": "crm-push", "version": "v1", "matched": True, "reason": "yes"}]
    claimed: list[Any] = []
    while len(claimed) < count:
        events = store.claim_events(min(500, count - len(claimed)), 3600)
        if not events:
            break
        claimed += events
        store.record_matches(
            [
                Matched(
                    e.id,
                    explain,
                    [
                        NewRun(
                            f"{e.id}-crm",
                            "crm-push",
                            "v1",
                            "rules.yaml",
                            "name: crm-push",
                            [(0, "crm", "http"), (1, "log", "log")],
                        )
                    ],
                )
                for e in events
            ]
        )
    dead = done = ""
    while tasks := store.claim_steps(500, 3600):
        results = []
        for i, task in enumerate(tasks):
            fails = task.index == 0 and i % 10 == 0
            results.append(
                StepResult(
                    task,
                    "failed" if fails else "succeeded",
                    output=None if fails else {"status": 200},
                    error="http: POST https://crm.example.com/jobs returned 503" if fails else None,
                    params={"method": "POST", "url": "https://crm.example.com/jobs"},
                    finished_at=time.time(),
                    step_count=2,
                )
            )
            dead, done = (task.run_id, done) if fails else (dead, task.run_id)
        store.record_steps(results)
    return {"dead_run": dead, "run": done}


def _mark_matched(db: Path) -> None:
    """Every event left pending is marked matched, as a worker would leave it."""
    explain = json.dumps(
        [
            {
                "rule": "crm-push",
                "version": "v1",
                "matched": False,
                "reason": "no: when.state: expected 'completed', got 'failed'",
            }
        ]
    )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET status = 'matched', explain = ? WHERE status = 'pending'", (explain,))


def pages(links: dict[str, str]) -> list[str]:
    return [
        "/ui",
        "/ui/events",
        "/ui/events?source=github&type=push",
        "/ui/events?since=2000-01-01T00:00:00Z&status=matched",
        "/ui/events?source=shop&type=push",  # matches nothing: the filter reads every event
        f"/ui/events/{links['event']}",
        "/ui/runs",
        "/ui/runs?status=dead",
        f"/ui/runs/{links['dead_run']}",
        f"/ui/runs/{links['run']}",
        "/ui/rules",
        "/ui/rules/crm-push",
        "/ui/playground",
        "/ui/queues",
        "/ui/queues/review",
        "/ui/hover",
    ]


def time_page(conn: http.client.HTTPConnection, path: str, rounds: int) -> dict[str, float]:
    for _ in range(3):
        _get(conn, path)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        _get(conn, path)
        times.append((time.perf_counter() - started) * 1000)
    return summarize(times)


def summarize(times_ms: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times_ms), 1), "max_ms": round(max(times_ms), 1)}


def _get(conn: http.client.HTTPConnection, path: str) -> None:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path} answered {response.status}: {body[:300]!r}")


def measure(count: int = EVENTS, rounds: int = ROUNDS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.yaml").write_text(CONFIG)
        (folder / "rules.yaml").write_text(RULES)
        started = time.time()
        links = seed(folder, count)
        seeded = time.time() - started
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "-c",
            str(folder / "config.yaml"),
            "--port",
            str(port),
            "--role",
            "receiver",
        ]
        with open(folder / "daemon.log", "wb") as log:
            proc = subprocess.Popen(pinned(cmd, 0), stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        try:
            wait_up(port, "/readyz")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            timed = {path: time_page(conn, path, rounds) for path in pages(links)}
            conn.close()
        finally:
            stop(proc)
    return {"events": count, "seed_s": round(seeded, 1), "rounds": rounds, "pages": timed}


def report(result: dict[str, Any]) -> None:
    print(
        f"web UI pages with {result['events']:,} events stored "
        f"(median and worst of {result['rounds']}, ms, loopback HTTP included)"
    )
    for path, figures in result["pages"].items():
        print(f"  {path:<58} {figures['median_ms']:>7.1f} {figures['max_ms']:>7.1f}")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else EVENTS
    report(measure(count))


if __name__ == "__main__":
    main()
