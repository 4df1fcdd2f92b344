"""The store: where events, delivery ids, explain records, runs and steps live.

:class:`Store` is the contract, split into the roles its callers need (:class:`IngestStore`,
:class:`WorkerStore`, :class:`QueueStore`, :class:`HoverStore`, :class:`InspectionStore`,
:class:`BacktestStore`, :class:`RetentionStore`). One core implements it
(:mod:`engine.store.core`: every method, state machine and SQL statement once) over a
backend holding what differs between SQLite (:mod:`.sqlite`) and PostgreSQL
(:mod:`.postgres`). All methods are synchronous and safe to call from several threads; each
write method is one transaction. Backends translate their driver's errors into
:class:`~engine.errors.StoreError` at this boundary.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import StoreError
from .contract import (
    QUEUE_STATUSES,
    BacktestStore,
    HoverStore,
    HoverTokens,
    Incoming,
    IngestStore,
    InspectionStore,
    Matched,
    Matcher,
    NewRun,
    OperatorStore,
    QueueItem,
    QueueStore,
    RetentionStore,
    Scanned,
    Store,
    Stored,
    Unrecorded,
    WorkerStore,
)


def open_store(url: str, *, clock: Callable[[], float] | None = None) -> Store:
    """The store at ``url``: ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB`` (the
    latter needs the ``postgres`` extra).

    ``clock`` (unix seconds; tests pass one they move) judges leases, delays and retries.
    Without it SQLite uses ``time.time`` and PostgreSQL the database's clock, which every
    process sharing the database agrees on."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :], clock=clock or time.time)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # psycopg is an extra: imported only when used

        return PostgresStore(url, clock=clock)
    raise StoreError(f"unsupported store URL {url!r}")


__all__ = [
    "QUEUE_STATUSES", "BacktestStore", "HoverStore", "HoverTokens", "Incoming", "IngestStore", "InspectionStore",
    "Matched", "Matcher", "NewRun", "OperatorStore", "QueueItem", "QueueStore", "RetentionStore", "Scanned", "Store",
    "Stored", "Unrecorded", "WorkerStore", "open_store",
]
