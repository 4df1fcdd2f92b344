"""The PostgreSQL store: the :class:`~engine.store.Store` contract on a database that several
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
them in one transaction). ``LISTEN``/``NOTIFY`` is offered as a wake-up for workers
(:meth:`PostgresStore.wait_for_events`); nothing depends on it for correctness.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError, Unstorable

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.types.string import StrDumperUnknown
    from psycopg_pool import ConnectionPool
except ImportError as exc:
    raise StoreError("the PostgreSQL store needs psycopg: pip install 'hookwise[postgres]'") from exc

from ..events import Event
from ..ids import derived_id, new_id
from ..runs import RunStatus, StepResult, StepStatus, StepTask
from . import HoverTokens, Incoming, Matched, Matcher, NewRun, QueueItem, Stored, Unrecorded, state
from . import rows as shapes  # shared with the SQLite store: the same values from both
from .queries import load_queries
from .rows import dumps as _dumps  # short names: they are everywhere here
from .rows import loads as _loads

Q = load_queries("postgres")
SQ = state.queries("postgres")
#: The time now, as every other statement of the transaction judges it.
STATE_NOW = "SELECT " + Q["now"]
#: The transaction-scoped advisory lock that serialises matching when rules keep state.
STATE_LOCK = "SELECT pg_advisory_xact_lock(7310652148901324807)"

#: Connections in the pool: the receiver's commits, the worker's claims and the commands'.
MAX_CONNECTIONS = 10
#: Seconds to wait for the server when connecting (unless the URL sets connect_timeout).
CONNECT_TIMEOUT = 10
#: Seconds a call waits for a connection from the pool before it fails.
POOL_TIMEOUT = 10.0
#: Times a requeue looks again for the open item a concurrent requeue created.
REQUEUE_TRIES = 5

Connection = psycopg.Connection[tuple[Any, ...]]
Row = tuple[Any, ...]


#: The version of the schema this code creates (``schema_version`` in the database):
#: ``schema`` is version 1, each ``migration_N`` block brings it to N.
SCHEMA_VERSION = 5
#: The migration that creates the tables of stateful rules (``sql/state.sql``).
STATE_MIGRATION = 5


def _version_in(conn: Any) -> int:
    """The schema version recorded in the database (0 when there is none yet)."""
    if not conn.execute(Q["schema_exists"]).fetchone()[0]:
        return 0
    return int(conn.execute(Q["schema_version"]).fetchone()[0])


class PostgresStore:
    """The :class:`~engine.store.Store` on a PostgreSQL database (``postgresql://`` URL).

    Without ``clock`` the database's clock judges every lease, delay and retry; with one,
    each transaction runs at that clock's time (tests move it instead of sleeping)."""

    def __init__(self, url: str, *, clock: Callable[[], float] | None = None) -> None:
        self._conninfo, self.where = _conninfo(url)
        self._clock = clock
        self._listener: Connection | None = None
        self._listen_lock = threading.Lock()
        self._probe()
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo, min_size=1, max_size=MAX_CONNECTIONS, open=False, timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True}, configure=_configure, check=ConnectionPool.check_connection, name="hookwise",
        )
        try:
            with self._errors("connect"):
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self.migrate()
        except BaseException:
            self._pool.close()
            raise

    # --- connections, transactions and errors -------------------------------------------

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
    def _transaction(self, doing: str = "write", *, relaxed: bool = False) -> Iterator[Connection]:
        """A transaction. ``relaxed`` (the worker's bookkeeping: claims, leases, runs created,
        step outcomes) commits without waiting for the WAL flush: a crash of any hookwise
        process loses nothing, and what a crash of the database server could lose is work
        claimed and done again — at-least-once allows it. Events and everything else a
        sender or a person was told wait for the flush."""
        with self._errors(doing), self._pool.connection() as conn, conn.transaction():
            if relaxed:
                conn.execute(Q["relaxed_commit"])
            self._set_clock(conn)
            yield conn

    def _set_clock(self, conn: Connection) -> None:
        """With a clock of its own, the transaction's "now" is that clock's time."""
        if self._clock is not None:
            conn.execute(Q["set_now"], {"now": repr(float(self._clock()))})

    @contextmanager
    def _statement(self, doing: str) -> Iterator[Connection]:
        """A connection for one statement on its own: autocommit, unless the store has a
        clock of its own (its time is set for a transaction)."""
        with self._errors(doing), self._pool.connection() as conn:
            if self._clock is None:
                yield conn
                return
            with conn.transaction():
                self._set_clock(conn)
                yield conn

    def _query(self, name: str, params: dict[str, Any] | None = None, doing: str = "read") -> list[Row]:
        """One statement on its own (autocommit): its rows, if it returns any."""
        with self._statement(doing) as conn:
            cursor = conn.execute(Q[name], params)
            return cursor.fetchall() if cursor.description is not None else []

    def _count(self, name: str, params: dict[str, Any] | None = None) -> int:
        """One writing statement on its own (autocommit): the rows it changed."""
        with self._statement("write") as conn:
            return conn.execute(Q[name], params).rowcount

    def ping(self) -> None:
        self._query("ping")

    def probe_write(self) -> None:
        with self._transaction("probe") as db:
            db.execute(Q["probe_write"])

    def migrate(self) -> None:
        """Create the schema (idempotent). Processes starting together take turns on an
        advisory lock held until the transaction ends. A schema already at this version is
        left alone: DDL, even ``IF NOT EXISTS``, locks the tables that running processes
        write to, and could deadlock with them."""
        if self._schema_version() >= SCHEMA_VERSION:
            return
        with self._transaction("migrate") as db:
            db.execute(Q["migrate_lock"])
            version = _version_in(db)  # another process may have migrated meanwhile
            if version < 1:
                db.execute(Q["schema"])
            for later in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                if later == STATE_MIGRATION:
                    db.execute(SQ["schema"])
                db.execute(Q[f"migration_{later}"])

    def _schema_version(self) -> int:
        with self._errors("migrate"), self._pool.connection() as conn:
            return _version_in(conn)

    def close(self) -> None:
        """Close the pool and the listening connection (call it once the thread waiting in
        :meth:`wait_for_events`, if any, has stopped)."""
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    # --- wake-ups -----------------------------------------------------------------------

    def notify_events(self) -> None:
        """Wake the processes waiting in :meth:`wait_for_events` (``NOTIFY``). Storing
        events does this itself, in its transaction, so the wake-up comes with the commit."""
        self._query("notify_events", doing="notify")

    def wait_for_events(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for events stored by any process; True when woken
        by one, False when the time ran out. A wake-up, not a promise: the caller claims as
        usual either way, and events stored before the first call wake nobody.

        One thread waits at a time, on a connection of its own that ``LISTEN``s."""
        with self._listen_lock, self._errors("wait for events"):
            try:
                listener = self._listening()
                woken = False
                for _ in listener.notifies(timeout=max(0.0, timeout), stop_after=1):
                    woken = True
                if woken:  # the wake-ups queued meanwhile say nothing more
                    for _ in listener.notifies(timeout=0):
                        pass
                return woken
            except psycopg.Error:
                self._drop_listener()
                raise

    def _listening(self) -> Connection:
        if self._listener is None or self._listener.closed:
            listener = psycopg.connect(self._conninfo, autocommit=True)
            listener.execute(Q["listen_events"])
            self._listener = listener
        return self._listener

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # --- events -------------------------------------------------------------------------

    def put_events(self, items: Sequence[Incoming]) -> list[Stored]:
        """The batch in one transaction and three round trips, whatever its size: the
        delivery ids, then the events, then (for duplicates) the events that hold the ids.
        The server runs each group's statements in order, so a delivery id twice in one
        batch is a duplicate the second time, as when they come one by one."""
        with self._transaction() as db:
            keyed = [n for n, item in enumerate(items) if item.delivery_id is not None]
            took = _each(db, "put_delivery", [_delivery_row(items[n]) for n in keyed])
            dups = {n for n, rows in zip(keyed, took, strict=True) if not rows}
            new = [n for n in range(len(items)) if n not in dups]
            put = _each(db, "put_event", [_event_row(items[n]) for n in new])
            inserted = {n for n, rows in zip(new, put, strict=True) if rows}
            held = sorted(dups)
            found = _each(db, "find_delivery", [_delivery_row(items[n]) for n in held])
            holders = {n: rows[0][0] for n, rows in zip(held, found, strict=True)}
            if inserted:
                db.execute(Q["notify_events"])
        return [Stored(holders[n], True) if n in holders else Stored(item.id, n not in inserted)
                for n, item in enumerate(items)]

    def _put_event(self, db: Connection, item: Incoming) -> Stored:
        """One event and its delivery id, in the caller's transaction: a failure later in
        it rolls the delivery id back with the event, so a refused request never burns it."""
        if item.delivery_id is not None:
            key = {"source": item.source, "delivery_id": item.delivery_id}
            taken = db.execute(
                Q["put_delivery"], {**key, "event_id": item.id, "expires_at": item.received_at + item.dedupe_window}
            )
            if taken.fetchone() is None:
                (event_id,) = _one(db.execute(Q["find_delivery"], key).fetchone())
                return Stored(event_id, duplicate=True)
        cursor = db.execute(Q["put_event"], _event_row(item))
        return Stored(item.id, duplicate=cursor.rowcount == 0)

    def claim_events(self, limit: int, lease: float) -> list[Event]:
        with self._transaction("claim", relaxed=True) as db:
            rows = db.execute(Q["claim_events"], {"limit": limit, "lease": float(lease)}).fetchall()
        return [shapes.event(row) for row in rows]

    def record_matches(self, matches: Sequence[Matched], *, claim: int = 0, lease: float = 0.0) -> list[StepTask]:
        with self._transaction(relaxed=True) as db:
            return self._record_matches(db, matches, claim, lease)

    def _record_matches(self, db: Connection, matches: Sequence[Matched], claim: int, lease: float) -> list[StepTask]:
        claimed: list[StepTask] = []
        now = 0.0
        if state.has_state(matches):  # one recorder of rule state at a time, and its time
            db.execute(STATE_LOCK)
            now = _now(db)
        for match in matches:
            match = state.apply(db, SQ, match, now)
            for run in match.runs:
                if not self._put_run(db, match.event_id, run):  # matched before by a worker whose claim ran out
                    continue
                if not run.steps:
                    _update_run(db, run.id, RunStatus.SUCCEEDED, 0, None)
                    continue
                held = run.order_key is not None and state.hold(db, SQ, run, now) is not None
                take = len(claimed) < claim and run.first_delay <= 0 and match.event is not None and not held
                _put_steps(db, run, lease if take else None, held)
                if take:
                    assert match.event is not None
                    _, step_id, action = run.steps[0]
                    claimed.append(StepTask(run.id, 0, step_id, action, 1, run.rule, run.version, match.event))
            db.execute(Q["event_matched"], {"explain": _dumps(match.explain), "id": match.event_id})
        return claimed

    def match_events(
        self, limit: int, match: Matcher, *, event_lease: float, claim: int = 0, lease: float = 0.0,
        serial: bool = False,
    ) -> tuple[int, list[StepTask]]:
        """Two transactions: matching runs between them, holding no row lock; the claim's
        lease keeps the events from other workers meanwhile. ``serial`` (rules keep state):
        one transaction, under an advisory lock, so that workers claim, match and record
        in turn: runs of an order_by key are created in arrival order, and counts and
        throttles never race."""
        if not serial:
            events = self.claim_events(limit, event_lease)
            if not events:
                return 0, []
            return len(events), self.record_matches(match(events), claim=claim, lease=lease)
        with self._transaction("claim", relaxed=True) as db:
            db.execute(STATE_LOCK)
            rows = db.execute(Q["claim_events"], {"limit": limit, "lease": float(event_lease)}).fetchall()
            if not rows:
                return 0, []
            return len(rows), self._record_matches(db, match([shapes.event(row) for row in rows]), claim, lease)

    def _put_run(self, db: Connection, event_id: str, run: NewRun) -> bool:
        """Whether the run was created (False: the (event, rule) pair has its run)."""
        db.execute(
            Q["put_rule_version"],
            {"version": run.version, "name": run.rule, "file": run.rule_file, "text": run.rule_text}
        )
        params = {"id": run.id, "event_id": event_id, "rule": run.rule, "version": run.version, "shadow": run.shadow}
        return bool(db.execute(Q["put_run"], params).rowcount)

    # --- steps --------------------------------------------------------------------------

    def claim_steps(self, limit: int, lease: float) -> list[StepTask]:
        with self._transaction("claim", relaxed=True) as db:
            rows = db.execute(Q["claim_steps"], {"limit": limit, "lease": float(lease)}).fetchall()
        return [_task(row) for row in rows]

    def record_steps(self, results: Sequence[StepResult]) -> list[Unrecorded]:
        """The batch in one transaction; when that fails, again with each result in a
        savepoint of its own (a round trip more each, so only then), so that one the store
        cannot hold fails alone."""
        try:
            with self._transaction(relaxed=True) as db:
                for result in results:
                    _record_step(db, result)
            return []
        except Exception:  # noqa: BLE001 - text psycopg cannot send, a value or a write refused: found below
            pass
        with self._transaction(relaxed=True) as db:
            return [u for result in results if (u := _record_alone(db, result)) is not None]

    def extend_leases(self, tasks: Sequence[StepTask], lease: float) -> None:
        if not tasks:
            return
        with self._transaction(relaxed=True) as db:
            db.cursor().executemany(Q["extend_lease"], [
                {"lease": float(lease), "run_id": t.run_id, "idx": t.index, "attempt": t.attempt} for t in tasks
            ])

    def next_due(self) -> float | None:
        due: float | None = self._query("next_due")[0][0]
        timer: float | None = self._query_state("next_timer_due")[0][0]
        return min((t for t in (due, timer) if t is not None), default=None)

    # --- stateful rules -----------------------------------------------------------------

    def _query_state(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        with self._statement("read") as conn:
            return conn.execute(SQ[name], params).fetchall()

    def fire_timers(self, limit: int = 100) -> int:
        with self._transaction() as db:
            now = _now(db)
            events = state.fire_due(db, SQ, now, limit)
            for event in events:
                self._put_event(db, event)
            if events:
                db.execute(Q["notify_events"])
        return len(events)

    def skip_run(self, run_id: str) -> dict[str, Any] | None:
        with self._transaction() as db:
            db.execute(STATE_LOCK)
            if not state.skip(db, SQ, run_id, _now(db)):
                return None
        return self.get_run(run_id)

    def rule_state(self, rule: str, limit: int = 50) -> dict[str, Any]:
        with self._statement("read") as db:
            return state.rule_state(db, SQ, rule, _now(db), limit)

    def event_timers(self, event_id: str) -> list[dict[str, Any]]:
        with self._statement("read") as db:
            return state.timers_of_event(db, SQ, event_id)

    def run_waiting_for(self, run_id: str) -> dict[str, Any] | None:
        with self._statement("read") as db:
            return state.waiting_for(db, SQ, run_id)

    def rule_text(self, version: str) -> tuple[str, str, str] | None:
        rows = self._query("get_rule_version", {"version": version})
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # --- work queues --------------------------------------------------------------------

    def requeue(
        self, queue: str, key: str, data: Any, *, delay: float, max_attempts: int, request_id: str
    ) -> QueueItem:
        with self._transaction() as db:
            for _ in range(REQUEUE_TRIES):
                row = db.execute(Q["open_queue_item"], {"queue": queue, "key": key}).fetchone()
                if row is not None:
                    break
                item_id = new_id()
                inserted = db.execute(Q["insert_queue_item"], {
                    "id": item_id, "queue": queue, "key": key, "data": _dumps(data), "max_attempts": max_attempts,
                    "delay": float(delay), "request_id": request_id,
                }).rowcount
                if inserted:
                    return _get_queue_item(db, item_id)
                # else a concurrent requeue of the same key inserted first: update its item
            else:
                raise StoreError(f"cannot requeue {key!r} in {queue!r}: its item kept changing; try again")
            item_id, _, attempts, _, last_request = row
            if last_request == request_id:  # the same step again (a retry after a crash)
                return _get_queue_item(db, item_id)
            db.execute(Q["requeue_item"], {
                "data": _dumps(data), "max_attempts": max_attempts, "delay": float(delay), "request_id": request_id,
                "id": item_id,
            })
            if attempts + 1 > max_attempts:
                return self._exhaust(
                    db, item_id, f"requeued {attempts + 1} times, more than max_attempts {max_attempts}"
                )
            return _get_queue_item(db, item_id)

    def _exhaust(self, db: Connection, item_id: str, error: str) -> QueueItem:
        """Mark the item dead and store its ``queue.exhausted`` event, in the caller's
        transaction."""
        db.execute(Q["queue_item_dead"], {"error": error, "id": item_id})
        item = _get_queue_item(db, item_id)
        body = {"queue": item.queue, "key": item.key, "item_id": item.id, "attempts": item.attempts,
                "max_attempts": item.max_attempts, "data": item.data, "error": error}
        event = Incoming(source="hookwise", type="queue.exhausted", body=_dumps(body) or "{}", headers={}, query={},
                         received_at=item.updated_at, id=derived_id("queue.exhausted", item_id, str(item.attempts)))
        stored = self._put_event(db, event)
        db.execute(Q["notify_events"])
        return dataclasses.replace(item, exhausted_event=stored.event_id)

    def claim_queue_item(self, queue: str, lease: float) -> QueueItem | None:
        rows = self._query("claim_queue_item", {"queue": queue, "lease": float(lease)}, doing="claim")
        return shapes.queue_item(rows[0]) if rows else None

    def finish_queue_item(self, item_id: str) -> QueueItem | None:
        rows = self._query("queue_item_done", {"id": item_id}, doing="write")
        return shapes.queue_item(rows[0]) if rows else None

    def fail_queue_item(self, item_id: str, retry_in: float, error: str | None) -> QueueItem | None:
        with self._transaction() as db:
            retry = {"retry_in": float(retry_in), "error": error, "id": item_id}
            row = db.execute(Q["queue_item_retry"], retry).fetchone()
            if row is None:
                return None
            item = shapes.queue_item(row)
            if item.attempts > item.max_attempts:
                return self._exhaust(db, item_id, error or f"failed {item.attempts} times")
            return item

    def get_queue_item(self, item_id: str) -> QueueItem | None:
        rows = self._query("get_queue_item", {"id": item_id})
        return shapes.queue_item(rows[0]) if rows else None

    def list_queue_items(self, queue: str, status: str | None = None, limit: int = 100) -> list[QueueItem]:
        rows = self._query("list_queue_items", {"queue": queue, "status": status, "limit": limit})
        return [shapes.queue_item(r) for r in rows]

    def queue_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in self._query("queue_counts"):
            counts.setdefault(queue, {})[status] = count
        return counts

    # --- the Hover account --------------------------------------------------------------

    def hover_tokens(self, account: str = "default") -> HoverTokens | None:
        rows = self._query("get_hover_account", {"account": account})
        if not rows or rows[0][0] is None:
            return None
        return HoverTokens(rows[0][0], rows[0][1], rows[0][2])

    def save_hover_tokens(self, tokens: HoverTokens, account: str = "default") -> None:
        self._count("save_hover_tokens", {
            "account": account, "access_token": tokens.access_token, "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at,
        })

    def lock_hover_account(self, holder: str, ttl: float, account: str = "default") -> bool:
        return bool(
            self._query("lock_hover_account", {"account": account, "holder": holder, "ttl": float(ttl)}, doing="write")
        )

    def unlock_hover_account(self, holder: str, account: str = "default") -> None:
        self._count("unlock_hover_account", {"account": account, "holder": holder})

    def save_hover_webhook(
        self, webhook_id: str, *, source: str | None = None, url: str | None = None,
        verified_at: float | None = None, last_error: str | None = None, verify_method: str | None = None,
    ) -> None:
        self._count("save_hover_webhook", {
            "webhook_id": webhook_id, "source": source, "url": url, "verified_at": verified_at,
            "last_error": last_error,
            "verify_method": verify_method,
        })

    def hover_webhooks(self) -> list[dict[str, Any]]:
        return [dict(zip(shapes.HOVER_WEBHOOK, row, strict=True)) for row in self._query("list_hover_webhooks")]

    def begin_hover_login(self, state: str, ttl: float, account: str = "default") -> None:
        self._count("begin_hover_login", {"state": state, "account": account, "ttl": float(ttl)})

    def take_hover_login(self, state: str) -> str | None:
        rows = self._query("take_hover_login", {"state": state}, doing="write")
        return None if not rows else str(rows[0][0])

    def finish_hover_login(self, state: str, error: str | None = None) -> None:
        self._count("finish_hover_login", {"state": state, "status": "failed" if error else "done", "error": error})

    def hover_login(self, state: str) -> dict[str, Any] | None:
        rows = self._query("get_hover_login", {"state": state})
        return dict(zip(shapes.HOVER_LOGIN, rows[0], strict=True)) if rows else None

    def wake_steps(self, action: str, error_prefix: str) -> int:
        return self._count("wake_steps", {"action": action, "prefix": error_prefix})

    # --- reading ------------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("get_event", {"id": event_id})
        if not rows:
            return None
        return shapes.event_detail(rows[0])

    def list_events(
        self, limit: int = 50, *, source: str | None = None, type: str | None = None, status: str | None = None,
        since: float | None = None, until: float | None = None, cursor: int | None = None,
    ) -> list[dict[str, Any]]:
        params = {
            "limit": limit, "source": source, "type": type, "status": status, "since": since, "until": until,
            "cursor": cursor
        }
        return [dict(zip(shapes.EVENT_SUMMARY, row, strict=True)) for row in self._query("list_events", params)]

    def replay_event(self, event_id: str, rules: Sequence[str] | None = None) -> str | None:
        new = new_id()
        with self._transaction() as db:
            params = {"id": new, "of": event_id, "only_rules": _dumps(list(rules)) if rules else None}
            if not db.execute(Q["put_replay"], params).rowcount:
                return None
            db.execute(Q["notify_events"])
        return new

    def retry_run(self, run_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
        with self._transaction() as db:
            row = db.execute(Q["dead_step"], {"run_id": run_id}).fetchone()
            if row is None or not db.execute(Q["revive_run"], {"id": run_id}).rowcount:
                return None
            db.execute(
                Q["retry_dead_step"],
                {"overrides": _dumps(overrides) if overrides else None, "run_id": run_id, "idx": row[0]}
            )
            _update_run(db, run_id, RunStatus.ACTIVE, row[0], None)
        return self.get_run(run_id)

    def rule_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for rule, status, count in self._query("rule_counts"):
            counts.setdefault(rule, {})[status] = count
        return counts

    def prune(self, before: float, batch: int = 500) -> dict[str, int]:
        """Delete one batch of finished runs, events and delivery ids older than
        ``before``; small transactions, rows other transactions hold are left for later."""
        with self._transaction() as db:
            runs = [r[0] for r in db.execute(Q["prune_runs"], {"before": before, "batch": batch}).fetchall()]
            if runs:
                db.execute(Q["prune_steps"], {"runs": runs})
        events = self._count("prune_events", {"before": before, "batch": batch})
        deliveries = self._count("prune_deliveries", {"batch": batch})
        with self._transaction() as db:
            kept = state.prune(db, SQ, _now(db), before)
        return {"runs": len(runs), "events": events, "deliveries": deliveries, "state": kept}

    def runs_of_event(self, event_id: str) -> list[dict[str, Any]]:
        return [shapes.run(row) for row in self._query("runs_of_event", {"event_id": event_id})]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query("get_run", {"id": run_id})
        return shapes.run(rows[0]) if rows else None

    def list_runs(
        self, status: str | None = None, limit: int = 50, rule: str | None = None, shadow: bool | None = None
    ) -> list[dict[str, Any]]:
        params = {"status": status, "limit": limit, "rule": rule, "shadow": shadow}
        return [shapes.run(row) for row in self._query("list_runs", params)]

    def scan_events(
        self, *, since: float, until: float | None = None, source: str | None = None, type: str | None = None,
        after: int = 0, limit: int = 1000,
    ) -> list[shapes.Scanned]:
        params = {"since": since, "until": until, "source": source, "type": type, "after": after, "limit": limit}
        return [shapes.scanned(row) for row in self._query("scan_events", params)]

    def sample_bodies(self, source: str, type: str, limit: int = 100) -> list[Any]:
        rows = self._query("sample_bodies", {"source": source, "type": type, "limit": limit})
        return [_loads(row[0]) for row in rows]

    def steps_of_run(self, run_id: str) -> list[dict[str, Any]]:
        return shapes.steps(self._query("steps_of_run", {"run_id": run_id}))

    def events_per_minute(self, since: float) -> list[tuple[str, int, int]]:
        rows = self._query("events_per_minute", {"since": since})
        return [(source, int(minute), count) for source, minute, count in rows]

    def run_status_counts(self) -> dict[str, int]:
        return {status: count for status, count in self._query("run_status_counts")}

    def retrying_steps(self, limit: int = 10) -> list[dict[str, Any]]:
        return [
            dict(zip(shapes.RETRYING_STEP, row, strict=True)) for row in self._query("retrying_steps", {"limit": limit})
        ]


# --- statements inside a caller's transaction ---------------------------------------------


def _put_steps(db: Connection, run: NewRun, lease: float | None, held: bool = False) -> None:
    """The run's steps: the first ready (or, with ``lease``, running: claimed by the
    caller), the others waiting; all waiting when ``held`` (its order_by key is busy)."""
    rows = [
        {"run_id": run.id, "idx": index, "step_id": step_id, "action": action} for index, step_id, action in run.steps
    ]
    for row in rows:
        if row["idx"] == 0 and held:
            db.execute(Q["put_waiting_step"], row)
        elif row["idx"] == 0 and lease is not None:
            db.execute(Q["put_claimed_step"], {**row, "lease": float(lease)})
        elif row["idx"] == 0:
            db.execute(Q["put_ready_step"], {**row, "delay": float(run.first_delay)})
    waiting = [row for row in rows if row["idx"] != 0]
    if waiting:
        db.cursor().executemany(Q["put_waiting_step"], waiting)


def _record_step(db: Connection, r: StepResult) -> None:
    """Record one outcome; a result whose claim is no longer current (the step's attempt
    changed, or it is not running any more) changes nothing."""
    t = r.task
    if r.outcome == "deferred":
        db.execute(Q["defer_step"], {"run_id": t.run_id, "idx": t.index, "attempt": t.attempt,
                                     "retry_in": float(r.retry_in or 0.0)})
        return
    key = {
        "run_id": t.run_id, "idx": t.index, "attempt": t.attempt, "params": _dumps(r.params),
        "finished_at": r.finished_at
    }
    if r.outcome in ("succeeded", "skipped"):
        if _finish_step(db, key, r.outcome, _dumps(r.output), None):
            _advance(db, r)
    elif r.retry_in is not None:
        db.execute(Q["retry_step"], {**key, "retry_in": float(r.retry_in), "error": r.error})
    elif r.continue_on_error:
        if _finish_step(db, key, StepStatus.FAILED.value, None, r.error):
            _advance(db, r)
    elif _finish_step(db, key, StepStatus.DEAD.value, None, r.error):
        _update_run(db, t.run_id, RunStatus.DEAD, t.index, r.error)


def _record_alone(db: Connection, r: StepResult) -> Unrecorded | None:
    """Record one outcome in a savepoint of its own; what stopped it, if anything. (When
    the connection itself failed, the transaction's commit fails after this.)"""
    try:
        with db.transaction():
            _record_step(db, r)
    except Exception as exc:  # noqa: BLE001 - this result's own failure
        return Unrecorded(r, _reason(exc))
    return None


def _finish_step(db: Connection, key: dict[str, Any], status: str, output: str | None, error: str | None) -> bool:
    return bool(db.execute(Q["finish_step"], {**key, "status": status, "output": output, "error": error}).rowcount)


def _advance(db: Connection, r: StepResult) -> None:
    t = r.task
    following = {"delay": float(r.next_delay), "run_id": t.run_id, "idx": t.index + 1}
    if not r.last_step and db.execute(Q["start_next_step"], following).rowcount:
        _update_run(db, t.run_id, RunStatus.ACTIVE, t.index + 1, None)
    else:
        _update_run(db, t.run_id, RunStatus.SUCCEEDED, t.index, None)
        if r.ordered:  # in turn with matching: a run created meanwhile behind this one is seen
            db.execute(STATE_LOCK)
            state.release(db, SQ, t.run_id, _now(db))


def _now(db: Connection) -> float:
    """The transaction's time now (the store's clock, or the database's)."""
    return float(_one(db.execute(STATE_NOW).fetchone())[0])


def _update_run(db: Connection, run_id: str, status: RunStatus, step: int, error: str | None) -> None:
    db.execute(Q["update_run"], {"status": status.value, "step": step, "error": error, "id": run_id})


def _get_queue_item(db: Connection, item_id: str) -> QueueItem:
    return shapes.queue_item(_one(db.execute(Q["get_queue_item"], {"id": item_id}).fetchone()))


# --- values -------------------------------------------------------------------------------


def _one(row: Row | None) -> Row:
    if row is None:  # a row this transaction wrote or locked: it cannot be gone
        raise StoreError("store read failed: a row vanished within its transaction")
    return row


def _each(db: Connection, name: str, params: list[dict[str, Any]]) -> list[list[Row]]:
    """Run query ``name`` once for each of ``params`` in one round trip (a pipeline); the
    rows each run returned."""
    if not params:
        return []
    cursor = db.cursor()
    cursor.executemany(Q[name], params, returning=True)
    results = [cursor.fetchall()]
    while cursor.nextset():
        results.append(cursor.fetchall())
    return results


def _delivery_row(item: Incoming) -> dict[str, Any]:
    return {
        "source": item.source, "delivery_id": item.delivery_id, "event_id": item.id,
        "expires_at": item.received_at + item.dedupe_window
    }


def _event_row(item: Incoming) -> dict[str, Any]:
    return {
        "id": item.id, "source": item.source, "type": item.type, "delivery_id": item.delivery_id, "body": item.body,
        "headers": _dumps(item.headers), "query": _dumps(item.query) if item.query else "{}",
        "received_at": item.received_at, "depth": item.depth,
        "available_at": item.available_at if item.available_at is not None else item.received_at,
    }


def _task(row: Row) -> StepTask:
    run_id, index, step_id, action, attempt, overrides, rule, version = row[:8]
    output_ids, output_values = row[19], row[20]
    outputs = {sid: _loads(out) for sid, out in zip(output_ids, output_values, strict=True)} if index else {}
    return StepTask(
        run_id=run_id, index=index, step_id=step_id, action=action, attempt=attempt, rule=rule,
        rule_version=version, event=shapes.event(row[8:19]), outputs=outputs, overrides=_loads(overrides) or {},
    )


# --- connecting ---------------------------------------------------------------------------


class _NulSafeStrDumper(StrDumperUnknown):
    """Strings as psycopg sends them, with NUL characters (which PostgreSQL text cannot hold,
    while SQLite can) replaced by U+FFFD: a NUL in an event type or an action's error message
    must not make the whole batch it belongs to fail, again and again."""

    def dump(self, obj: str) -> bytes:
        return obj.replace("\x00", "\ufffd").encode(self._encoding)


def _configure(conn: Connection) -> None:
    conn.adapters.register_dumper(str, _NulSafeStrDumper)


def _conninfo(url: str) -> tuple[str, str]:
    """The connection string (with hookwise's defaults), and the URL without its password,
    for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StoreError(f"invalid PostgreSQL store URL: {_reason(exc)}") from None
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("application_name", "hookwise")
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    where = f"postgresql://{user}{params.get('host') or ''}{port}/{params.get('dbname') or ''}"
    return make_conninfo("", **params), where


def _reason(exc: BaseException) -> str:
    """psycopg's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
