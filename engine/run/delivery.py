"""Delivery control per destination host (SPEC 6): how many calls are in flight at once,
how many start per period, and a circuit breaker — so that a slow or dead target never
takes the step threads of the others, and a live one is kept busy without being hammered.

A call asks :meth:`Delivery.admit` for a :class:`Slot` before it sends anything, and gives
it back with :meth:`Delivery.done` (saying whether the host answered well). When the call
may not start now, ``admit`` raises :class:`~engine.errors.Defer` with how long to wait:
the worker hands the step back to the store, due then, without spending an attempt, and
no thread waits meanwhile.

- **concurrency**: at most N calls in flight per host. A step that finds them all taken
  is deferred and says so (``Defer.host``): the worker keeps it in memory and starts it
  again the moment a call to the host ends (:meth:`Delivery.listen`); one it hands back
  to the store instead is due after the host's typical call time divided by N, one after
  the other, so the waiting steps come back spread out rather than all at once.
- **rate**: calls start at least 1/rate apart. A step that comes too early is given the
  next free start time, reserved for it (by its idempotency key): when it comes back it
  takes its reservation, and steps arriving meanwhile queue behind it.
- **breaker**: after ``failures`` consecutive failed calls (no connection, a timeout, a
  5xx or a 429) the breaker opens: the host's steps wait until ``cooldown`` has passed,
  then one probe call is let through (half-open); its success closes the breaker, its
  failure opens it for another cooldown. State changes are logged.

State is per process and kept in memory; times come from the injected ``clock``
(monotonic seconds), so tests move time rather than sleep.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Defer
from ..rules.config import Breaker, Http

log = logging.getLogger("hookwise.delivery")

Clock = Callable[[], float]

#: Hosts whose state is kept at most; idle unconfigured ones are forgotten first.
MAX_HOSTS = 1024
#: Shortest deferral: a step handed back comes back no sooner.
MIN_WAIT = 0.01
#: A reservation not taken this long after its time is dropped (its step went elsewhere).
RESERVATION_GRACE = 60.0
#: Call time assumed for a host until calls were measured.
FIRST_GUESS = 0.1


class BreakerState(str, enum.Enum):
    #: calls go through
    CLOSED = "closed"
    #: calls wait until the cooldown has passed
    OPEN = "open"
    #: the cooldown has passed: one probe call is let through, the others wait for it
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class Limits:
    """The limits of one host: calls in flight, seconds between call starts (None: no
    rate limit), and its breaker (``failures`` 0: none)."""

    concurrency: int
    interval: float | None
    breaker: Breaker

    @classmethod
    def of(cls, http: Http, host: str) -> Limits:
        own = http.hosts.get(host)
        rate = own.rate if own is not None and own.rate is not None else http.rate
        return cls(
            concurrency=own.concurrency if own is not None and own.concurrency is not None else http.concurrency,
            interval=1.0 / rate if rate else None,
            breaker=own.breaker if own is not None and own.breaker is not None else http.breaker,
        )


@dataclass(frozen=True)
class Slot:
    """A call admitted to ``host``; give it back with :meth:`Delivery.done`."""

    host: str
    started: float
    #: the breaker's probe: its outcome opens or closes the breaker
    probe: bool = False


@dataclass
class _Host:
    limits: Limits
    in_flight: int = 0
    #: when the next call without a reservation may start (rate)
    next_start: float = 0.0
    reservations: dict[str, float] = field(default_factory=dict)
    #: when the last step deferred for concurrency is expected to find a free slot
    queue_until: float = 0.0
    failures: int = 0  # consecutive
    state: BreakerState = BreakerState.CLOSED
    retry_at: float = 0.0  # open: when the probe may go
    probing: bool = False
    call_time: float = FIRST_GUESS  # moving average of a call's seconds
    last_used: float = 0.0
    calls: int = 0
    failed: int = 0
    deferred: dict[str, int] = field(default_factory=lambda: {"concurrency": 0, "rate": 0, "breaker": 0})


class Delivery:
    """The delivery control of one process. Safe to share between threads."""

    def __init__(
        self, http: Http | None = None, *, clock: Clock = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self._http = http or Http()
        self._clock = clock
        self._rng = rng or random.Random()
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    def configure(self, http: Http) -> None:
        """New limits (a reload); each host keeps its calls in flight and breaker."""
        with self._lock:
            self._http = http
            for name, state in self._hosts.items():
                state.limits = Limits.of(http, name)

    def listen(self, on_free: Callable[[str], None]) -> None:
        """Call ``on_free(host)`` whenever a call to ``host`` ends (a slot frees), from the
        thread that ended it."""
        with self._lock:
            self._listeners.append(on_free)

    def room(self, host: str) -> bool:
        """Whether ``host`` has a free slot now (its concurrency; not its rate or breaker)."""
        with self._lock:
            state = self._hosts.get(host.lower())
            return state is None or state.in_flight < state.limits.concurrency

    def free(self, host: str) -> int:
        """How many more calls to ``host`` its concurrency allows now (not its rate or breaker)."""
        host = host.lower()
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                return Limits.of(self._http, host).concurrency
            return state.limits.concurrency - state.in_flight

    def expected_wait(self, host: str) -> float:
        """How long a step that waits for a slot of ``host`` away from the worker (in the
        store) should stay away: the waiting steps come back spread out, as admit's do."""
        host = host.lower()
        with self._lock:
            now = self._clock()
            return max(MIN_WAIT, self._queue_wait(self._state(host, now), now))

    def held(self, host: str) -> None:
        """Count a step that waits for a slot of ``host`` without having asked for one (the
        worker holds a new step while others wait): it shows among the deferred."""
        with self._lock:
            self._state(host.lower(), self._clock()).deferred["concurrency"] += 1

    # --- one call ---------------------------------------------------------------------

    def admit(self, host: str, key: str) -> Slot:
        """A slot for a call to ``host`` by the step ``key`` (its idempotency key), or
        :class:`Defer` saying how long the step should wait."""
        host = host.lower()
        with self._lock:
            now = self._clock()
            state = self._state(host, now)
            probe = self._breaker_allows(host, state, now)
            if state.in_flight >= state.limits.concurrency:
                if probe:
                    state.probing = False
                wait = self._defer(state, "concurrency", self._queue_wait(state, now), host)
                wait.host = host
                raise wait
            self._take_start(host, state, key, now, probe)
            state.in_flight += 1
            state.calls += 1
            state.probing = state.probing or probe
            return Slot(host, now, probe)

    def done(self, slot: Slot, ok: bool | None) -> None:
        """Give back ``slot``: ``ok`` true when the host answered (any status below 500 but
        429), false when the call failed (no connection, timeout, 5xx, 429), None when
        nothing was learned about the host (the call was refused before sending)."""
        with self._lock:
            now = self._clock()
            state = self._hosts.get(slot.host)
            if state is None:
                return
            state.in_flight = max(0, state.in_flight - 1)
            state.last_used = now
            if slot.probe:
                state.probing = False
            if ok is not None:
                state.call_time += (max(0.0, now - slot.started) - state.call_time) * 0.2
                if ok:
                    self._succeeded(slot.host, state)
                else:
                    self._failed(slot.host, state, slot.probe, now)
            listeners = list(self._listeners)
        for on_free in listeners:
            on_free(slot.host)

    # --- what is shown ------------------------------------------------------------------

    def hosts(self) -> list[dict[str, Any]]:
        """Each known host's limits and state, by host name: for ``/api/hosts``, the
        metrics and the logs."""
        with self._lock:
            now = self._clock()
            return [self._describe(name, state, now) for name, state in sorted(self._hosts.items())]

    @staticmethod
    def _describe(name: str, state: _Host, now: float) -> dict[str, Any]:
        limits = state.limits
        return {
            "host": name,
            "concurrency": limits.concurrency,
            "rate_per_s": round(1.0 / limits.interval, 6) if limits.interval else None,
            "in_flight": state.in_flight,
            "breaker": state.state.value,
            "consecutive_failures": state.failures,
            "retry_in_s": round(max(0.0, state.retry_at - now), 3) if state.state is BreakerState.OPEN else None,
            "calls": state.calls,
            "failed": state.failed,
            "deferred": dict(state.deferred),
            "call_time_s": round(state.call_time, 4),
        }

    # --- inside the lock ------------------------------------------------------------------

    def _state(self, host: str, now: float) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= MAX_HOSTS:
                self._forget_idle(now)
            state = self._hosts[host] = _Host(Limits.of(self._http, host), last_used=now)
        state.last_used = now
        return state

    def _forget_idle(self, now: float) -> None:
        idle = [
            name
            for name, s in self._hosts.items()
            if s.in_flight == 0
            and s.state is BreakerState.CLOSED
            and not s.reservations
            and name not in self._http.hosts
        ]
        idle.sort(key=lambda name: self._hosts[name].last_used)
        for name in idle[: max(1, len(idle) // 2)]:
            del self._hosts[name]

    def _breaker_allows(self, host: str, state: _Host, now: float) -> bool:
        """Raise Defer while the breaker holds calls back; true when this call is the probe."""
        if state.state is BreakerState.CLOSED:
            return False
        cooldown = state.limits.breaker.cooldown
        if state.state is BreakerState.OPEN:
            if now < state.retry_at:
                # Spread over part of the cooldown, so the waiting steps do not all come back at once.
                wait = state.retry_at - now + self._rng.uniform(0.0, max(MIN_WAIT, cooldown / 4))
                raise self._defer(state, "breaker", wait, host)
            state.state = BreakerState.HALF_OPEN
            log.info(
                "http: %s: the breaker's cooldown has passed: one probe call goes through", host, extra={"host": host}
            )
        if state.probing:
            raise self._defer(state, "breaker", self._rng.uniform(0.5, 1.5) * max(1.0, state.call_time), host)
        return True

    def _queue_wait(self, state: _Host, now: float) -> float:
        at = max(now, state.queue_until) + state.call_time / state.limits.concurrency
        state.queue_until = at
        return at - now

    def _take_start(self, host: str, state: _Host, key: str, now: float, probe: bool) -> None:
        """Let the call start now under the host's rate, or raise Defer with its reserved time."""
        interval = state.limits.interval
        if interval is None:
            return
        reserved = state.reservations.pop(key, None)
        if reserved is not None and reserved <= now + MIN_WAIT:
            return  # its start was counted when it was reserved
        if reserved is not None:
            state.reservations[key] = reserved
            raise self._defer(state, "rate", reserved - now, host)
        if state.next_start <= now:
            state.next_start = now + interval
            return
        if probe:
            state.probing = False
        at = state.next_start
        state.next_start = at + interval
        state.reservations[key] = at
        self._drop_stale(state, now)
        raise self._defer(state, "rate", at - now, host)

    @staticmethod
    def _drop_stale(state: _Host, now: float) -> None:
        if len(state.reservations) % 256 == 0:  # now and then: a reservation whose step never came back
            for key in [k for k, at in state.reservations.items() if at < now - RESERVATION_GRACE]:
                del state.reservations[key]

    @staticmethod
    def _defer(state: _Host, reason: str, wait: float, host: str) -> Defer:
        state.deferred[reason] += 1
        return Defer(f"http: {host}: waiting for its {reason}", after=max(MIN_WAIT, wait))

    @staticmethod
    def _succeeded(host: str, state: _Host) -> None:
        state.failures = 0
        if state.state is not BreakerState.CLOSED:
            state.state = BreakerState.CLOSED
            log.info("http: %s: the probe call succeeded: the breaker is closed", host, extra={"host": host})

    @staticmethod
    def _failed(host: str, state: _Host, probe: bool, now: float) -> None:
        state.failures += 1
        state.failed += 1
        breaker = state.limits.breaker
        if breaker.failures <= 0:
            return
        if probe or (state.state is BreakerState.CLOSED and state.failures >= breaker.failures):
            state.state = BreakerState.OPEN
            state.retry_at = now + breaker.cooldown
            log.warning(
                "http: %s: %s: the breaker is open; its steps wait %gs for a probe call, without spending attempts",
                host,
                "the probe call failed" if probe else f"{state.failures} calls failed in a row",
                breaker.cooldown,
                extra={"host": host},
            )
