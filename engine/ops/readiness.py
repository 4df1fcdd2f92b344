"""``/readyz`` (and ``/healthz``): whether this process should be sent events now (SPEC 10).

Ready means the rules are loaded, the process is not draining, and the store can commit an
event now. The last is asked of the store itself: :meth:`~engine.store.Store.probe_write`
commits a row the way an event's commit does (same table, same wait for the disk), so a
read-only, full or corrupted store is not ready even while it still answers reads. A
successful probe is trusted for :data:`PROBE_EVERY` seconds — a load balancer may ask
often, and each probe waits for a disk flush — unless a group commit has failed since; a
failed probe is tried again at the next ask, so readiness comes back as soon as the store
does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import StoreError
from ..rules.loader import Loaded, rule_count

#: Seconds a successful write probe is trusted.
PROBE_EVERY = 1.0


class WriteProbe:
    """Whether the store can commit now, probed at most once at a time."""

    def __init__(
        self, probe: Callable[[], None], failed_at: Callable[[], float | None] = lambda: None,
        every: float = PROBE_EVERY, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe, self.failed_at, self.every, self.clock = probe, failed_at, every, clock
        self._ok_at: float | None = None  # when the last probe succeeded
        self._running: asyncio.Future[str | None] | None = None

    async def problem(self) -> str | None:
        """None when an event can be committed now; else why not."""
        ok_at, failed_at = self._ok_at, self.failed_at()
        if ok_at is not None and self.clock() - ok_at < self.every and (failed_at is None or failed_at < ok_at):
            return None
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe())
        return await asyncio.shield(self._running)

    async def _probe(self) -> str | None:
        started = self.clock()
        try:
            await run_in_threadpool(self.probe)
        except StoreError as exc:
            self._ok_at = None
            return str(exc)
        finally:
            self._running = None
        self._ok_at = started
        return None


def readiness(
    current: Callable[[], Loaded], draining: Callable[[], bool], probe: WriteProbe,
) -> Callable[[Request], Any]:
    """The ``/readyz`` endpoint: 200 when ready, 503 (with each check's state) when not."""

    async def ready(request: Request) -> Response:
        checks = {"rules": f"{rule_count(current().rules)} loaded", "draining": "yes" if draining() else "no"}
        problem = await probe.problem()
        checks["store"] = "writable" if problem is None else f"cannot commit: {problem}"
        ok = problem is None and not draining()
        return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)

    return ready
