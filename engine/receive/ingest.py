"""Group commit of received events.

Request handlers add their events to a batch and wait; one store call at a time, in a
thread of its own, commits everything that arrived meanwhile in one transaction, then the
handlers answer. With ``synchronous=FULL`` a commit costs an fsync, so sharing it among
concurrent requests is what lets durability keep up with the network. Batching happens on
the event loop, so a request costs no thread hand-off of its own: one per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import StoreError, Unstorable
from ..store import Incoming, IngestStore, Stored

log = logging.getLogger("hookwise.ingest")

#: Most events committed in one transaction.
MAX_BATCH = 512
#: A commit waits for more events to share it until this many loop iterations in a row
#: brought none: requests whose bytes have arrived are parsed and join the batch, and
#: nothing waits for requests not yet sent. Part of a commit's cost is the same whatever
#: its size (the fsync, the index pages it rewrites), so on a busy server fuller batches
#: are what keeps the store from taking the core.
QUIET_ROUNDS = 2
#: ... but no longer than this (seconds) after the first event of the batch.
MAX_GATHER = 0.005


class Ingest:
    """The group commit of received events (used from one event loop)."""

    def __init__(
        self, store: IngestStore, on_stored: Callable[[], None] | None = None, *, max_batch: int = MAX_BATCH
    ) -> None:
        self.store = store
        self.on_stored = on_stored
        self.max_batch = max_batch
        self._pending: list[tuple[Incoming, asyncio.Future[Stored]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # the loop keeps only a weak reference to a task
        self._closed = False
        #: when (time.monotonic()) a commit last failed for every event of its batch
        self.failed_at: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookwise-ingest")

    def start(self) -> None:
        """Nothing to start: the first event starts a flush (kept for symmetry with stop)."""

    def stop(self) -> None:
        """Refuse new events. Events already taken are committed before their requests are
        answered, and the server waits for those requests before it stops."""
        self._closed = True
        self._executor.shutdown(wait=True)

    async def put(self, item: Incoming) -> Stored:
        """Store ``item``; returns once it is committed. Raises :class:`StoreError`."""
        if self._closed:
            raise StoreError("hookwise is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self._pending.append((item, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await self._gather(loop)
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._commit(loop, batch)
        finally:
            self._flushing = False

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait while the loop keeps bringing events, up to a full batch or MAX_GATHER."""
        deadline = loop.time() + MAX_GATHER
        quiet, seen = 0, len(self._pending)
        while quiet < QUIET_ROUNDS and seen < self.max_batch and loop.time() < deadline:
            await asyncio.sleep(0)
            quiet = quiet + 1 if len(self._pending) == seen else 0
            seen = len(self._pending)

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Incoming, asyncio.Future[Stored]]]
    ) -> None:
        results: list[Stored | StoreError]
        try:
            results = await loop.run_in_executor(self._executor, self._put, [item for item, _ in batch])
        except Exception as exc:  # the store cannot take any event now
            if not isinstance(exc, StoreError):  # a bug: answer 503 rather than leave requests hanging
                log.exception("storing events failed")
                exc = StoreError(f"store failed: {exc}")
            else:
                log.error("could not store %d events: %s", len(batch), exc)
            self.failed_at = time.monotonic()
            results = [exc] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the client may have gone; a stored event is stored all the same
                continue
            if isinstance(result, Stored):
                future.set_result(result)
            else:
                future.set_exception(result)
        if self.on_stored is not None and any(isinstance(result, Stored) for result in results):
            self.on_stored()

    def _put(self, items: list[Incoming]) -> list[Stored | StoreError]:
        """``put_events``, where an event that cannot be stored fails alone: a batch that
        fails for one of its events (:class:`Unstorable`, or a bug) is split in halves until
        each such event is on its own, and the others are stored, in their order. Any other
        :class:`StoreError` is raised: the store cannot take anything now."""
        try:
            return list(self.store.put_events(items))
        except Unstorable as exc:
            if len(items) == 1:
                log.warning("could not store an event for source %s: %s", items[0].source, exc)
                return [exc]
        except StoreError:
            raise
        except Exception as exc:
            if len(items) == 1:  # a bug: this request gets a 503, the log the traceback
                log.exception("storing an event for source %s failed", items[0].source)
                return [StoreError(f"store failed: {exc}")]
        half = len(items) // 2
        return self._put(items[:half]) + self._put(items[half:])
