"""The worker: claim stored events, match them, create runs; claim due steps, run them,
record what happened.

One dispatcher thread talks to the store and step threads run the actions (plain
synchronous code), taking steps from one queue and handing back results on another. Every
store write the worker makes goes through the dispatcher, in batches: claims of events and
steps, the runs created for matched events, and the results of finished steps. Claims
carry a lease, so the work of a killed process comes back to whichever worker claims next.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from .action import Context
from .delivery import Delivery
from .errors import ConfigError, Defer, Fail, ParamsError, RenderError, Retry, StoreError
from .hover import HoverClient, SharedClient
from .ids import derived_id
from .loader import Loaded
from .logs import step_fields
from .matching import match_or_note
from .metrics import Metrics
from .plan import apply_overrides, should_run, step_context
from .rule_loader import RuleLoader
from .rules import Rule
from .runs import StepResult, StepTask, retry_delay
from .store import Incoming, Unrecorded, WorkerStore

log = logging.getLogger("hookwise.worker")

#: Largest number of events claimed and matched in one transaction.
EVENT_BATCH = 256
#: Lease of a claimed step. The worker renews it every LEASE / 3 while the step runs, so
#: the steps of a killed worker come back to the others within this many seconds.
STEP_LEASE = 15.0
#: Lease of a claimed event (matching takes milliseconds).
EVENT_LEASE = 10.0
#: Largest number of due absence timers fired in one transaction.
TIMER_BATCH = 256
#: Largest output a step may return, as JSON text.
MAX_OUTPUT = 1024 * 1024
#: Seconds between looks over the running steps for one past its time limit, while the
#: worker is busy (an idle worker wakes at the soonest limit).
TIMEOUT_CHECK = 0.05
#: Steps claimed ahead, per step thread: first steps are claimed with their runs, in the
#: matching transaction, and wait in the queue for a free step thread (their leases are
#: renewed all the while). Claiming only as many as there are free threads would leave
#: most of a busy worker's steps to a second claim, a second transaction and a second
#: reading of each event.
PREFETCH = 4


@dataclass(eq=False)  # compared (and hashed) by identity: a set of them is kept
class _InFlight:
    task: StepTask
    #: the step's time limit, in seconds, counted from ``started``
    timeout: float
    #: when a step thread began the step; None while it waits in the queue
    started: float | None = None
    finished: bool = False

    @property
    def deadline(self) -> float | None:
        return None if self.started is None else self.started + self.timeout


class Worker:
    """Runs the workflow side of hookwise on one store.

    ``loaded`` returns the current rule set and registry (it changes on reload; runs keep
    the rule version that created them). ``clock`` (unix seconds) times steps: their time
    limits, when they started and finished, when an emitted event was stored; give the
    store the same one. How often the worker looks for work is real time all the same.
    ``delivery`` is the process's delivery control (made from the config's ``http:`` when
    not given).
    """

    def __init__(
        self, store: WorkerStore, loaded: Callable[[], Loaded], *, concurrency: int = 128, poll: float = 0.25,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.time, delivery: Delivery | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery if delivery is not None else Delivery(loaded().config.settings.http)
        # Steps waiting for a free slot of their host, kept here (their claims renewed, no
        # thread held) and started again the moment a call to that host ends.
        self._parked: dict[str, deque[_InFlight]] = {}
        self._parked_lock = threading.Lock()
        self.delivery.listen(self._unpark)
        self.metrics = metrics
        self.loaded = loaded
        self.concurrency = concurrency
        self.poll = poll
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._queued: queue.SimpleQueue[_InFlight | None] = queue.SimpleQueue()  # None: a thread's end
        self._finished: queue.SimpleQueue[tuple[_InFlight, StepResult]] = queue.SimpleQueue()
        self._events_stored = True  # a new event may be waiting: claim before the next poll
        self._claimed_at = 0.0  # when events were last claimed (or looked for)
        self._timers_at = 0.0  # when due timers were last looked for
        self._timeouts_at = 0.0  # when running steps are next looked over for their time limit
        self._in_flight: set[_InFlight] = set()  # queued or running, and not yet recorded
        self._unwritten: list[StepResult] = []  # finished, kept while the store cannot record them
        self._closed = False  # stopped: step threads start nothing more
        self._busy = 0  # steps submitted and not finished: queued, running, abandoned
        self._busy_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rules_by_version: dict[str, Rule] = {}
        self._renewed = 0.0
        #: the process's Hover client, for the hover action; closed when replaced and on stop
        self.hover = SharedClient(store)
        self._stop_timeout = 30.0

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.concurrency):
            threading.Thread(target=self._serve, name=f"hookwise-step-{n}", daemon=True).start()
        self._thread = threading.Thread(target=self._loop, name="hookwise-worker", daemon=True)
        self._thread.start()
        if hasattr(self.store, "wait_for_events"):  # PostgreSQL: LISTEN/NOTIFY wakes us early
            threading.Thread(target=self._listen, name="hookwise-listen", daemon=True).start()

    def _listen(self) -> None:
        """Wake the dispatcher when another process stores an event. Only a wake-up: the
        dispatcher polls all the same, so a lost notification costs a poll interval."""
        wait = getattr(self.store, "wait_for_events")  # noqa: B009 - not in the Store contract: PostgreSQL only
        while not self._stopping.is_set():
            try:
                if wait(1.0):
                    self.wake()
            except StoreError as exc:
                log.debug("listening for events failed: %s", exc)
                self._stopping.wait(1.0)

    def wake(self) -> None:
        """Look for work now (a new event was stored)."""
        self._events_stored = True
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; wait up to ``timeout`` seconds for running steps to finish and
        record them. Steps still running after that keep their claim until its lease runs
        out, and are then run again by whichever worker claims them."""
        self._stop_timeout = timeout
        self._stopping.set()
        self._release_parked()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 5)
        # Steps still queued are not started: their claims run out and come back.
        self._closed = True
        for _ in range(self.concurrency):
            self._queued.put(None)
        self.hover.close()  # once no step that still runs uses it

    # --- the dispatcher loop --------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self._tick()
            except StoreError as exc:
                log.error("store unavailable: %s", exc)
                busy = False
                self._stopping.wait(1.0)
            except Exception:  # a bug must not end the worker: log it and go on
                log.exception("worker loop failed")
                busy = False
                self._stopping.wait(1.0)
            if not busy:
                self._wake.wait(self._idle_wait())
                self._wake.clear()
        self._drain()

    def _tick(self) -> bool:
        self._renew_leases()
        recorded = self._record_results()
        self._fire_timers()
        matched = self._match_events()
        started = self._start_steps()
        return bool(recorded or matched or started)

    def _idle_wait(self) -> float:
        wait = self.poll
        deadlines = [d for f in self._in_flight if (d := f.deadline) is not None]
        if deadlines:
            self._timeouts_at = min(deadlines)
            wait = min(wait, self._timeouts_at - self.clock())
        return max(0.0, wait)

    def _drain(self) -> None:
        deadline = time.monotonic() + self._stop_timeout
        while (self._in_flight or self._unwritten) and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._renew_leases()  # a drain may outlast a lease: keep the claims of running steps
                self._record_results()
            except StoreError as exc:
                log.error("store unavailable: %s", exc)
        try:
            self._record_results()
        except StoreError as exc:  # their claims run out and the steps run again elsewhere
            log.error("stopping with %d step results not recorded: %s", len(self._unwritten), exc)

    # --- matching -------------------------------------------------------------------------

    def _fire_timers(self) -> None:
        """Fire the due absence timers, once a poll interval, while any rule has them."""
        now = time.monotonic()
        if now - self._timers_at < self.poll or not self.loaded().rules.absences:
            return
        self._timers_at = now
        if self.store.fire_timers(TIMER_BATCH):
            self.wake()  # their rule.absence events wait to be matched

    def _match_events(self) -> int:
        """Claim and match events: when told of a new one, or a poll interval after the
        last look (delayed events, events stored by other processes, expired claims)."""
        now = time.monotonic()
        if not self._events_stored and now - self._claimed_at < self.poll:
            return 0
        self._events_stored, self._claimed_at = False, now
        loaded = self.loaded()
        # First steps are claimed as their runs are created: no second round trip for them.
        count, tasks = self.store.match_events(
            EVENT_BATCH, lambda events: [match_or_note(loaded, event, self.metrics) for event in events],
            event_lease=EVENT_LEASE, claim=self._free(), lease=STEP_LEASE, serial=loaded.rules.stateful,
        )
        if count == EVENT_BATCH:  # more may be waiting
            self._events_stored = True
        for task in tasks:
            self._submit(task)
        return count

    def _free(self) -> int:
        """How many more steps to claim: room in the step threads and their queue."""
        if self._stopping.is_set():
            return 0
        with self._busy_lock:
            return max(0, self.concurrency * PREFETCH - self._busy)

    # --- steps ----------------------------------------------------------------------------

    def _start_steps(self) -> int:
        free = self._free()
        if free <= 0:
            return 0
        tasks = self.store.claim_steps(free, STEP_LEASE)
        for task in tasks:
            self._submit(task)
        return len(tasks)

    def _renew_leases(self) -> None:
        now = time.monotonic()
        if now - self._renewed < STEP_LEASE / 3:
            return
        self._renewed = now
        if self._in_flight or self._unwritten:
            self.store.extend_leases([f.task for f in self._in_flight] + [r.task for r in self._unwritten], STEP_LEASE)

    def _submit(self, task: StepTask) -> None:
        with self._busy_lock:
            self._busy += 1
        flight = _InFlight(task, self._timeout_of(task))
        self._in_flight.add(flight)
        self._queued.put(flight)

    def _timeout_of(self, task: StepTask) -> float:
        rule = self._rule(task)
        if rule is None or task.index >= len(rule.steps):
            return 30.0
        return rule.steps[task.index].timeout

    def _record_results(self) -> int:
        results, self._unwritten = self._unwritten, []
        while not self._finished.empty():
            flight, result = self._finished.get()
            if flight in self._in_flight:  # else it timed out, and that was recorded
                self._in_flight.remove(flight)
                results.append(result)
        now = self.clock()
        if now >= self._timeouts_at:
            self._timeouts_at = now + TIMEOUT_CHECK
            for flight in list(self._in_flight):
                if (deadline := flight.deadline) is not None and now > deadline and not flight.finished:
                    # The thread cannot be stopped; its eventual result is dropped.
                    self._in_flight.remove(flight)
                    results.append(self._timed_out(flight, now))
        if results:
            self._record(results)
        return len(results)

    def _record(self, results: list[StepResult]) -> None:
        """Record ``results``. While the store cannot record anything they are kept (their
        leases renewed) and written on a later round. A result the store cannot hold is a
        failed attempt with that error, retried or dead by its step's policy: never a step
        left to run again, and again, when its claim runs out (SPEC 7)."""
        try:
            unrecorded = self.store.record_steps(results)
        except StoreError:
            self._unwritten = results
            raise
        if unrecorded:
            failed = {id(u.result): self._unrecordable(u) for u in unrecorded}
            results = [failed.get(id(r), r) for r in results]
            try:
                lost_too = self.store.record_steps(list(failed.values()))
            except StoreError:
                self._unwritten = list(failed.values())
                raise
            for lost in lost_too:
                task = lost.result.task
                log.error("run %s step %s: neither its result nor its failure can be stored: %s",
                          task.run_id, task.index, lost.reason, extra=step_fields(task))
        if self.metrics is not None:
            self.metrics.recorded(results)

    def _unrecordable(self, unrecorded: Unrecorded) -> StepResult:
        result = unrecorded.result
        # The reason may quote the very text the store refused: made storable here.
        reason = unrecorded.reason.encode("utf-8", "backslashreplace").decode("utf-8")
        return self._failure(result.task, f"the step's result cannot be stored: {reason}", None, result.started_at)

    def _timed_out(self, flight: _InFlight, now: float) -> StepResult:
        started = flight.started or now
        log.warning(
            "run %s step %s timed out after %.1fs", flight.task.run_id, flight.task.index, flight.timeout,
            extra=step_fields(flight.task, started)
        )
        return self._failure(flight.task, f"timed out after {flight.timeout:g}s", None, started)

    # --- executing steps (in the step threads) ------------------------------------------------

    def _serve(self) -> None:
        """A step thread: run queued steps one at a time, hand back their results."""
        while (flight := self._queued.get()) is not None:
            if self._closed:
                continue
            flight.started = self.clock()  # its time limit runs from now
            try:
                result = self._execute(flight.task, flight.started)
            except Exception as exc:  # _execute catches everything; this is a last guard
                log.exception("running step %s of run %s failed", flight.task.index, flight.task.run_id)
                result = StepResult(task=flight.task, outcome="failed", error=f"internal error: {exc}", retry_in=1.0,
                                    started_at=flight.started, finished_at=self.clock())
            finally:
                flight.finished = True
                with self._busy_lock:
                    self._busy -= 1
            if result.waits_for is not None and self._park(flight, result.waits_for):
                continue
            self._finished.put((flight, result))
            self._wake.set()

    # --- steps waiting for a slot of their host (delivery control) -------------------------

    def _park(self, flight: _InFlight, host: str) -> bool:
        """Keep ``flight`` until a call to ``host`` ends; false when it should go back to
        the store instead (stopping, or enough are waiting here already)."""
        with self._parked_lock:
            waiting = self._parked.setdefault(host, deque())
            if self._stopping.is_set() or len(waiting) >= self.concurrency:
                return False
            flight.started, flight.finished = None, False  # no time limit while it waits
            waiting.append(flight)
        with self._busy_lock:  # it still takes room in the claim budget: no more is claimed than can wait
            self._busy += 1
        if self.delivery.room(host):  # a call ended before it was parked: no wake-up would come
            self._unpark(host)
        return True

    def _unpark(self, host: str) -> None:
        """A call to ``host`` ended: start the step that waited longest for it."""
        with self._parked_lock:
            waiting = self._parked.get(host)
            flight = waiting.popleft() if waiting else None
            if flight is None or self._stopping.is_set():
                return
        self._queued.put(flight)

    def _release_parked(self) -> None:
        """On stop: the waiting steps go back to the store, due now, no attempt spent."""
        with self._parked_lock:
            flights = [flight for waiting in self._parked.values() for flight in waiting]
            self._parked.clear()
        now = self.clock()
        with self._busy_lock:
            self._busy -= len(flights)
        for flight in flights:
            flight.finished = True
            back = StepResult(task=flight.task, outcome="deferred", retry_in=0.0, started_at=now, finished_at=now)
            self._finished.put((flight, back))

    def _execute(self, task: StepTask, started: float) -> StepResult:
        rule = self._rule(task)
        if rule is None or task.index >= len(rule.steps):
            return self._failure(
                task, f"rule {task.rule!r} version {task.rule_version} is not available", None, started, final=True
            )
        step = rule.steps[task.index]
        loaded = self.loaded()
        context = step_context(task.event, rule, task.outputs, task.attempt)
        params: Any = None
        try:
            if not should_run(step, context):
                return self._success(task, rule, "skipped", None, None, started)
            params = apply_overrides(step.params.render(context), task.overrides)
            model = loaded.registry.validate(step.action, params)
            if rule.shadow:  # rendered and recorded as it would be sent; the action never runs
                return self._success(task, rule, "succeeded", None, params, started)
            with loaded.actions.use(step.action) as action, self._hover_for(loaded, step.action) as hover:
                output = action.run(model, self._context(task, rule, step.timeout, hover))
            output = _checked_output(output)
        except Defer as exc:  # nothing was sent: back to the store, the attempt not spent
            log.debug("run %s step %s deferred %.2fs: %s", task.run_id, task.index, exc.after, exc,
                      extra=step_fields(task, started))
            return StepResult(task=task, outcome="deferred", retry_in=exc.after, started_at=started,
                              finished_at=self.clock(), waits_for=exc.host)
        except Retry as exc:
            return self._failure(task, str(exc), exc.after, started, params=params, rule=rule)
        except (Fail, RenderError, ParamsError) as exc:
            return self._failure(task, str(exc), None, started, params=params, rule=rule, final=True)
        except Exception as exc:  # a plugin's crash is the step's failure, never the worker's
            log.debug("step failed", exc_info=True)
            return self._failure(task, f"{type(exc).__name__}: {exc}", None, started, params=params, rule=rule)
        return self._success(task, rule, "succeeded", output, params, started)

    def _success(
        self, task: StepTask, rule: Rule, outcome: str, output: Any, params: Any, started: float
    ) -> StepResult:
        masker = self.loaded().masker
        if log.isEnabledFor(logging.INFO):
            log.info(
                "run %s step %s (%s) %s", task.run_id, task.index, task.action, outcome,
                extra=step_fields(task, started)
            )
        return StepResult(
            # Stored masked, outputs too: no value from the environment reaches the store, and
            # a later step sees "****" where a target echoed a secret back (SPEC 3).
            task=task, outcome=outcome, output=masker.mask_value(output), params=masker.mask_value(params),
            started_at=started, finished_at=self.clock(), next_delay=_next_delay(rule, task.index),
            step_count=len(rule.steps), ordered=_ordered(rule),
        )

    def _failure(
        self, task: StepTask, error: str, after: float | None, started: float, *,
        params: Any = None, rule: Rule | None = None, final: bool = False,
    ) -> StepResult:
        masker = self.loaded().masker
        rule = rule or self._rule(task)
        step = rule.steps[task.index] if rule is not None and task.index < len(rule.steps) else None
        policy = step.retry if step is not None else self.loaded().config.settings.defaults.retry
        retry_in = None if final else retry_delay(policy, task.attempt, after)
        error = masker.mask(error)
        level = logging.WARNING if retry_in is not None else logging.ERROR
        log.log(level, "run %s step %s (%s) attempt %d failed: %s%s", task.run_id, task.index, task.action,
                task.attempt, error, f"; retrying in {retry_in:.1f}s" if retry_in is not None else "",
                extra=step_fields(task, started))
        return StepResult(
            task=task, outcome="failed", error=error, retry_in=retry_in, params=masker.mask_value(params),
            started_at=started, finished_at=self.clock(), next_delay=_next_delay(rule, task.index) if rule else 0.0,
            continue_on_error=bool(step and step.continue_on_error), step_count=len(rule.steps) if rule else 0,
            ordered=_ordered(rule),
        )

    def _context(self, task: StepTask, rule: Rule, timeout: float, hover: HoverClient | None) -> Context:
        logger = logging.LoggerAdapter(logging.getLogger("hookwise.action"), step_fields(task))
        return Context(
            event=task.event, run_id=task.run_id, step_id=task.step_id, attempt=task.attempt,
            idempotency_key=task.idempotency_key, logger=logger, rule=rule.name, timeout=timeout,
            emit=lambda type_, data, source, delay: self._emit(task, type_, data, source, delay),
            store=self.store, hover=hover,
            delivery=self.delivery, secret=self._secret, mask=self.loaded().masker.mask_value,
        )

    def _secret(self, text: str) -> bool:
        return self.loaded().masker.mask(text) != text

    def _hover_for(self, loaded: Loaded, action: str) -> AbstractContextManager[HoverClient | None]:
        """The process's Hover client for a hover step, held while it runs (one, so its
        rate limit holds for the process; made anew when a reload changes the ``hover:``
        settings); None for the other actions."""
        if action != "hover":
            return nullcontext()
        return self.hover.use(loaded.config.settings.hover)

    def _emit(self, task: StepTask, type_: str, data: Any, source: str, delay: float) -> str:
        now = self.clock()
        data = self.loaded().masker.mask_value(data)  # stored, like every event: no secret in it
        incoming = Incoming(
            source=source, type=type_, body=json.dumps(data, ensure_ascii=False, default=str), headers={}, query={},
            received_at=now, id=derived_id("emit", task.run_id, str(task.index)), depth=task.event.depth + 1,
            available_at=now + delay,
        )
        (stored,) = self.store.put_events([incoming])
        self.wake()
        return stored.event_id

    def _rule(self, task: StepTask) -> Rule | None:
        loaded = self.loaded()
        rule = loaded.rules.get(task.rule)
        if rule is not None and rule.version == task.rule_version:
            return rule
        found = self._rules_by_version.get(task.rule_version)
        if found is None:
            found = self._compile_stored(loaded, task.rule_version)
        return found

    def _compile_stored(self, loaded: Loaded, version: str) -> Rule | None:
        stored = self.store.rule_text(version)
        if stored is None:
            return None
        name, file, text = stored
        try:
            rule = RuleLoader(loaded.config, loaded.registry, loaded.templates).compile_text(text, file, version)
        except ConfigError as exc:
            log.error("rule %s version %s no longer compiles: %s", name, version, exc, extra={"rule": name})
            return None
        self._rules_by_version[version] = rule
        return rule


def _ordered(rule: Rule | None) -> bool:
    return rule is not None and rule.state is not None and rule.state.order_by is not None


def _next_delay(rule: Rule | None, index: int) -> float:
    if rule is None or index + 1 >= len(rule.steps):
        return 0.0
    return rule.steps[index + 1].delay


def _checked_output(output: Any) -> Any:
    if output is None:
        return None
    try:
        text = json.dumps(output, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise Fail(f"the action returned an output that is not JSON: {exc}") from None
    if len(text) > MAX_OUTPUT:
        raise Fail(f"the action's output is {len(text)} bytes of JSON, more than the {MAX_OUTPUT} allowed")
    return json.loads(text) if not isinstance(output, dict) else dict(output)
