"""The SQLite store: the store core (:mod:`engine.store.core`) on one file, WAL journal,
``synchronous=FULL``.

Each thread has its own connection. Writes run in ``BEGIN IMMEDIATE`` transactions, so a
writer waits for the lock up front (up to the busy timeout) instead of failing half way.

The worker's own bookkeeping (claims, leases, runs created, step outcomes) commits with
``synchronous=NORMAL``: in WAL mode such a commit survives any crash of the process, and
only an OS crash or power cut can lose the last ones — which at-least-once tolerates, as the
lost work is claimed and done again (and the next FULL commit makes them durable too).
Everything a sender or a person was told is stored (events, delivery ids, queue items,
Hover tokens) commits with ``synchronous=FULL``.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError, Unstorable
from .backend import Params
from .contract import Incoming, Stored
from .core import StoreCore
from .queries import load_queries
from .rows import Row, delivery_row, event_row

Q = load_queries("sqlite")

#: Columns added after a table was first released: (name, type) by table.
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "events": [("replay_of", "TEXT"), ("only_rules", "TEXT")],
    "runs": [("shadow", "BOOLEAN NOT NULL DEFAULT false")],
    "hover_webhooks": [("verify_method", "TEXT")],
}
#: Queries run once, right after the column they come with was added to an older file.
_WITH_COLUMN = {("hover_webhooks", "verify_method"): "forget_phantom_webhooks"}
#: How long a writer waits for the database lock before the operation fails.
BUSY_TIMEOUT_MS = 10_000
#: Rows one multi-row INSERT takes at most; a batch is cut into chunks of powers of two,
#: so that few statement texts are prepared and cached.
_CHUNK = 128


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([c[0] for c in cursor.description], row, strict=True))


class _Tx:
    """:class:`~engine.store.core.Tx` on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def all(self, name: str, params: Params) -> list[Row]:
        return self.conn.execute(Q[name], params).fetchall()

    def count(self, name: str, params: Params) -> int:
        return self.conn.execute(Q[name], params).rowcount

    def many(self, name: str, params: Sequence[Params]) -> None:
        if params:
            self.conn.executemany(Q[name], params)

    def each(self, name: str, params: Sequence[Params]) -> list[list[Row]]:
        return [self.conn.execute(Q[name], p).fetchall() for p in params]  # in-process: no round trips to save

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        self.conn.execute("SAVEPOINT step")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO step")
            raise
        finally:
            self.conn.execute("RELEASE step")


