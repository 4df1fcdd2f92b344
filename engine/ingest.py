"""Group commit of received events.

Request handlers hand their events to one writer thread and wait; the writer stores
everything that has arrived meanwhile in one transaction, then answers them all. With
``synchronous=FULL`` a commit costs an fsync, so sharing it among concurrent requests is
what lets durability keep up with the network.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Callable

from .errors import StoreError
from .store import Incoming, Store, Stored

log = logging.getLogger("hookwise.ingest")

#: Most events committed in one transaction.
MAX_BATCH = 512

_STOP = object()


class Ingest:
    """The writer thread of received events."""

    def __init__(self, store: Store, on_stored: Callable[[], None] | None = None, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.on_stored = on_stored
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hookwise-ingest", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit what is queued, then stop."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    async def put(self, item: Incoming) -> Stored:
        """Store ``item``; returns once it is committed. Raises :class:`StoreError`."""
        if self._closed:
            raise StoreError("hookwise is shutting down")
        future: Future[Stored] = Future()
        self._queue.put((item, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _commit(self, batch: list[tuple[Incoming, Future[Stored]]]) -> None:
        try:
            results = self.store.put_events([item for item, _ in batch])
        except StoreError as exc:
            log.error("could not store %d events: %s", len(batch), exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        except Exception as exc:  # a bug: answer 503 rather than leave requests hanging
            log.exception("storing events failed")
            for _, future in batch:
                future.set_exception(StoreError(f"store failed: {exc}"))
            return
        for (_, future), stored in zip(batch, results):
            future.set_result(stored)
        if self.on_stored is not None:
            self.on_stored()
