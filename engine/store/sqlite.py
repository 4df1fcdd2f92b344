"""The SQLite store: one file, WAL journal, ``synchronous=FULL``.

Each thread has its own connection. Writes run in ``BEGIN IMMEDIATE`` transactions, so a
writer waits for the lock up front (up to the busy timeout) instead of failing half way.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import StoreError
from ..events import Event
from ..runs import RunStatus, StepResult, StepStatus, StepTask
from . import Incoming, Matched, Stored
from .queries import load_queries

Q = load_queries("sqlite")

#: How long a writer waits for the database lock before the operation fails.
BUSY_TIMEOUT_MS = 10_000


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class SQLiteStore:
    """The :class:`~engine.store.Store` on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from None
        self.migrate()

    # --- connections and transactions -----------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store {self.path}: {exc}") from None
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
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

    def migrate(self) -> None:
        try:
            self._connection().executescript(Q["schema"])
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
        now = time.time()
        out = []
        with self._write() as db:
            for item in items:
                out.append(self._put_event(db, item, now))
        return out

    def _put_event(self, db: sqlite3.Connection, item: Incoming, now: float) -> Stored:
        if item.delivery_id is not None:
            row = db.execute(Q["find_delivery"], (item.source, item.delivery_id, now)).fetchone()
            if row is not None:
                return Stored(row[0], duplicate=True)
            db.execute(Q["put_delivery"], (item.source, item.delivery_id, item.id, item.received_at + item.dedupe_window))
        cursor = db.execute(
            Q["put_event"],
            (item.id, item.source, item.type, item.delivery_id, item.body, _dumps(item.headers), _dumps(item.query),
             item.received_at, item.depth, item.available_at if item.available_at is not None else item.received_at),
        )
        return Stored(item.id, duplicate=cursor.rowcount == 0)

    def claim_events(self, limit: int, lease: float) -> list[Event]:
        now = time.time()
        with self._write() as db:
            rows = db.execute(Q["claim_events"], {"now": now, "lease_until": now + lease, "limit": limit}).fetchall()
        return [_event(row) for row in rows]

    def record_matches(self, matches: Sequence[Matched]) -> None:
        now = time.time()
        with self._write() as db:
            for match in matches:
                for run in match.runs:
                    db.execute(Q["put_rule_version"], (run.version, run.rule, run.rule_file, run.rule_text))
                    created = db.execute(Q["put_run"], (run.id, match.event_id, run.rule, run.version, now, now)).rowcount
                    if not created:  # matched before by a worker whose claim ran out: its run stands
                        continue
                    for index, step_id, action in run.steps:
                        status = StepStatus.READY if index == 0 else StepStatus.WAITING
                        due = now + run.first_delay if index == 0 else None
                        db.execute(Q["put_step"], (run.id, index, step_id, action, status.value, due))
                    if not run.steps:
                        db.execute(Q["update_run"], (RunStatus.SUCCEEDED.value, 0, None, now, run.id))
                db.execute(Q["event_matched"], (_dumps(match.explain), match.event_id))

    # --- steps ------------------------------------------------------------------------

    def claim_steps(self, limit: int, lease: float) -> list[StepTask]:
        now = time.time()
        with self._write() as db:
            rows = db.execute(Q["claim_steps"], {"now": now, "lease_until": now + lease, "limit": limit}).fetchall()
        return [self._task(row) for row in rows]

    def _task(self, row: sqlite3.Row) -> StepTask:
        run_id, index, step_id, action, attempt, overrides = row
        (context,) = self._read(Q["step_context"], (run_id,))
        rule, version = context[0], context[1]
        outputs = {sid: _loads(out) for sid, out in self._read(Q["step_outputs"], (run_id, index))}
        return StepTask(
            run_id=run_id, index=index, step_id=step_id, action=action, attempt=attempt, rule=rule,
            rule_version=version, event=_event(context[2:]), outputs=outputs, overrides=_loads(overrides) or {},
        )

    def record_steps(self, results: Sequence[StepResult]) -> None:
        now = time.time()
        with self._write() as db:
            for result in results:
                self._record_step(db, result, now)

    def _record_step(self, db: sqlite3.Connection, r: StepResult, now: float) -> None:
        t = r.task
        key = (t.run_id, t.index, t.attempt)
        params = _dumps(r.params)
        if r.outcome in ("succeeded", "skipped"):
            if db.execute(Q["finish_step"], (r.outcome, _dumps(r.output), params, None, r.finished_at, *key)).rowcount:
                self._advance(db, t, r.next_delay, now)
        elif r.retry_in is not None:
            db.execute(Q["retry_step"], (now + r.retry_in, params, r.error, r.finished_at, *key))
        elif r.continue_on_error:
            if db.execute(Q["finish_step"], (StepStatus.FAILED.value, None, params, r.error, r.finished_at, *key)).rowcount:
                self._advance(db, t, r.next_delay, now)
        elif db.execute(Q["finish_step"], (StepStatus.DEAD.value, None, params, r.error, r.finished_at, *key)).rowcount:
            db.execute(Q["update_run"], (RunStatus.DEAD.value, t.index, r.error, now, t.run_id))

    def _advance(self, db: sqlite3.Connection, t: StepTask, delay: float, now: float) -> None:
        if db.execute(Q["start_next_step"], (now + delay, t.run_id, t.index + 1)).rowcount:
            db.execute(Q["update_run"], (RunStatus.ACTIVE.value, t.index + 1, None, now, t.run_id))
        else:
            db.execute(Q["update_run"], (RunStatus.SUCCEEDED.value, t.index, None, now, t.run_id))

    def extend_leases(self, tasks: Sequence[StepTask], lease: float) -> None:
        until = time.time() + lease
        with self._write() as db:
            db.executemany(Q["extend_lease"], [(until, t.run_id, t.index, t.attempt) for t in tasks])

    def next_due(self) -> float | None:
        times = [row[0] for q in ("next_event_due", "next_step_due") for row in self._read(Q[q]) if row[0] is not None]
        return min(times) if times else None

    def rule_text(self, version: str) -> tuple[str, str, str] | None:
        rows = self._read(Q["get_rule_version"], (version,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # --- reading ----------------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._read(Q["get_event"], (event_id,))
        if not rows:
            return None
        r = rows[0]
        return {
            "id": r[0], "source": r[1], "type": r[2], "delivery_id": r[3], "body": _loads(r[4]),
            "headers": _loads(r[5]), "query": _loads(r[6]), "received_at": r[7], "depth": r[8],
            "status": r[9], "explain": _loads(r[10]),
        }

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        keys = ("id", "source", "type", "delivery_id", "received_at", "status")
        return [dict(zip(keys, row)) for row in self._read(Q["list_events"], (limit,))]

    def runs_of_event(self, event_id: str) -> list[dict[str, Any]]:
        return [_run(row) for row in self._read(Q["runs_of_event"], (event_id,))]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._read(Q["get_run"], (run_id,))
        return _run(rows[0]) if rows else None

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [_run(row) for row in self._read(Q["list_runs"], {"status": status, "limit": limit})]

    def steps_of_run(self, run_id: str) -> list[dict[str, Any]]:
        keys = ("run_id", "index", "id", "action", "status", "attempt", "due_at", "params", "output", "error", "started_at", "finished_at")
        out = []
        for row in self._read(Q["steps_of_run"], (run_id,)):
            step = dict(zip(keys, row))
            step["params"], step["output"] = _loads(step["params"]), _loads(step["output"])
            out.append(step)
        return out


def _run(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("id", "event_id", "rule", "rule_version", "status", "step", "error", "created_at", "updated_at")
    return dict(zip(keys, row))


def _event(row: Sequence[Any]) -> Event:
    event_id, source, type_, delivery_id, body, headers, query, received_at, depth = row
    return Event(
        source=source, type=type_, body=json.loads(body), headers=json.loads(headers), query=json.loads(query),
        id=event_id, received_at=datetime.fromtimestamp(received_at, timezone.utc), delivery_id=delivery_id, depth=depth,
    )
