"""Steps waiting in the worker for a slot of their host (delivery control).

A step whose host has no free slot is parked here, with no thread held and its claim
renewed by the worker, and started again the moment a call to that host ends: the step
thread whose call freed the slot runs the step that waited longest next. A slot freed for a
parked step is promised to it ("bound") until it asks for it, so new steps do not count it
as free.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .delivery import Delivery
from .flights import Busy, InFlight


class Parking:
    """The parked steps of one worker, by host.

    ``limit``: how many may wait per host (more go back to the store). ``requeue`` puts a
    step on the worker's queue for any step thread. ``busy`` is the worker's count of steps
    taking room in its claim budget; ``stopping`` is set when the worker stops.
    """

    def __init__(
        self, delivery: Delivery, *, limit: int, requeue: Callable[[InFlight], None], busy: Busy,
        stopping: threading.Event,
    ) -> None:
        self.delivery = delivery
        self.limit = limit
        self._requeue = requeue
        self._busy = busy
        self._stopping = stopping
        self._parked: dict[str, deque[InFlight]] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # a step thread's own: the step it runs next
        # Steps started for a freed slot that have not asked for it yet, by host.
        self._bound: dict[str, int] = {}
        delivery.listen(self.unpark)

    # --- the step threads -------------------------------------------------------------------

    def serve(self) -> None:
        """Called once by each step thread before it takes steps."""
        self._local.serving, self._local.next = True, None

    def next_flight(self, take: Callable[[], InFlight | None]) -> InFlight | None:
        """The step this thread was handed for the slot it freed, else one from ``take``."""
        flight: InFlight | None = self._local.next
        if flight is None:
            return take()
        self._local.next = None
        return flight

    # --- waiting ------------------------------------------------------------------------------

    def park(self, flight: InFlight, host: str, *, counted: bool = False) -> bool:
        """Keep ``flight`` until a call to ``host`` ends; false when it should go back to
        the store instead (stopping, or enough are waiting here already). ``counted``: it
        is still counted as busy (it was not run)."""
        with self._lock:
            waiting = self._parked.setdefault(host, deque())
            if self._stopping.is_set() or len(waiting) >= self.limit:
                return False
            flight.started, flight.finished = None, False  # no time limit while it waits
            if flight.waited:  # a call to its host started before it again: it goes first now
                waiting.appendleft(flight)
            else:
                waiting.append(flight)
            flight.waited = True
        if not counted:  # it still takes room in the claim budget: no more is claimed than can wait
            self._busy.add(1)
        self.unpark(host)  # a call ended before it was parked: no wake-up would come
        return True

    def must_wait(self, host: str) -> bool:
        """Whether a new step for ``host`` waits before it is rendered: the host has no free
        slot, or steps wait for one already (they go first)."""
        with self._lock:
            queued = bool(self._parked.get(host))
        if queued or self.free_slots(host) <= 0:
            self.delivery.held(host)
            return True
        return False

    def free_slots(self, host: str) -> int:
        """Slots of ``host`` free now and not promised to a step started for one."""
        with self._lock:
            bound = self._bound.get(host, 0)
        return self.delivery.free(host) - bound

    def unbind(self, host: str) -> None:
        """A step started for a freed slot of ``host`` runs: the slot is no longer promised."""
        with self._lock:
            left = self._bound.get(host, 0) - 1
            if left > 0:
                self._bound[host] = left
            else:
                self._bound.pop(host, None)

    def unpark(self, host: str) -> None:
        """Slots of ``host`` may be free (a call ended): start the steps that waited
        longest for them, one per slot free and not promised already. A step thread (the
        one whose call ended) runs the first next itself: the slot is not left idle while
        the queue's other steps go first."""
        free = self.delivery.free(host)
        started: list[InFlight] = []
        with self._lock:
            waiting = self._parked.get(host)
            room = free - self._bound.get(host, 0)
            while waiting and room > 0 and not self._stopping.is_set():
                flight = waiting.popleft()
                flight.bound_for = host
                started.append(flight)
                room -= 1
            if started:
                self._bound[host] = self._bound.get(host, 0) + len(started)
        for flight in started:
            if getattr(self._local, "serving", False) and self._local.next is None:
                self._local.next = flight
            else:
                self._requeue(flight)

    def release(self) -> list[InFlight]:
        """Every parked step, removed (on stop: they go back to the store)."""
        with self._lock:
            flights = [flight for waiting in self._parked.values() for flight in waiting]
            self._parked.clear()
        return flights
