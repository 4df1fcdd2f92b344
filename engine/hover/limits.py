"""Hover's rate limit: at most 120 API requests per minute per integration, kept by one
:class:`RateLimiter` that every thread of the process shares (the process's
:class:`engine.hover.client.HoverClient` holds it). A wait that would pass a step's timeout becomes
a :class:`Retry` after that wait instead.

``clock`` and ``sleep`` are injected, so the window is tested by moving a clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from ..errors import Retry

#: Hover's documented limit: 120 requests per minute (developers.hover.to, "Rate Limits").
RATE_LIMIT = 120

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds (a sliding window), shared
    by every thread of the process."""

    def __init__(
        self, limit: int, period: float = 60.0, *, clock: Clock = time.time, sleep: Sleep = time.sleep
    ) -> None:
        if limit < 1:
            raise ValueError("the rate limit must be at least 1 request per period")
        self.limit, self.period = limit, period
        self._clock, self._sleep = clock, sleep
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Take a slot, waiting for one to free; raise :class:`Retry` (after the wait that
        would be needed) when that wait would pass ``timeout`` seconds."""
        waited = 0.0
        while (wait := self._take()) is not None:
            if waited + wait > timeout:
                raise Retry(
                    f"hover: {self.limit} requests per {self.period:g}s reached; waiting would pass the step's timeout",
                    after=wait
                )
            self._sleep(wait)
            waited += wait

    def _take(self) -> float | None:
        """None when a slot was taken, else the seconds until one frees."""
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - self.period:
                self._times.popleft()
            if len(self._times) < self.limit:
                self._times.append(now)
                return None
            return max(self._times[0] + self.period - now, 0.001)


__all__ = ["Clock", "RATE_LIMIT", "RateLimiter", "Sleep"]
