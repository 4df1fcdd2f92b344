"""Many receivers and workers on one PostgreSQL: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import DaemonProcess, NoPostgres, Sink, free_port, post, postgres_database


def _schema_url() -> Iterator[str]:
    """A fresh schema in the test database, as a store URL; dropped afterwards."""
    try:
        database = postgres_database()
    except NoPostgres as exc:  # skip locally, fail in CI
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))
    import psycopg

    conn = psycopg.connect(database, autocommit=True, connect_timeout=3)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{database}?options=-csearch_path%3D{schema}"
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _schema_url()


RULES = """\
rules:
  - name: push
    source: open
    actions:
      - http: {method: POST, url: "{SINK}/push", json: {n: "{{ event.n }}"}}
        retry: {attempts: 20, backoff: 100ms, max_backoff: 500ms}
  - name: audit
    source: open
    actions:
      - http: {method: POST, url: "{SINK}/audit", json: {n: "{{ event.n }}"}}
        retry: {attempts: 20, backoff: 100ms, max_backoff: 500ms}
"""


def test_two_receivers_two_workers_and_a_killed_worker(tmp_path: Path, pg_url: str) -> None:
    slow = threading.Event()

    def respond(hit):  # type: ignore[no-untyped-def]
        if slow.is_set():
            time.sleep(0.05)  # keep steps in flight when a worker dies
        return 200, "{}"

    sink = Sink(respond)
    (tmp_path / "rules.yaml").write_text(RULES.replace("{SINK}", sink.url))
    config = tmp_path / "hookwise.yaml"
    config.write_text(f"store: {json.dumps(pg_url)}\nrules: [rules.yaml]\nhttp: {{allow_private: true}}\n"
                      "sources:\n  open: {type: 'body:type', id: 'body:id', verify: none}\n")
    receivers = [DaemonProcess(config, free_port(), "--role", "receiver") for _ in range(2)]
    workers = [DaemonProcess(config, free_port(), "--role", "worker") for _ in range(2)]
    acknowledged: list[int] = []
    try:
        for r in receivers:
            r.wait_ready()
        slow.set()
        for n in range(300):
            status, _ = post(receivers[n % 2].url + "/hooks/open", json.dumps({"type": "t", "id": f"e-{n}", "n": n}))
            if status == 202:
                acknowledged.append(n)
            if n == 150:
                workers[0].proc.kill()  # kill -9 mid-run
                workers[0].proc.wait(10)
        slow.clear()
        assert len(acknowledged) == 300

        def done() -> bool:
            pushed = {h.json()["n"] for h in list(sink.hits) if h.path == "/push"}
            audited = {h.json()["n"] for h in list(sink.hits) if h.path == "/audit"}
            return pushed >= set(acknowledged) and audited >= set(acknowledged)

        deadline = time.time() + 90  # the killed worker's claims come back when their leases run out
        while time.time() < deadline and not done():
            time.sleep(0.2)
        assert done()
    finally:
        codes = [d.stop() for d in receivers + workers[1:]]  # every one, even when one fails
        sink.close()
        assert codes == [0, 0, 0], "".join(d.output() for d in receivers + workers)
    import psycopg

    with psycopg.connect(pg_url) as conn:
        runs, pairs = conn.execute("SELECT COUNT(*), COUNT(DISTINCT (event_id, rule)) FROM runs").fetchone()  # type: ignore[misc]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]  # type: ignore[index]
    assert events == 300 and runs == pairs == 600  # exactly one run per (event, rule)
    keys = {h.headers["idempotency-key"] for h in sink.hits}
    assert len(keys) == 600  # every idempotency key reached the target


def test_a_hover_token_refresh_raced_by_two_workers(pg_url: str) -> None:
    """Two processes' clients on one PostgreSQL store refresh at once: one refresh, and the
    stored refresh token is the live one."""
    from engine.hover.client import HoverClient
    from engine.rules.config import Hover
    from engine.store import open_store

    from .fakehover import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeHover

    hover = FakeHover(token_delay=0.3)
    stores = [open_store(pg_url), open_store(pg_url)]
    try:
        settings = Hover(
            base_url=hover.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URI
        )
        clients = [HoverClient(settings, s) for s in stores]
        first = clients[0].tokens.exchange_code(hover.authorize())
        hover.expire_access_tokens()
        from dataclasses import replace

        stores[0].save_hover_tokens(replace(first, expires_at=time.time() - 1))  # both clients see it expired
        results: list[str] = []
        threads = [threading.Thread(target=lambda c=c: results.append(c.tokens.access_token())) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        tokens = stores[0].hover_tokens()
        assert hover.refreshes == 1 and len(set(results)) == 1
        assert tokens is not None
        assert hover.refresh_token_alive(tokens.refresh_token) and hover.access_token_valid(results[0])
    finally:
        for s in stores:
            s.close()
        hover.close()