class SQLiteBackend:
    """What SQLite brings to the core. ``clock`` gives the time now, in unix seconds, for
    every lease, delay, retry and timestamp the store judges or writes."""

    look_before_claim = True  # a claim that finds nothing would still take the write lock

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Re-entrant: a write begun inside another on one thread fails as SQLite says
        # (no transaction within a transaction) rather than waiting for itself.
        self._writer = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from None

    def now(self) -> float:
        return self.clock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection in WAL mode. Switching a new file to WAL takes an exclusive
        lock that SQLite does not wait for (no busy handler), so processes opening the same
        new file at once try again for up to the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
                )
                conn.row_factory = _dict_row
                try:
                    # Statement and savepoint journals in memory: a batch of events would
                    # otherwise spill them to a temporary file, made and deleted per commit.
                    for pragma in ("temp_store=MEMORY", "journal_mode=WAL", "synchronous=FULL",
                                   f"busy_timeout={BUSY_TIMEOUT_MS}"):
                        conn.execute(f"PRAGMA {pragma}")
                except sqlite3.Error:
                    conn.close()
                    raise
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot open the store {self.path}: {exc}") from None
                time.sleep(0.05)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store {self.path}: {exc}") from None

    @contextmanager
    def transaction(self, *, relaxed: bool = False) -> Iterator[_Tx]:
        """A write transaction. Threads of this process take turns on a lock first: SQLite
        lets one writer in at a time anyway, and its own wait for the lock is a sleep of
        up to 100 ms between tries, where this one ends the moment the lock is free (the
        receiver's commits and the worker's must not sleep on each other)."""
        conn = self._connection()
        sync = "NORMAL" if relaxed else "FULL"
        try:
            with self._writer:
                if getattr(self._local, "sync", "FULL") != sync:
                    conn.execute(f"PRAGMA synchronous={sync}")
                    self._local.sync = sync
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except (sqlite3.DataError, UnicodeEncodeError) as exc:  # this data (too big, a lone surrogate), not the store
            raise Unstorable(f"the store cannot hold this: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[_Tx]:
        try:
            yield _Tx(self._connection())
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    def notify(self, db: Any) -> None:
        """Nothing to do: the daemon's worker is woken in process."""

    def migrate(self) -> None:
        """Create the schema, and add the columns later versions brought to an older file."""
        conn = self._connection()
        try:
            # One write transaction taken up front: processes starting together wait for
            # each other (busy timeout) instead of failing half way through the schema.
            conn.executescript(f"BEGIN IMMEDIATE;\n{Q['schema']}\nCOMMIT;")
            for table, columns in _ADDED_COLUMNS.items():
                have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                        if (table, name) in _WITH_COLUMN:
                            conn.execute(Q[_WITH_COLUMN[(table, name)]])
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create the schema in {self.path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- what differs here --------------------------------------------------------------

    def put_new_events(self, db: _Tx, items: Sequence[Incoming], now: float | None) -> list[Stored] | None:
        """The common case in a few statements for the whole batch: every delivery id is
        new. Each statement is a trip into SQLite and back, with the GIL let go and taken
        again, and per row that trip costs more than the insert."""
        keyed = [i for i in items if i.delivery_id is not None]
        conn = db.conn
        conn.execute("SAVEPOINT batch")
        taken = _insert_rows(conn, "put_deliveries_rows", [tuple(delivery_row(i).values()) for i in keyed], now)
        new = taken == len(keyed) and len({(i.source, i.delivery_id) for i in keyed}) == len(keyed)
        if new:  # an emitted event's id may be stored already: then it is no fast case either
            events = [tuple(event_row(i).values()) for i in items]
            new = _insert_rows(conn, "put_events_rows", events, now) == len(items)
        if not new:
            conn.execute("ROLLBACK TO batch")
        conn.execute("RELEASE batch")
        return [Stored(i.id) for i in items] if new else None

    def claim_steps(self, db: _Tx, params: Params) -> list[tuple[Row, dict[str, str | None]]]:
        """The claim, then the context of every claimed run and their outputs: three
        statements for the batch, all under the write lock."""
        claimed = db.all("claim_steps", params)
        if not claimed:
            return []
        runs = {"runs": json.dumps(sorted({row["run_id"] for row in claimed}))}
        contexts = {row["run_id"]: row for row in db.all("step_contexts", runs)}
        outputs = db.all("step_outputs", runs)
        return [
            ({**contexts[row["run_id"]], **row},
             {o["step_id"]: o["output"] for o in outputs if o["run_id"] == row["run_id"] and o["idx"] < row["idx"]})
            for row in claimed
        ]


def _insert_rows(conn: sqlite3.Connection, name: str, rows: list[tuple[Any, ...]], now: float | None) -> int:
    """Insert ``rows`` with the query ``name`` (whose ``{rows}`` stands for its VALUES rows),
    a statement per chunk rather than per row. Returns the rows changed."""
    changed, at = 0, 0
    while at < len(rows):
        size = min(_CHUNK, 1 << (len(rows) - at).bit_length() - 1)
        chunk = rows[at : at + size]
        values = {f"v{n}": v for n, v in enumerate(v for row in chunk for v in row)}
        changed += conn.execute(_multi_row(name, size, len(chunk[0])), {**values, "now": now}).rowcount
        at += size
    return changed


@functools.lru_cache(maxsize=64)
def _multi_row(name: str, size: int, width: int) -> str:
    rows = ", ".join("(" + ", ".join(f":v{r * width + c}" for c in range(width)) + ")" for r in range(size))
    return Q[name].replace("{rows}", rows)


class SQLiteStore(StoreCore[_Tx]):
    """The :class:`~engine.store.Store` on one SQLite file."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.sqlite = SQLiteBackend(path, clock)
        super().__init__(self.sqlite)
        self.clock = clock
        self.migrate()

    @property
    def path(self) -> Path:
        """The file: connections opened from now on open this one."""
        return self.sqlite.path

    @path.setter
    def path(self, path: Path) -> None:
        self.sqlite.path = path
