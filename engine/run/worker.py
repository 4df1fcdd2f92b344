"""The worker: claim stored events, match them, create runs; claim due steps, run them,
record what happened.

One dispatcher thread talks to the store and step threads run the actions (plain
synchronous code), taking steps from one queue and handing back results on another. Every
store write the worker makes goes through the dispatcher, in batches: claims of events and
steps, the runs created for matched events, and the results of finished steps. Claims
carry a lease, so the work of a killed process comes back to whichever worker claims next.

Running one step is engine.run.step_runner's; steps waiting for a slot of their host are kept
in engine.run.parking; a claimed step's record is engine.run.flights.InFlight.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ..errors import StoreError
from ..hover.client import SharedClient
from ..ops.logs import step_fields
from ..ops.metrics import Metrics
from ..rules.loader import Loaded
from ..store import Unrecorded, WorkerStore
from .delivery import Delivery
from .flights import Busy, InFlight
from .matching import match_or_note
from .parking import Parking
from .runs import StepResult, StepTask
from .step_runner import StepRunner

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
#: Seconds between looks over the running steps for one past its time limit, while the
#: worker is busy (an idle worker wakes at the soonest limit).
TIMEOUT_CHECK = 0.05
#: Steps claimed ahead, per step thread: first steps are claimed with their runs, in the
#: matching transaction, and wait in the queue for a free step thread (their leases are
#: renewed all the while). Claiming only as many as there are free threads would leave
#: most of a busy worker's steps to a second claim, a second transaction and a second
#: reading of each event.
PREFETCH = 4


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
        self, store: WorkerStore, loaded: Callable[[], Loaded], *, concurrency: int = 256, poll: float = 0.25,
        metrics: Metrics | None = None, clock: Callable[[], float] = time.time, delivery: Delivery | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.delivery = delivery if delivery is not None else Delivery(loaded().config.settings.http)
        self.metrics = metrics
        self.loaded = loaded
        self.concurrency = concurrency
        self.poll = poll
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._queued: queue.SimpleQueue[InFlight | None] = queue.SimpleQueue()  # None: a thread's end
        self._finished: queue.SimpleQueue[tuple[InFlight, StepResult]] = queue.SimpleQueue()
        self._events_stored = True  # a new event may be waiting: claim before the next poll
        self._claimed_at = 0.0  # when events were last claimed (or looked for)
        self._timers_at = 0.0  # when due timers were last looked for
        self._timeouts_at = 0.0  # when running steps are next looked over for their time limit
        self._in_flight: set[InFlight] = set()  # queued or running, and not yet recorded
        self._unwritten: list[StepResult] = []  # finished, kept while the store cannot record them
        self._closed = False  # stopped: step threads start nothing more
        self._busy = Busy()  # steps submitted and not finished: queued, running, waiting, abandoned
        self._thread: threading.Thread | None = None
        self._renewed = 0.0
        #: the process's Hover client, for the hover action; closed when replaced and on stop
        self.hover = SharedClient(store)
        #: runs the steps (in the step threads) and knows their rules
        self.runner = StepRunner(store, loaded, clock=clock, delivery=self.delivery, hover=self.hover, wake=self.wake)
        # Steps waiting for a free slot of their host, kept here (their claims renewed, no
        # thread held) and started again the moment a call to that host ends.
        self.parking = Parking(self.delivery, limit=concurrency, requeue=self._queued.put, busy=self._busy,
                               stopping=self._stopping)
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
        return self._busy.room(self.concurrency * PREFETCH)

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
        self._busy.add(1)
        flight = InFlight(task, self.runner.timeout_of(task))
        self._in_flight.add(flight)
        self._queued.put(flight)

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
        error = f"the step's result cannot be stored: {reason}"
        return self.runner.failure(result.task, error, None, result.started_at)

    def _timed_out(self, flight: InFlight, now: float) -> StepResult:
        started = flight.started or now
        log.warning(
            "run %s step %s timed out after %.1fs", flight.task.run_id, flight.task.index, flight.timeout,
            extra=step_fields(flight.task, started)
        )
        return self.runner.failure(flight.task, f"timed out after {flight.timeout:g}s", None, started)

    # --- executing steps (in the step threads) ------------------------------------------------

    def _serve(self) -> None:
        """A step thread: run queued steps one at a time, hand back their results. A step
        this thread started for a slot it freed comes first (see :meth:`Parking.unpark`)."""
        self.parking.serve()
        while (flight := self.parking.next_flight(self._queued.get)) is not None:
            if self._closed:
                continue
            # A step that waited already is run now (its turn has come), its params kept.
            fresh = not flight.waited and flight.prepared is None
            host = self.runner.destination(flight.task) if fresh else None
            if host is not None and self.parking.must_wait(host):  # its host has no free slot: not rendered
                if not self.parking.park(flight, host, counted=True):  # enough wait here: it waits in the store
                    self._hand_back(flight, self.delivery.expected_wait(host))
                continue
            bound, flight.bound_for = flight.bound_for, None
            if bound is not None:  # its promised slot: it asks for it now
                self.parking.unbind(bound)
            flight.started = self.clock()  # its time limit runs from now
            try:
                result = self.runner.execute(flight, flight.started)
            except Exception as exc:  # execute catches everything; this is a last guard
                log.exception("running step %s of run %s failed", flight.task.index, flight.task.run_id)
                result = StepResult(task=flight.task, outcome="failed", error=f"internal error: {exc}", retry_in=1.0,
                                    started_at=flight.started, finished_at=self.clock())
            finally:
                flight.finished = True
                self._busy.add(-1)
                if bound is not None:  # a slot it did not take after all (a render error) passes on
                    self.parking.unpark(bound)
            if result.waits_for is not None and self.parking.park(flight, result.waits_for):
                continue
            self._finished.put((flight, result))
            self._wake.set()

    # --- steps that go back to the store without having run --------------------------------

    def _hand_back(self, flight: InFlight, wait: float) -> None:
        """``flight`` goes back to the store without having run, due in ``wait`` seconds."""
        now = self.clock()
        flight.finished = True
        self._busy.add(-1)
        back = StepResult(task=flight.task, outcome="deferred", retry_in=wait, started_at=now, finished_at=now)
        self._finished.put((flight, back))
        self._wake.set()

    def _release_parked(self) -> None:
        """On stop: the waiting steps go back to the store, due now, no attempt spent."""
        flights = self.parking.release()
        now = self.clock()
        self._busy.add(-len(flights))
        for flight in flights:
            flight.finished = True
            back = StepResult(task=flight.task, outcome="deferred", retry_in=0.0, started_at=now, finished_at=now)
            self._finished.put((flight, back))
