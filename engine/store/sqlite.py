"""The SQLite store: one file, WAL journal, ``synchronous=FULL``.

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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError, Unstorable
from ..events import Event
from ..ids import derived_id, new_id
from ..runs import RunStatus, StepResult, StepStatus, StepTask
from . import HoverTokens, Incoming, Matched, Matcher, QueueItem, Stored, Unrecorded, state
from . import rows as shapes
from .queries import load_queries
from .rows import dumps as _dumps  # short names: they are everywhere here
from .rows import loads as _loads

Q = load_queries("sqlite")
SQ = state.queries("sqlite")

#: Columns added after a table was first released: (name, type) by table.
_ADDED_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "events": [("replay_of", "TEXT"), ("only_rules", "TEXT")],
    "runs": [("shadow", "INTEGER NOT NULL DEFAULT 0")],
    "hover_webhooks": [("verify_method", "TEXT")],
}
#: Queries run once, right after the column they come with was added to an older file.
_WITH_COLUMN = {("hover_webhooks", "verify_method"): "forget_phantom_webhooks"}
#: How long a finished or expired Hover login state is kept (for `hookwise hover login` to read).
LOGIN_KEPT = 86400.0

#: How long a writer waits for the database lock before the operation fails.
BUSY_TIMEOUT_MS = 10_000






class SQLiteStore:
    """The :class:`~engine.store.Store` on one SQLite file.

    ``clock`` gives the time now, in unix seconds, for every lease, delay, retry and
    timestamp the store judges or writes (tests move it instead of sleeping)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Re-entrant: a write begun inside another on one thread fails as SQLite says
        # (no transaction within a transaction) rather than waiting for itself.
        self._writer = threading.RLock()
        self._versions: set[str] = set()  # rule versions known to be stored
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        self.migrate()

    # --- connections and transactions -----------------------------------------------

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
                try:
                    # Statement and savepoint journals in memory: a batch of events
                    # would otherwise spill them to a temporary file, made and deleted
                    # per commit.
                    conn.execute("PRAGMA temp_store=MEMORY")
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=FULL")
                    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
    def _write(self, sync: str = "FULL") -> Iterator[sqlite3.Connection]:
        """A write transaction. Threads of this process take turns on a lock first: SQLite
        lets one writer in at a time anyway, and its own wait for the lock is a sleep of
        up to 100 ms between tries, where this one ends the moment the lock is free (the
        receiver's commits and the worker's must not sleep on each other)."""
        conn = self._connection()
        try:
            with self._writer:
                if getattr(self._local, "sync", "FULL") != sync:
                    conn.execute(f"PRAGMA synchronous={sync}")
                    self._local.sync = sync
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.DataError as exc:  # e.g. a value too big: this data, not the store
            raise Unstorable(f"store write failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    def _read(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        conn = self._connection()
        try:
            return conn.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    def ping(self) -> None:
        self._read("SELECT 1")

    def probe_write(self) -> None:
        with self._write() as db:
            db.execute(Q["probe_write"], (self.clock(),))

    def migrate(self) -> None:
        """Create the schema, and add the columns later versions brought to an older file."""
        conn = self._connection()
        try:
            # One write transaction taken up front: processes starting together wait for
            # each other (busy timeout) instead of failing half way through the schema.
            conn.executescript(f"BEGIN IMMEDIATE;\n{Q['schema']}\n{SQ['schema']}\nCOMMIT;")
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
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

    # --- events -----------------------------------------------------------------------

    def put_events(self, items: Sequence[Incoming]) -> list[Stored]:
        now = self.clock()
        try:
            with self._write() as db:
                fast = self._put_new_events(db, items, now)
                if fast is not None:
                    return fast
                return [self._put_event(db, item, now) for item in items]
        except UnicodeEncodeError as exc:  # a lone surrogate: SQLite takes UTF-8 only
            raise Unstorable(f"the store cannot hold this event: {exc}") from exc

    def _put_new_events(self, db: sqlite3.Connection, items: Sequence[Incoming], now: float) -> list[Stored] | None:
        """The common case in a few statements for the whole batch: every delivery id is
        new. Returns None (having changed nothing) when one is not."""
        keyed = [i for i in items if i.delivery_id is not None]
        db.execute("SAVEPOINT batch")
        taken = _insert_rows(db, "put_deliveries", [
            (i.source, i.delivery_id, i.id, i.received_at + i.dedupe_window) for i in keyed
        ], now) if keyed else 0
        new = taken == len(keyed) and len({(i.source, i.delivery_id) for i in keyed}) == len(keyed)
        if new:  # an emitted event's id may be stored already: then it is no fast case either
            new = _insert_rows(db, "put_events", [_event_row(i) for i in items]) == len(items)
        if not new:
            db.execute("ROLLBACK TO batch")
        db.execute("RELEASE batch")
        return [Stored(i.id) for i in items] if new else None

    def _put_event(self, db: sqlite3.Connection, item: Incoming, now: float) -> Stored:
        if item.delivery_id is not None:
            taken = _insert_rows(
                db, "put_deliveries", [(item.source, item.delivery_id, item.id, item.received_at + item.dedupe_window)],
                now
            )
            if not taken:
                (event_id,) = db.execute(Q["find_delivery"], (item.source, item.delivery_id)).fetchone()
                return Stored(event_id, duplicate=True)
        return Stored(item.id, duplicate=not _insert_rows(db, "put_events", [_event_row(item)]))

    def claim_events(self, limit: int, lease: float) -> list[Event]:
        now = self.clock()
        if not self._due("next_event_due", now):
            return []
        with self._write("NORMAL") as db:
            rows = db.execute(Q["claim_events"], {"now": now, "lease_until": now + lease, "limit": limit}).fetchall()
        return [shapes.event(row) for row in rows]

    def _due(self, query: str, now: float) -> bool:
        """Whether anything is due by ``now``: a read, cheaper than a write transaction
        that finds nothing to claim (the worker asks on every round of its loop)."""
        (due,) = self._read(Q[query])[0]
        return due is not None and due <= now

    def record_matches(self, matches: Sequence[Matched], *, claim: int = 0, lease: float = 0.0) -> list[StepTask]:
        versions: set[str] = set()  # rule versions written by this transaction
        with self._write("NORMAL") as db:
            claimed = self._record_matches(db, matches, self.clock(), claim, lease, versions)
        self._versions |= versions  # committed: rule versions are never deleted
        return claimed

    def match_events(
        self, limit: int, match: Matcher, *, event_lease: float, claim: int = 0, lease: float = 0.0,
        serial: bool = False,
    ) -> tuple[int, list[StepTask]]:
        """One transaction, holding the write lock while ``match`` runs (a millisecond for
        a batch): no other writer can take the events meanwhile, so they need no lease
        (``event_lease`` is unused), and each event row is written once (matched) rather
        than twice (leased, then matched). Always serial, whatever ``serial`` says."""
        now = self.clock()
        if not self._due("next_event_due", now):
            return 0, []
        versions: set[str] = set()
        with self._write("NORMAL") as db:
            rows = db.execute(Q["due_events"], {"now": now, "limit": limit}).fetchall()
            if not rows:
                return 0, []
            matches = match([shapes.event(row) for row in rows])
            claimed = self._record_matches(db, matches, now, claim, lease, versions)
        self._versions |= versions
        return len(rows), claimed

    def _record_matches(
        self, db: sqlite3.Connection, matches: Sequence[Matched], now: float, claim: int, lease: float,
        versions: set[str],
    ) -> list[StepTask]:
        claimed: list[StepTask] = []
        for match in matches:
            match = state.apply(db, SQ, match, now)
            for run in match.runs:
                if run.version not in self._versions and run.version not in versions:
                    db.execute(Q["put_rule_version"], (run.version, run.rule, run.rule_file, run.rule_text))
                    versions.add(run.version)
                created = db.execute(
                    Q["put_run"], (run.id, match.event_id, run.rule, run.version, now, now, int(run.shadow))
                ).rowcount
                if not created:  # matched before by a worker whose claim ran out: its run stands
                    continue
                if not run.steps:
                    db.execute(Q["update_run"], (RunStatus.SUCCEEDED.value, 0, None, now, run.id))
                    continue
                held = run.order_key is not None and state.hold(db, SQ, run, now) is not None
                take = len(claimed) < claim and run.first_delay <= 0 and match.event is not None and not held
                self._put_steps(db, run, now, lease if take else None, held)
                if take:
                    assert match.event is not None
                    _, step_id, action = run.steps[0]
                    claimed.append(StepTask(run.id, 0, step_id, action, 1, run.rule, run.version, match.event))
            db.execute(Q["event_matched"], (_dumps(match.explain), match.event_id))
        return claimed

    def _put_steps(self, db: sqlite3.Connection, run: Any, now: float, lease: float | None, held: bool) -> None:
        """The run's steps: the first ready (or, with ``lease``, running: claimed by the
        caller), the others waiting; all waiting when ``held`` (its order_by key is busy)."""
        for index, step_id, action in run.steps:
            if index == 0 and held:
                db.execute(Q["put_step"], (run.id, index, step_id, action, StepStatus.WAITING.value, None))
            elif index == 0 and lease is not None:
                db.execute(Q["put_claimed_step"], (run.id, index, step_id, action, now + lease, now))
            elif index == 0:
                db.execute(
                    Q["put_step"], (run.id, index, step_id, action, StepStatus.READY.value, now + run.first_delay)
                )
            else:
                db.execute(Q["put_step"], (run.id, index, step_id, action, StepStatus.WAITING.value, None))

    # --- steps ------------------------------------------------------------------------

    def claim_steps(self, limit: int, lease: float) -> list[StepTask]:
        now = self.clock()
        if not self._due("next_step_due", now):
            return []
        with self._write("NORMAL") as db:
            rows = db.execute(Q["claim_steps"], {"now": now, "lease_until": now + lease, "limit": limit}).fetchall()
        return [self._task(row) for row in rows]

    def _task(self, row: sqlite3.Row) -> StepTask:
        run_id, index, step_id, action, attempt, overrides = row
        (context,) = self._read(Q["step_context"], (run_id,))
        rule, version = context[0], context[1]
        outputs = {sid: _loads(out) for sid, out in self._read(Q["step_outputs"], (run_id, index))} if index else {}
        return StepTask(
            run_id=run_id, index=index, step_id=step_id, action=action, attempt=attempt, rule=rule,
            rule_version=version, event=shapes.event(context[2:]), outputs=outputs, overrides=_loads(overrides) or {},
        )

    def record_steps(self, results: Sequence[StepResult]) -> list[Unrecorded]:
        """The batch in one transaction; when that fails, again with each result in a
        savepoint of its own, so that one the store cannot hold fails alone."""
        now = self.clock()
        try:
            with self._write("NORMAL") as db:
                for result in results:
                    self._record_step(db, result, now)
            return []
        except Exception:  # noqa: BLE001 - a value SQLite cannot take, or a failing write: found below
            pass
        with self._write("NORMAL") as db:
            return [u for result in results if (u := self._record_alone(db, result, now)) is not None]

    def _record_alone(self, db: sqlite3.Connection, result: StepResult, now: float) -> Unrecorded | None:
        db.execute("SAVEPOINT step")
        try:
            self._record_step(db, result, now)
        except Exception as exc:  # noqa: BLE001 - this result's own failure (a broken transaction fails the rollback)
            db.execute("ROLLBACK TO step")
            return Unrecorded(result, str(exc) or type(exc).__name__)
        finally:
            db.execute("RELEASE step")
        return None

    def _record_step(self, db: sqlite3.Connection, r: StepResult, now: float) -> None:
        t = r.task
        key = (t.run_id, t.index, t.attempt)
        if r.outcome == "deferred":
            db.execute(Q["defer_step"], (now + (r.retry_in or 0.0), *key))
            return
        params = _dumps(r.params)
        if r.outcome in ("succeeded", "skipped"):
            if db.execute(Q["finish_step"], (r.outcome, _dumps(r.output), params, None, r.finished_at, *key)).rowcount:
                self._advance(db, r, now)
        elif r.retry_in is not None:
            db.execute(Q["retry_step"], (now + r.retry_in, params, r.error, r.finished_at, *key))
        elif r.continue_on_error:
            failed = (StepStatus.FAILED.value, None, params, r.error, r.finished_at, *key)
            if db.execute(Q["finish_step"], failed).rowcount:
                self._advance(db, r, now)
        elif db.execute(Q["finish_step"], (StepStatus.DEAD.value, None, params, r.error, r.finished_at, *key)).rowcount:
            db.execute(Q["update_run"], (RunStatus.DEAD.value, t.index, r.error, now, t.run_id))

    def _advance(self, db: sqlite3.Connection, r: StepResult, now: float) -> None:
        t = r.task
        if not r.last_step and db.execute(Q["start_next_step"], (now + r.next_delay, t.run_id, t.index + 1)).rowcount:
            db.execute(Q["update_run"], (RunStatus.ACTIVE.value, t.index + 1, None, now, t.run_id))
        else:
            db.execute(Q["update_run"], (RunStatus.SUCCEEDED.value, t.index, None, now, t.run_id))
            if r.ordered:
                state.release(db, SQ, t.run_id, now)

    def extend_leases(self, tasks: Sequence[StepTask], lease: float) -> None:
        until = self.clock() + lease
        with self._write("NORMAL") as db:
            db.executemany(Q["extend_lease"], [(until, t.run_id, t.index, t.attempt) for t in tasks])

    def next_due(self) -> float | None:
        times = [row[0] for q in ("next_event_due", "next_step_due") for row in self._read(Q[q]) if row[0] is not None]
        times += [row[0] for row in self._read(SQ["next_timer_due"]) if row[0] is not None]
        return min(times) if times else None

    # --- stateful rules -------------------------------------------------------------------

    def fire_timers(self, limit: int = 100) -> int:
        now = self.clock()
        (due,) = self._read(SQ["next_timer_due"])[0]
        if due is None or due > now:
            return 0
        with self._write() as db:
            events = state.fire_due(db, SQ, now, limit)
            for event in events:
                self._put_event(db, event, now)
        return len(events)

    def skip_run(self, run_id: str) -> dict[str, Any] | None:
        with self._write() as db:
            if not state.skip(db, SQ, run_id, self.clock()):
                return None
        return self.get_run(run_id)

    def rule_state(self, rule: str, limit: int = 50) -> dict[str, Any]:
        return state.rule_state(self._connection(), SQ, rule, self.clock(), limit)

    def event_timers(self, event_id: str) -> list[dict[str, Any]]:
        return state.timers_of_event(self._connection(), SQ, event_id)

    def run_waiting_for(self, run_id: str) -> dict[str, Any] | None:
        return state.waiting_for(self._connection(), SQ, run_id)

    def rule_text(self, version: str) -> tuple[str, str, str] | None:
        rows = self._read(Q["get_rule_version"], (version,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # --- work queues ----------------------------------------------------------------------

    def requeue(
        self, queue: str, key: str, data: Any, *, delay: float, max_attempts: int, request_id: str
    ) -> QueueItem:
        now = self.clock()
        with self._write() as db:
            row = db.execute(Q["open_queue_item"], (queue, key)).fetchone()
            if row is None:
                item_id = new_id()
                db.execute(
                    Q["insert_queue_item"],
                    (item_id, queue, key, _dumps(data), max_attempts, now + delay, request_id, now, now)
                )
                return self._queue_item(db, item_id)
            item_id, _, attempts, _, last_request = row
            if last_request == request_id:  # the same step again (a retry after a crash)
                return self._queue_item(db, item_id)
            db.execute(Q["requeue_item"], (_dumps(data), max_attempts, now + delay, request_id, now, item_id))
            if attempts + 1 > max_attempts:
                return self._exhaust(
                    db, item_id, f"requeued {attempts + 1} times, more than max_attempts {max_attempts}", now
                )
            return self._queue_item(db, item_id)

    def _exhaust(self, db: sqlite3.Connection, item_id: str, error: str, now: float) -> QueueItem:
        db.execute(Q["queue_item_dead"], (error, now, item_id))
        item = self._queue_item(db, item_id)
        body = {"queue": item.queue, "key": item.key, "item_id": item.id, "attempts": item.attempts,
                "max_attempts": item.max_attempts, "data": item.data, "error": error}
        event = Incoming(source="hookwise", type="queue.exhausted", body=_dumps(body) or "{}", headers={}, query={},
                         received_at=now, id=derived_id("queue.exhausted", item_id, str(item.attempts)))
        stored = self._put_event(db, event, now)
        return QueueItem(**{**item.__dict__, "exhausted_event": stored.event_id})

    def _queue_item(self, db: sqlite3.Connection, item_id: str) -> QueueItem:
        return shapes.queue_item(db.execute(Q["get_queue_item"], (item_id,)).fetchone())

    def claim_queue_item(self, queue: str, lease: float) -> QueueItem | None:
        now = self.clock()
        with self._write() as db:
            row = db.execute(Q["claim_queue_item"], {"queue": queue, "now": now, "lease_until": now + lease}).fetchone()
        return shapes.queue_item(row) if row else None

    def finish_queue_item(self, item_id: str) -> QueueItem | None:
        with self._write() as db:
            if not db.execute(Q["queue_item_done"], (self.clock(), item_id)).rowcount:
                return None
            return self._queue_item(db, item_id)

    def fail_queue_item(self, item_id: str, retry_in: float, error: str | None) -> QueueItem | None:
        now = self.clock()
        with self._write() as db:
            if not db.execute(Q["queue_item_retry"], (now + retry_in, error, now, item_id)).rowcount:
                return None
            item = self._queue_item(db, item_id)
            if item.attempts > item.max_attempts:
                return self._exhaust(db, item_id, error or f"failed {item.attempts} times", now)
            return item

    def get_queue_item(self, item_id: str) -> QueueItem | None:
        rows = self._read(Q["get_queue_item"], (item_id,))
        return shapes.queue_item(rows[0]) if rows else None

    def list_queue_items(self, queue: str, status: str | None = None, limit: int = 100) -> list[QueueItem]:
        rows = self._read(Q["list_queue_items"], {"queue": queue, "status": status, "limit": limit})
        return [shapes.queue_item(r) for r in rows]

    def queue_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for queue, status, count in self._read(Q["queue_counts"]):
            counts.setdefault(queue, {})[status] = count
        return counts

    # --- the Hover account ----------------------------------------------------------------

    def hover_tokens(self, account: str = "default") -> HoverTokens | None:
        rows = self._read(Q["get_hover_account"], (account,))
        if not rows or rows[0][0] is None:
            return None
        return HoverTokens(rows[0][0], rows[0][1], rows[0][2])

    def save_hover_tokens(self, tokens: HoverTokens, account: str = "default") -> None:
        with self._write() as db:
            db.execute(
                Q["save_hover_tokens"],
                (account, tokens.access_token, tokens.refresh_token, tokens.expires_at, self.clock())
            )

    def lock_hover_account(self, holder: str, ttl: float, account: str = "default") -> bool:
        now = self.clock()
        with self._write() as db:
            db.execute(Q["ensure_hover_account"], (account, now))
            return bool(db.execute(Q["lock_hover_account"], (holder, now + ttl, account, now, holder)).rowcount)

    def unlock_hover_account(self, holder: str, account: str = "default") -> None:
        with self._write() as db:
            db.execute(Q["unlock_hover_account"], (account, holder))

    def save_hover_webhook(
        self, webhook_id: str, *, source: str | None = None, url: str | None = None,
        verified_at: float | None = None, last_error: str | None = None, verify_method: str | None = None,
    ) -> None:
        with self._write() as db:
            db.execute(Q["save_hover_webhook"], (
                webhook_id, source, url, verified_at, last_error, verify_method, self.clock(),
            ))

    def hover_webhooks(self) -> list[dict[str, Any]]:
        return [dict(zip(shapes.HOVER_WEBHOOK, row, strict=True)) for row in self._read(Q["list_hover_webhooks"])]

    def begin_hover_login(self, state: str, ttl: float, account: str = "default") -> None:
        now = self.clock()
        with self._write() as db:
            db.execute(Q["prune_hover_logins"], {"before": now - LOGIN_KEPT})
            db.execute(Q["begin_hover_login"], {"state": state, "account": account, "now": now, "ttl": float(ttl)})

    def take_hover_login(self, state: str) -> str | None:
        with self._write() as db:
            row = db.execute(Q["take_hover_login"], {"state": state, "now": self.clock()}).fetchone()
        return None if row is None else str(row[0])

    def finish_hover_login(self, state: str, error: str | None = None) -> None:
        with self._write() as db:
            status = "failed" if error else "done"
            db.execute(Q["finish_hover_login"], {"state": state, "status": status, "error": error, "now": self.clock()})

    def hover_login(self, state: str) -> dict[str, Any] | None:
        rows = self._read(Q["get_hover_login"], {"state": state, "now": self.clock()})
        return dict(zip(shapes.HOVER_LOGIN, (rows[0][0], rows[0][1], bool(rows[0][2])), strict=True)) if rows else None

    def wake_steps(self, action: str, error_prefix: str) -> int:
        with self._write() as db:
            woken = db.execute(Q["wake_steps"], {"action": action, "prefix": error_prefix, "now": self.clock()})
            return int(woken.rowcount)

    # --- reading ----------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._read(Q["get_event"], (event_id,))
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
        return [dict(zip(shapes.EVENT_SUMMARY, row, strict=True)) for row in self._read(Q["list_events"], params)]

    def replay_event(self, event_id: str, rules: Sequence[str] | None = None) -> str | None:
        new = new_id()
        now = self.clock()
        with self._write() as db:
            params = {"id": new, "now": now, "of": event_id, "only_rules": _dumps(list(rules)) if rules else None}
            if not db.execute(Q["put_replay"], params).rowcount:
                return None
        return new

    def retry_run(self, run_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
        now = self.clock()
        with self._write() as db:
            row = db.execute("SELECT idx FROM steps WHERE run_id = ? AND status = 'dead'", (run_id,)).fetchone()
            if row is None or not db.execute(Q["revive_run"], (now, run_id)).rowcount:
                return None
            db.execute(Q["retry_dead_step"], (now, _dumps(overrides) if overrides else None, run_id, row[0]))
            db.execute(Q["update_run"], ("active", row[0], None, now, run_id))
        return self.get_run(run_id)

    def rule_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for rule, status, count in self._read(Q["rule_counts"]):
            counts.setdefault(rule, {})[status] = count
        return counts

    def prune(self, before: float, batch: int = 500) -> dict[str, int]:
        """Delete one batch of finished runs, events and delivery ids older than
        ``before``; small transactions, so ingest never waits long."""
        now = self.clock()
        with self._write() as db:
            runs = [r[0] for r in db.execute(Q["prune_runs"], (before, batch)).fetchall()]
            db.executemany(Q["prune_steps"], [(r,) for r in runs])
        with self._write() as db:
            events = db.execute(Q["prune_events"], (before, batch)).rowcount
        with self._write() as db:
            deliveries = db.execute(Q["prune_deliveries"], (now, batch)).rowcount
        with self._write() as db:
            kept = state.prune(db, SQ, now, before)
        return {"runs": len(runs), "events": events, "deliveries": deliveries, "state": kept}

    def runs_of_event(self, event_id: str) -> list[dict[str, Any]]:
        return [shapes.run(row) for row in self._read(Q["runs_of_event"], (event_id,))]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read(Q["get_run"], (run_id,))
        return shapes.run(rows[0]) if rows else None

    def list_runs(
        self, status: str | None = None, limit: int = 50, rule: str | None = None, shadow: bool | None = None
    ) -> list[dict[str, Any]]:
        params = {"status": status, "limit": limit, "rule": rule, "shadow": None if shadow is None else int(shadow)}
        return [shapes.run(row) for row in self._read(Q["list_runs"], params)]

    def scan_events(
        self, *, since: float, until: float | None = None, source: str | None = None, type: str | None = None,
        after: int = 0, limit: int = 1000,
    ) -> list[shapes.Scanned]:
        params = {"since": since, "until": until, "source": source, "type": type, "after": after, "limit": limit}
        return [shapes.scanned(row) for row in self._read(Q["scan_events"], params)]

    def sample_bodies(self, source: str, type: str, limit: int = 100) -> list[Any]:
        rows = self._read(Q["sample_bodies"], {"source": source, "type": type, "limit": limit})
        return [_loads(row[0]) for row in rows]

    def steps_of_run(self, run_id: str) -> list[dict[str, Any]]:
        return shapes.steps(self._read(Q["steps_of_run"], (run_id,)))

    def events_per_minute(self, since: float) -> list[tuple[str, int, int]]:
        return [(source, minute, count) for source, minute, count in self._read(Q["events_per_minute"], (since,))]

    def run_status_counts(self) -> dict[str, int]:
        return {status: count for status, count in self._read(Q["run_status_counts"])}

    def retrying_steps(self, limit: int = 10) -> list[dict[str, Any]]:
        return [dict(zip(shapes.RETRYING_STEP, row, strict=True)) for row in self._read(Q["retrying_steps"], (limit,))]


#: Rows one multi-row INSERT takes at most; a batch is cut into chunks of powers of two,
#: so that few statement texts are prepared and cached.
_CHUNK = 128


def _insert_rows(db: sqlite3.Connection, name: str, rows: list[tuple[Any, ...]], *tail: Any) -> int:
    """Insert ``rows`` with the query ``name`` (whose ``{rows}`` stands for its VALUES
    rows, and ``tail`` for the parameters after them), a statement per chunk rather than
    per row: each statement is a trip into SQLite and back, with the GIL let go and taken
    again, and per row that trip costs more than the insert. Returns the rows changed."""
    changed, at = 0, 0
    while at < len(rows):
        size = min(_CHUNK, 1 << (len(rows) - at).bit_length() - 1)
        chunk = rows[at : at + size]
        values = [v for row in chunk for v in row] + list(tail)
        changed += db.execute(_multi_row(name, size, len(chunk[0])), values).rowcount
        at += size
    return changed


@functools.lru_cache(maxsize=64)
def _multi_row(name: str, size: int, width: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return Q[name].replace("{rows}", ", ".join([row] * size))


def _event_row(item: Incoming) -> tuple[Any, ...]:
    return (
        item.id, item.source, item.type, item.delivery_id, item.body, _dumps(item.headers),
        _dumps(item.query) if item.query else "{}", item.received_at, item.depth,
        item.available_at if item.available_at is not None else item.received_at,
    )





