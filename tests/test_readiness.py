"""/readyz says whether an event can be committed now (SPEC 10), on SQLite and PostgreSQL:
a store that answers reads but refuses writes is not ready, and readiness comes back with
the store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import post
from .test_postgres_store import pg_database, pg_url  # noqa: F401  (fixtures)
from .test_receiver import Served


class Refusal:
    """Makes the store refuse every write of a delivery id, as a full disk or a read-only
    file would, while reads still work: a trigger on SQLite, a constraint on PostgreSQL."""

    def __init__(self, served: Served, url: str | None) -> None:
        self.served, self.url = served, url

    def _run(self, sql: str) -> None:
        if self.url is None:
            with sqlite3.connect(self.served.store.path, isolation_level=None) as db:  # type: ignore[attr-defined]
                db.execute(sql)
        else:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as db:
                db.execute(sql)

    def start(self) -> None:
        if self.url is None:
            self._run("CREATE TRIGGER refuse BEFORE INSERT ON deliveries"
                      " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        else:
            self._run("ALTER TABLE deliveries ADD CONSTRAINT refuse CHECK (false) NOT VALID")

    def stop(self) -> None:
        self._run("DROP TRIGGER refuse" if self.url is None else "ALTER TABLE deliveries DROP CONSTRAINT refuse")


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Served, Refusal]]:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Served(tmp_path, url)
    yield s, Refusal(s, url)
    s.close()


def ready(served: Served) -> tuple[int, Any]:
    return post(served.url("/readyz"), b"", method="GET")


def test_readiness_follows_whether_an_event_can_be_committed(served: tuple[Served, Refusal]) -> None:
    app, refusal = served
    status, answer = ready(app)
    assert status == 200 and answer["checks"]["store"] == "writable"
    refusal.start()
    assert post(app.url("/hooks/open"), '{"kind": "a"}', {"X-Delivery": "r-1"})[0] == 503
    status, answer = ready(app)
    assert status == 503 and answer["checks"]["store"].startswith("cannot commit: ")
    assert post(app.url("/livez"), b"", method="GET")[0] == 200  # alive all the same
    refusal.stop()
    assert ready(app)[0] == 200
    assert post(app.url("/hooks/open"), '{"kind": "a"}', {"X-Delivery": "r-2"})[0] == 202


def test_a_store_that_refuses_writes_is_not_ready_before_any_event(served: tuple[Served, Refusal]) -> None:
    app, refusal = served
    refusal.start()
    status, answer = ready(app)
    assert status == 503 and "cannot commit" in answer["checks"]["store"]
