"""The group commit on real stores (SQLite and PostgreSQL): an event that cannot be stored
fails alone, and the others of its batch are stored."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StoreError, Unstorable
from engine.receive.ingest import Ingest
from engine.store import Incoming, Store, Stored, open_store
from tests.test_postgres_store import pg_database, pg_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def event(n: int, type_: str = "t") -> Incoming:
    body, now = json.dumps({"n": n}), time.time()
    return Incoming(source="s", type=type_, body=body, headers={}, query={}, received_at=now, delivery_id=f"d-{n}")


async def put_all(ingest: Ingest, items: list[Incoming]) -> list[Stored | BaseException]:
    # Added in one go, before the flush runs: one batch.
    return await asyncio.gather(*(ingest.put(item) for item in items), return_exceptions=True)


def test_an_event_the_store_cannot_hold_fails_alone(store: Store) -> None:
    items = [event(n) for n in range(40)]
    items.insert(17, event(99, type_="\ud800"))  # a lone surrogate cannot be encoded for the store
    ingest = Ingest(store)
    try:
        results = asyncio.run(put_all(ingest, items))
    finally:
        ingest.stop()
    assert isinstance(results[17], Unstorable)
    stored = [r for n, r in enumerate(results) if n != 17]
    assert all(isinstance(r, Stored) and not r.duplicate for r in stored)
    for item, result in zip(items[:17] + items[18:], stored, strict=True):
        assert isinstance(result, Stored)
        got = store.get_event(result.event_id)
        assert got is not None and got["body"] == json.loads(item.body)
    assert len(store.list_events(100)) == 40


def test_a_delivery_id_twice_in_a_split_batch_is_still_a_duplicate(store: Store) -> None:
    items = [event(1), event(2, type_="\udfff"), event(1)]
    ingest = Ingest(store)
    try:
        first, poison, again = asyncio.run(put_all(ingest, items))
    finally:
        ingest.stop()
    assert isinstance(first, Stored) and isinstance(again, Stored) and isinstance(poison, StoreError)
    assert (again.event_id, again.duplicate) == (first.event_id, True)
