"""The store core: every method of the store contract, its state machines and its SQL, once,
over a :class:`Backend` that holds only what differs between databases.

Statements go through a :class:`~engine.store.backend.Tx`, by name (``sql/queries.sql``,
with the backend's own file over it), with named parameters, and come back as rows by
column name. A batch is a few statements whatever its size: a statement per kind of change,
run for every row at once (``many``/``each``), never a statement per row with a round trip each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ..events import Event
from ..ids import derived_id, new_id
from ..run.runs import RunStatus, StepResult, StepStatus, StepTask
from . import rows as shapes
from . import state
from .backend import Backend, Tx, TxT
from .contract import HoverTokens, Incoming, Matched, Matcher, NewRun, QueueItem, Scanned, Stored, Unrecorded
from .rows import Row, delivery_row, dumps, event_row
from .state import StateMethods

#: Times a requeue looks again for the open item a concurrent requeue created.
REQUEUE_TRIES = 5

class StoreCore(StateMethods[TxT]):
    """The :class:`~engine.store.Store` contract on a :class:`Backend` (stateful rules'
    methods from :class:`~engine.store.state.StateMethods`)."""

    def __init__(self, backend: Backend[TxT]) -> None:
        self.backend = backend
        self._versions: set[str] = set()  # rule versions known to be stored

    def _p(self, **params: Any) -> dict[str, Any]:
        """Parameters, with the time ``{now}`` stands for."""
        return {"now": self.backend.now(), **params}

    def _all(self, name: str, **params: Any) -> list[Row]:
        with self.backend.read() as db:
            return db.all(name, self._p(**params))

    def _one(self, name: str, **params: Any) -> Row | None:
        rows = self._all(name, **params)
        return rows[0] if rows else None

    def _write(self, name: str, **params: Any) -> list[Row]:
        """One writing statement in a transaction of its own; the rows it returned."""
        with self.backend.transaction() as db:
            return db.all(name, self._p(**params))

    def _due(self, name: str) -> bool:
        """Whether anything is due now, where a claim should look first."""
        if not self.backend.look_before_claim:
            return True
        row = self._one(name)
        due, now = (row or {}).get("due"), self.backend.now()
        return due is not None and (now is None or due <= now)

    # --- the schema -------------------------------------------------------------------------

    def migrate(self) -> None:
        self.backend.migrate()

    def ping(self) -> None:
        self._all("ping")

    def probe_write(self) -> None:
        self._write("probe_write")

    def close(self) -> None:
        self.backend.close()

    # --- events -----------------------------------------------------------------------------

    def put_events(self, items: Sequence[Incoming]) -> list[Stored]:
        if not items:
            return []
        with self.backend.transaction() as db:
            stored = self.backend.put_new_events(db, items, self.backend.now())
            if stored is None:
                stored = self._put_each(db, items)
            if not all(s.duplicate for s in stored):
                self.backend.notify(db)
        return stored

    def _put_each(self, db: Tx, items: Sequence[Incoming]) -> list[Stored]:
        """A batch in three statements run for every row: the delivery ids, then the
        events, then (for duplicates) the events that hold the ids. Each runs in order, so
        a delivery id twice in one batch is a duplicate the second time."""
        keyed = [n for n, item in enumerate(items) if item.delivery_id is not None]
        took = db.each("put_delivery", [self._p(**delivery_row(items[n])) for n in keyed])
        dups = {n for n, rows in zip(keyed, took, strict=True) if not rows}
        new = [n for n in range(len(items)) if n not in dups]
        put = db.each("put_event", [event_row(items[n]) for n in new])
        inserted = {n for n, rows in zip(new, put, strict=True) if rows}
        held = sorted(dups)
        found = db.each("find_delivery", [delivery_row(items[n]) for n in held])
        holders = {n: _first(rows)["event_id"] for n, rows in zip(held, found, strict=True)}
        return [
            Stored(holders[n], True) if n in holders else Stored(item.id, n not in inserted)
            for n, item in enumerate(items)
        ]

    def claim_events(self, limit: int, lease: float) -> list[Event]:
        if not self._due("next_event_due"):
            return []
        with self.backend.transaction(relaxed=True) as db:
            rows = db.all("claim_events", self._p(limit=limit, lease=lease))
        return [shapes.event(row) for row in rows]

    def record_matches(self, matches: Sequence[Matched], *, claim: int = 0, lease: float = 0.0) -> list[StepTask]:
        versions: set[str] = set()  # rule versions written by this transaction
        with self.backend.transaction(relaxed=True) as db:
            claimed = self._record_matches(db, matches, claim, lease, versions)
        self._versions |= versions  # committed: rule versions are never deleted
        return claimed

    def match_events(
        self, limit: int, match: Matcher, *, event_lease: float, claim: int = 0, lease: float = 0.0,
        serial: bool = False,
    ) -> tuple[int, list[StepTask]]:
        """One transaction: the due events are taken (PostgreSQL: locked, skipping those
        another worker holds; SQLite: under the write lock), matched while it is open (a
        millisecond for a batch) and recorded, so no lease is needed (``event_lease`` is
        unused) and each event row is written once. ``serial`` (rules keep state): one such
        transaction at a time across workers (PostgreSQL's ``state_lock``), so that runs of
        an order_by key are created in arrival order and counts and throttles never race."""
        if not self._due("next_event_due"):
            return 0, []
        versions: set[str] = set()
        with self.backend.transaction(relaxed=True) as db:
            if serial:
                db.all("state_lock", {})
            rows = db.all("due_events", self._p(limit=limit))
            if not rows:
                return 0, []
            matches = match([shapes.event(row) for row in rows])
            claimed = self._record_matches(db, matches, claim, lease, versions)
        self._versions |= versions
        return len(rows), claimed

    def _record_matches(
        self, db: Tx, matches: Sequence[Matched], claim: int, lease: float, versions: set[str]
    ) -> list[StepTask]:
        """Explain records, runs (exactly once per event and rule) and their steps: a
        statement per kind, each run for the whole batch. Rule state first: throttles and
        thresholds drop runs, timers start or stop, and a run of a busy order_by key waits."""
        matches, now = state.applied(self.backend, db, matches)
        pairs = [(match, run) for match in matches for run in match.runs]
        fresh = {run.version: run for _, run in pairs if run.version not in self._versions}
        db.many("put_rule_version", [
            {"version": r.version, "name": r.rule, "file": r.rule_file, "text": r.rule_text} for r in fresh.values()
        ])
        versions.update(fresh)
        runs = [self._p(id=r.id, event_id=m.event_id, rule=r.rule, version=r.version, shadow=r.shadow)
                for m, r in pairs]
        created = [pair for pair, rows in zip(pairs, db.each("put_run", runs), strict=True) if rows]
        claimed: list[StepTask] = []
        steps: list[dict[str, Any]] = []
        for match, run in created:  # those matched before by a worker whose claim ran out keep their run
            held = bool(run.steps) and run.order_key is not None and state.hold(db, run, now) is not None
            can = run.first_delay <= 0 and match.event is not None and not held
            take = can and bool(run.steps) and len(claimed) < claim
            steps += self._steps(run, lease if take else None, held)
            if take:
                assert match.event is not None
                _, step_id, action = run.steps[0]
                claimed.append(StepTask(run.id, 0, step_id, action, 1, run.rule, run.version, match.event))
        db.many("put_step", steps)
        done = RunStatus.SUCCEEDED.value
        db.many("update_run", [self._p(status=done, step=0, error=None, id=r.id) for _, r in created if not r.steps])
        db.many("event_matched", [{"explain": dumps(m.explain), "id": m.event_id} for m in matches])
        return claimed

    def _steps(self, run: NewRun, lease: float | None, held: bool) -> list[dict[str, Any]]:
        """The rows of a new run's steps: the first ready (or, with ``lease``, running:
        claimed by the caller), the others waiting; all waiting when ``held`` (its order_by
        key is busy)."""
        waiting: tuple[str, int, float | None] = (StepStatus.WAITING.value, 0, None)
        ready = (StepStatus.READY.value, 0, run.first_delay)
        first = waiting if held else ready if lease is None else (StepStatus.RUNNING.value, 1, lease)
        return [
            self._p(run_id=run.id, idx=index, step_id=step_id, action=action,
                    **dict(zip(("status", "attempt", "due_in"), waiting if index else first, strict=True)))
            for index, step_id, action in run.steps
        ]

    # --- steps ------------------------------------------------------------------------------

    def claim_steps(self, limit: int, lease: float) -> list[StepTask]:
        if not self._due("next_step_due"):
            return []
        with self.backend.transaction(relaxed=True) as db:
            claimed = self.backend.claim_steps(db, self._p(limit=limit, lease=lease))
        return [shapes.task(row, outputs) for row, outputs in claimed]

    def record_steps(self, results: Sequence[StepResult]) -> list[Unrecorded]:
        """The batch in one transaction; when that fails, again with each result in a
        savepoint of its own, so that one the store cannot hold fails alone."""
        try:
            with self.backend.transaction(relaxed=True) as db:
                self._record_steps(db, results)
            return []
        except Exception:  # noqa: BLE001 - a value the store cannot take, or a failing write: found below
            pass
        with self.backend.transaction(relaxed=True) as db:
            return [u for result in results if (u := self._record_alone(db, result)) is not None]

    def _record_alone(self, db: Tx, result: StepResult) -> Unrecorded | None:
        try:
            with db.savepoint():
                self._record_steps(db, [result])
        except Exception as exc:  # noqa: BLE001 - this result's own failure (a broken transaction fails the commit)
            return Unrecorded(result, " ".join(str(exc).split()) or type(exc).__name__)
        return None

    def _record_steps(self, db: Tx, results: Sequence[StepResult]) -> None:
        """The step state machine, for a batch. Only a result whose claim is still current
        (the step running, the same attempt) changes anything. ``deferred``: ready again
        later, its attempt given back; failed with ``retry_in``: ready again later;
        succeeded, skipped, or failed with ``continue_on_error``: the next step is ready
        (after its delay) or the run has succeeded; failed otherwise: step and run dead."""
        def key(r: StepResult, **more: Any) -> dict[str, Any]:
            t = r.task
            return self._p(run_id=t.run_id, idx=t.index, attempt=t.attempt, **more)

        def kept(r: StepResult) -> dict[str, Any]:
            return key(r, params=dumps(r.params), error=r.error, finished_at=r.finished_at)

        deferred, retried, ending = [], [], []
        for r in results:
            if r.outcome == "deferred":
                deferred.append(r)
            elif r.outcome not in ("succeeded", "skipped") and r.retry_in is not None:
                retried.append(r)
            else:
                ending.append(r)
        db.many("defer_step", [key(r, retry_in=r.retry_in or 0.0) for r in deferred])
        db.many("retry_step", [{**kept(r), "retry_in": r.retry_in} for r in retried])
        finished = db.each("finish_step", [{**kept(r), "status": _final(r), "output": dumps(r.output)} for r in ending])
        ended = [r for r, rows in zip(ending, finished, strict=True) if rows]
        going_on = [r for r in ended if _final(r) != StepStatus.DEAD.value and not r.last_step]
        started = db.each("start_next_step", [
            self._p(run_id=r.task.run_id, idx=r.task.index + 1, delay=r.next_delay) for r in going_on
        ])
        next_ready = {id(r) for r, rows in zip(going_on, started, strict=True) if rows}
        runs, released = [], []
        for r in ended:
            t = r.task
            if _final(r) == StepStatus.DEAD.value:
                runs.append(self._p(status=RunStatus.DEAD.value, step=t.index, error=r.error, id=t.run_id))
            elif id(r) in next_ready:
                runs.append(self._p(status=RunStatus.ACTIVE.value, step=t.index + 1, error=None, id=t.run_id))
            else:
                runs.append(self._p(status=RunStatus.SUCCEEDED.value, step=t.index, error=None, id=t.run_id))
                released += [t.run_id] if r.ordered else []
        db.many("update_run", runs)
        state.release_all(self.backend, db, released)

    def extend_leases(self, tasks: Sequence[StepTask], lease: float) -> None:
        if not tasks:
            return
        with self.backend.transaction(relaxed=True) as db:
            db.many("extend_lease", [
                self._p(lease=lease, run_id=t.run_id, idx=t.index, attempt=t.attempt) for t in tasks
            ])

    def next_due(self) -> float | None:
        row = self._one("next_due")
        return None if row is None else row["due"]

    def rule_text(self, version: str) -> tuple[str, str, str] | None:
        row = self._one("get_rule_version", version=version)
        return None if row is None else (row["name"], row["file"], row["text"])

    def wake_steps(self, action: str, error_prefix: str) -> int:
        with self.backend.transaction() as db:
            return db.count("wake_steps", self._p(action=action, prefix=error_prefix))

    # --- work queues ------------------------------------------------------------------------

    def requeue(
        self, queue: str, key: str, data: Any, *, delay: float, max_attempts: int, request_id: str
    ) -> QueueItem:
        with self.backend.transaction() as db:
            values = self._p(queue=queue, key=key, data=dumps(data), max_attempts=max_attempts, delay=delay,
                             request_id=request_id)
            for _ in range(REQUEUE_TRIES):
                row = _maybe(db.all("open_queue_item", values))
                if row is not None:
                    break
                item_id = new_id()
                if db.all("insert_queue_item", {**values, "id": item_id}):
                    return _queue_item(db, item_id)
                # else a concurrent requeue of the same key inserted first: update its item
            else:
                raise StoreError(f"cannot requeue {key!r} in {queue!r}: its item kept changing; try again")
            item_id, attempts = row["id"], row["attempts"]
            if row["last_request"] == request_id:  # the same step again (a retry after a crash)
                return _queue_item(db, item_id)
            db.count("requeue_item", {**values, "id": item_id})
            if attempts + 1 > max_attempts:
                error = f"requeued {attempts + 1} times, more than max_attempts {max_attempts}"
                return self._exhaust(db, item_id, error)
            return _queue_item(db, item_id)

    def _exhaust(self, db: TxT, item_id: str, error: str) -> QueueItem:
        """Mark the item dead and store its ``queue.exhausted`` event, in the caller's
        transaction."""
        db.count("queue_item_dead", self._p(error=error, id=item_id))
        item = _queue_item(db, item_id)
        body = {"queue": item.queue, "key": item.key, "item_id": item.id, "attempts": item.attempts,
                "max_attempts": item.max_attempts, "data": item.data, "error": error}
        event = Incoming(source="hookwise", type="queue.exhausted", body=dumps(body) or "{}", headers={}, query={},
                         received_at=item.updated_at, id=derived_id("queue.exhausted", item_id, str(item.attempts)))
        (stored,) = self._put_each(db, [event])
        self.backend.notify(db)
        return dataclasses.replace(item, exhausted_event=stored.event_id)

    def claim_queue_item(self, queue: str, lease: float) -> QueueItem | None:
        return _item(self._write("claim_queue_item", queue=queue, lease=lease))

    def finish_queue_item(self, item_id: str) -> QueueItem | None:
        return _item(self._write("queue_item_done", id=item_id))

    def fail_queue_item(self, item_id: str, retry_in: float, error: str | None) -> QueueItem | None:
        with self.backend.transaction() as db:
            item = _item(db.all("queue_item_retry", self._p(retry_in=retry_in, error=error, id=item_id)))
            if item is not None and item.attempts > item.max_attempts:
                return self._exhaust(db, item_id, error or f"failed {item.attempts} times")
            return item

    def get_queue_item(self, item_id: str) -> QueueItem | None:
        return _item(self._all("get_queue_item", id=item_id))

    def list_queue_items(self, queue: str, status: str | None = None, limit: int = 100) -> list[QueueItem]:
        return [shapes.queue_item(r) for r in self._all("list_queue_items", queue=queue, status=status, limit=limit)]

    def queue_counts(self) -> dict[str, dict[str, int]]:
        return shapes.counts(self._all("queue_counts"), "queue", "status")

    # --- the Hover account ------------------------------------------------------------------

    def hover_tokens(self, account: str = "default") -> HoverTokens | None:
        row = self._one("get_hover_account", account=account)
        if row is None or row["access_token"] is None:
            return None
        return HoverTokens(row["access_token"], row["refresh_token"], row["expires_at"])

    def save_hover_tokens(self, tokens: HoverTokens, account: str = "default") -> None:
        self._write("save_hover_tokens", account=account, **dataclasses.asdict(tokens))

    def lock_hover_account(self, holder: str, ttl: float, account: str = "default") -> bool:
        return bool(self._write("lock_hover_account", account=account, holder=holder, ttl=ttl))

    def unlock_hover_account(self, holder: str, account: str = "default") -> None:
        self._write("unlock_hover_account", account=account, holder=holder)

    def save_hover_webhook(
        self, webhook_id: str, *, source: str | None = None, url: str | None = None,
        verified_at: float | None = None, last_error: str | None = None, verify_method: str | None = None,
    ) -> None:
        self._write("save_hover_webhook", webhook_id=webhook_id, source=source, url=url, verified_at=verified_at,
                    last_error=last_error, verify_method=verify_method)

    def hover_webhooks(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._all("list_hover_webhooks")]

    def begin_hover_login(self, state: str, ttl: float, account: str = "default") -> None:
        with self.backend.transaction() as db:
            db.count("prune_hover_logins", self._p())
            db.count("begin_hover_login", self._p(state=state, account=account, ttl=ttl))

    def take_hover_login(self, state: str) -> str | None:
        row = _maybe(self._write("take_hover_login", state=state))
        return None if row is None else str(row["account"])

    def finish_hover_login(self, state: str, error: str | None = None) -> None:
        self._write("finish_hover_login", state=state, status="failed" if error else "done", error=error)

    def hover_login(self, state: str) -> dict[str, Any] | None:
        row = self._one("get_hover_login", state=state)
        return None if row is None else {**row, "expired": bool(row["expired"])}

    # --- reading and repairs ----------------------------------------------------------------

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        row = self._one("get_event", id=event_id)
        return None if row is None else shapes.event_detail(row)

    def list_events(
        self, limit: int = 50, *, source: str | None = None, type: str | None = None, status: str | None = None,
        since: float | None = None, until: float | None = None, cursor: int | None = None,
    ) -> list[dict[str, Any]]:
        rows = self._all("list_events", limit=limit, source=source, type=type, status=status, since=since,
                         until=until, cursor=cursor)
        return [dict(row) for row in rows]

    def replay_event(self, event_id: str, rules: Sequence[str] | None = None) -> str | None:
        new = new_id()
        with self.backend.transaction() as db:
            only_rules = dumps(list(rules)) if rules else None
            if not db.count("put_replay", self._p(id=new, of=event_id, only_rules=only_rules)):
                return None
            self.backend.notify(db)
        return new

    def retry_run(self, run_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
        with self.backend.transaction() as db:
            dead = _maybe(db.all("dead_step", {"run_id": run_id}))
            if dead is None or not db.count("revive_run", self._p(id=run_id)):
                return None
            step = dead["idx"]
            db.count("retry_dead_step", self._p(overrides=dumps(overrides) if overrides else None, run_id=run_id,
                                                idx=step))
            db.count("update_run", self._p(status=RunStatus.ACTIVE.value, step=step, error=None, id=run_id))
        return self.get_run(run_id)

    def rule_counts(self) -> dict[str, dict[str, int]]:
        return shapes.counts(self._all("rule_counts"), "rule", "status")

    def prune(self, before: float, batch: int = 500) -> dict[str, int]:
        """Delete one batch of finished runs, events and delivery ids older than
        ``before``, and ended rule state; small transactions (rows other transactions hold are left for
        later), so ingest never waits long."""
        with self.backend.transaction() as db:
            runs = [row["id"] for row in db.all("prune_runs", {"before": before, "batch": batch})]
            db.many("prune_steps", [{"run_id": run} for run in runs])
        with self.backend.transaction() as db:
            events = db.count("prune_events", {"before": before, "batch": batch})
        with self.backend.transaction() as db:
            deliveries = db.count("prune_deliveries", self._p(batch=batch))
        with self.backend.transaction() as db:
            kept = state.prune(db, state.clock(self.backend, db), before)
        return {"runs": len(runs), "events": events, "deliveries": deliveries, "state": kept}

    def runs_of_event(self, event_id: str) -> list[dict[str, Any]]:
        return [shapes.run(row) for row in self._all("runs_of_event", event_id=event_id)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._one("get_run", id=run_id)
        return None if row is None else shapes.run(row)

    def list_runs(
        self, status: str | None = None, limit: int = 50, rule: str | None = None, shadow: bool | None = None
    ) -> list[dict[str, Any]]:
        rows = self._all("list_runs", status=status, limit=limit, rule=rule, shadow=shadow)
        return [shapes.run(row) for row in rows]

    def scan_events(
        self, *, since: float, until: float | None = None, source: str | None = None, type: str | None = None,
        after: int = 0, limit: int = 1000,
    ) -> list[Scanned]:
        rows = self._all("scan_events", since=since, until=until, source=source, type=type, after=after, limit=limit)
        return [(row["seq"], shapes.event(row), shapes.loads(row["explain"])) for row in rows]

    def sample_bodies(self, source: str, type: str, limit: int = 100) -> list[Any]:
        return [shapes.loads(row["body"]) for row in self._all("sample_bodies", source=source, type=type, limit=limit)]

    def steps_of_run(self, run_id: str) -> list[dict[str, Any]]:
        return [shapes.step(row) for row in self._all("steps_of_run", run_id=run_id)]

    def events_per_minute(self, since: float) -> list[tuple[str, int, int]]:
        return [(r["source"], int(r["minute"]), r["count"]) for r in self._all("events_per_minute", since=since)]

    def run_status_counts(self) -> dict[str, int]:
        return {row["status"]: row["count"] for row in self._all("run_status_counts")}

    def retrying_steps(self, limit: int = 10) -> list[dict[str, Any]]:
        return [dict(row) for row in self._all("retrying_steps", limit=limit)]


def _final(r: StepResult) -> str:
    """The status a finishing result leaves its step in."""
    if r.outcome in ("succeeded", "skipped"):
        return r.outcome
    return StepStatus.FAILED.value if r.continue_on_error else StepStatus.DEAD.value


def _maybe(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def _first(rows: list[Row]) -> Row:
    if not rows:  # a row this transaction wrote or locked: it cannot be gone
        raise StoreError("store read failed: a row vanished within its transaction")
    return rows[0]


def _item(rows: list[Row]) -> QueueItem | None:
    return shapes.queue_item(rows[0]) if rows else None


def _queue_item(db: Tx, item_id: str) -> QueueItem:
    return shapes.queue_item(_first(db.all("get_queue_item", {"id": item_id})))
