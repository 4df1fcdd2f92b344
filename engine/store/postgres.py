"""The PostgreSQL store: the store core (:mod:`engine.store.core`) on a database that several
hookwise processes (or hosts) share.

It behaves like the SQLite store, method for method; what differs is how it stays right
when processes run side by side:

- claims (of events, steps and queue items) take rows ``FOR UPDATE SKIP LOCKED``, so two
  workers never take the same row and never wait for each other;
- leases, retries, delays and the Hover lock are judged by the database's clock, never the
  caller's, so hosts whose clocks disagree still agree on when a lease ends (a store given a
  ``clock`` of its own, as tests do, judges them by that clock instead);
- exactly one run per (event, rule) comes from the unique key and ``ON CONFLICT DO NOTHING``;
- the schema is created under an advisory lock, so processes starting together take turns.

Connections come from a pool (autocommit; a method that writes more than one statement runs
them in one transaction). A statement run for many rows (``many``, ``each``) is one round
trip: psycopg pipelines it. ``LISTEN``/``NOTIFY`` is offered as a wake-up for workers
(:meth:`PostgresBackend.wait_for_events`); nothing depends on it for correctness.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError, Unstorable
from ..secrets import safe_url

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.rows import dict_row
    from psycopg.types.string import StrDumperUnknown
    from psycopg_pool import ConnectionPool
except ImportError as exc:
    raise StoreError("the PostgreSQL store needs psycopg: pip install 'hookwise[postgres]'") from exc

from .backend import Params
from .contract import Incoming, Stored
from .core import StoreCore
from .queries import load_queries, to_pyformat
from .rows import Row

Q = {name: to_pyformat(query) for name, query in load_queries("postgres").items()}

#: Connections in the pool: the receiver's commits, the worker's claims and the commands'.
MAX_CONNECTIONS = 10
#: Seconds to wait for the server when connecting (unless the URL sets connect_timeout).
CONNECT_TIMEOUT = 10
#: Seconds a call waits for a connection from the pool before it fails.
POOL_TIMEOUT = 10.0
#: The version of the schema this code creates (``schema_version`` in the database).
SCHEMA_VERSION = 5

Connection = psycopg.Connection[dict[str, Any]]


class _Tx:
    """:class:`~engine.store.core.Tx` on a psycopg connection. In a pipeline, a statement
    whose results are not read (``many``) is only queued: it goes to the server with the
    next one that is read, or with the commit."""

    def __init__(self, conn: Connection, pipeline: psycopg.Pipeline | None = None) -> None:
        self.conn, self.pipeline = conn, pipeline

    def _run(self, name: str, params: Params) -> psycopg.Cursor[Row]:
        cursor = self.conn.execute(Q[name], params or None)  # None: several statements may go at once
        if self.pipeline is not None:
            self.pipeline.sync()  # the results, now
        return cursor

    def all(self, name: str, params: Params) -> list[Row]:
        cursor = self._run(name, params)
        return cursor.fetchall() if cursor.description is not None else []

    def count(self, name: str, params: Params) -> int:
        return self._run(name, params).rowcount

    def many(self, name: str, params: Sequence[Params]) -> None:
        if params and f"{name}_batch" in Q:
            self.conn.execute(Q[f"{name}_batch"], _batch(params))  # in a pipeline: queued
        elif params:
            self.conn.cursor().executemany(Q[name], params)

    def each(self, name: str, params: Sequence[Params]) -> list[list[Row]]:
        if not params:
            return []
        if f"{name}_batch" in Q:
            results: list[list[Row]] = [[] for _ in params]
            for row in self._run(f"{name}_batch", _batch(params)).fetchall():
                results[row.pop("n")].append(row)
            return results
        cursor = self.conn.cursor()
        cursor.executemany(Q[name], params, returning=True)
        results = [cursor.fetchall()]
        while cursor.nextset():
            results.append(cursor.fetchall())
        return results

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        with self.conn.transaction():
            yield
            if self.pipeline is not None:
                self.pipeline.sync()  # this savepoint's errors, raised inside it


def _batch(params: Sequence[Params]) -> dict[str, Any]:
    """The parameters of a ``NAME_batch`` query: the rows as one JSON array, each with its
    place ``n``, and the time ``{now}`` stands for (the same for all)."""
    rows = [{"n": n, **{k: _text(v) for k, v in p.items() if k != "now"}} for n, p in enumerate(params)]
    return {"rows": json.dumps(rows, ensure_ascii=False), "now": params[0].get("now")}


def _text(value: Any) -> Any:
    """A NUL in a string as PostgreSQL text can hold it (as :class:`_NulSafeStrDumper` does)."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresBackend:
    """What PostgreSQL brings to the core. Without ``clock`` the database's clock judges
    every lease, delay and retry; with one, every statement is given that clock's time."""

    look_before_claim = False  # a claim that finds nothing locks nothing

    def __init__(self, url: str, clock: Callable[[], float] | None = None) -> None:
        self._conninfo, self.where = _conninfo(url)
        self._clock = clock
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        self._probe()
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo, min_size=1, max_size=MAX_CONNECTIONS, open=False, timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True, "row_factory": dict_row}, configure=_configure,
            check=ConnectionPool.check_connection, name="hookwise",
        )
        try:
            with self._errors("connect"):
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except BaseException:
            self._pool.close()
            raise

    def now(self) -> float | None:
        return None if self._clock is None else float(self._clock())

    def _probe(self) -> None:
        """Connect once, directly, so that a wrong URL or a server that is down fails at
        once with libpq's own reason (the pool would retry in the background and time out)."""
        try:
            psycopg.connect(self._conninfo).close()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL store {self.where}: {_reason(exc)}") from exc

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Translate psycopg's errors, once, at this boundary."""
        try:
            yield
        except UnicodeEncodeError as exc:  # a lone surrogate: the server takes UTF-8 only
            raise Unstorable(f"store {doing} failed: {exc}") from exc
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.DataError):  # this data (a value out of range, ...), not the store
                raise Unstorable(f"store {doing} failed: {_reason(exc)}") from exc
            if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate[:2] in ("08", "57")):
                raise StoreError(f"the PostgreSQL store {self.where} is unavailable ({doing}): {_reason(exc)}") from exc
            raise StoreError(f"store {doing} failed: {_reason(exc)}") from exc

    @contextmanager
    def transaction(self, *, relaxed: bool = False) -> Iterator[_Tx]:
        """A transaction; ``relaxed`` commits without waiting for the WAL flush (a crash of
        the database server could lose work claimed and done again: at-least-once)."""
        with self._errors("write"), self._pool.connection() as conn:
            if not relaxed:
                with conn.transaction():
                    yield _Tx(conn)
                return
            # The worker's: pipelined, so that BEGIN and this SET go with the first statement.
            with conn.pipeline() as pipeline, conn.transaction():
                conn.execute(Q["relaxed_commit"])
                yield _Tx(conn, pipeline)

    @contextmanager
    def read(self) -> Iterator[_Tx]:
        with self._errors("read"), self._pool.connection() as conn:
            yield _Tx(conn)

    def notify(self, db: Any) -> None:
        db.all("notify_events", {})

    def migrate(self) -> None:
        """Create the schema (idempotent). Processes starting together take turns on an
        advisory lock held until the transaction ends. A schema already at this version is
        left alone: DDL, even ``IF NOT EXISTS``, locks the tables that running processes
        write to, and could deadlock with them."""
        with self.read() as db:
            if _version_in(db) >= SCHEMA_VERSION:
                return
        with self.transaction() as db:
            db.all("migrate_lock", {})
            version = _version_in(db)  # another process may have migrated meanwhile
            if version >= SCHEMA_VERSION:
                return
            db.all("schema", {})  # what is missing: tables, columns of new tables, indexes
            for later in range(version + 1, SCHEMA_VERSION + 1):
                if f"migration_{later}" in Q:  # what "schema" cannot add to an older database
                    db.all(f"migration_{later}", {})
                db.all("record_schema_version", {"version": later, "now": self.now()})

    def close(self) -> None:
        """Close the pool and the listening connection (call it once the thread waiting in
        :meth:`wait_for_events`, if any, has stopped)."""
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    # --- what differs here --------------------------------------------------------------

    def put_new_events(self, db: _Tx, items: Sequence[Incoming], now: float | None) -> list[Stored] | None:
        """None: the core's way (three pipelined statements for the batch) is the fast one here."""
        return None

    def claim_steps(self, db: _Tx, params: Params) -> list[tuple[Row, dict[str, str | None]]]:
        """One statement: the claim, the rule and event of each step, its run's outputs."""
        return [
            (row, dict(zip(row["output_ids"], row["output_values"], strict=True)))
            for row in db.all("claim_steps", params)
        ]

    # --- wake-ups -----------------------------------------------------------------------

    def wait_for_events(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for events stored by any process; True when woken
        by one, False when the time ran out. A wake-up, not a promise: the caller claims as
        usual either way, and events stored before the first call wake nobody.

        One thread waits at a time, on a connection of its own that ``LISTEN``s."""
        with self._listen_lock, self._errors("wait for events"):
            try:
                if self._listener is None or self._listener.closed:
                    self._listener = psycopg.connect(self._conninfo, autocommit=True)
                    (channel,) = self._listener.cursor(row_factory=dict_row).execute(Q["events_channel"]).fetchall()
                    self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel["channel"])))
                woken = False
                for _ in self._listener.notifies(timeout=max(0.0, timeout), stop_after=1):
                    woken = True
                if woken:  # the wake-ups queued meanwhile say nothing more
                    for _ in self._listener.notifies(timeout=0):
                        pass
                return woken
            except psycopg.Error:
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                raise


class PostgresStore(StoreCore[_Tx]):
    """The :class:`~engine.store.Store` on a PostgreSQL database (``postgresql://`` URL)."""

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        self.postgres = PostgresBackend(url, clock)
        super().__init__(self.postgres)
        self.where = self.postgres.where
        try:
            self.migrate()
        except BaseException:
            self.close()
            raise

    def notify_events(self) -> None:
        """Wake the processes waiting in :meth:`wait_for_events` (``NOTIFY``). Storing
        events does this itself, in its transaction, so the wake-up comes with the commit."""
        with self.postgres.read() as db:
            self.postgres.notify(db)

    def wait_for_events(self, timeout: float) -> bool:
        return self.postgres.wait_for_events(timeout)


def _version_in(db: _Tx) -> int:
    """The schema version recorded in the database (0 when there is none yet)."""
    if not db.all("schema_exists", {})[0]["present"]:
        return 0
    return int(db.all("schema_version", {})[0]["version"])


class _NulSafeStrDumper(StrDumperUnknown):
    """Strings as psycopg sends them, with NUL characters (which PostgreSQL text cannot hold,
    while SQLite can) replaced by U+FFFD: a NUL in an event type or an action's error message
    must not make the whole batch it belongs to fail, again and again."""

    def dump(self, obj: str) -> bytes:
        return obj.replace("\x00", "\ufffd").encode(self._encoding)


def _configure(conn: Connection) -> None:
    conn.adapters.register_dumper(str, _NulSafeStrDumper)


def _conninfo(url: str) -> tuple[str, str]:
    """The connection string (with hookwise's defaults), and the URL masked for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StoreError(f"invalid PostgreSQL store URL: {_reason(exc)}") from None
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("application_name", "hookwise")
    return make_conninfo("", **params), safe_url(url)


def _reason(exc: BaseException) -> str:
    """psycopg's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
