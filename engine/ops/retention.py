"""Retention: prune events and finished runs older than ``retention.events``.

Ended rule state (throttles past their window, counted events past theirs, fired and
cancelled timers and finished order entries older than the events) goes with them.

A thread in the worker process deletes in small batches (each its own short transaction)
with a pause between them, so ingest never waits on it for long. Dead and active runs are
kept, and so are the events they belong to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import StoreError
from ..rules.loader import Loaded
from ..store import RetentionStore

log = logging.getLogger("hookwise.retention")

#: Rows deleted per transaction.
BATCH = 500
#: Pause between batches, and how often to look for old rows.
PAUSE = 0.05
INTERVAL = 60.0


class Retention:
    def __init__(self, store: RetentionStore, loaded: Callable[[], Loaded], *, interval: float = INTERVAL) -> None:
        self.store = store
        self.loaded = loaded
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hookwise-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.prune_once()
            except StoreError as exc:
                log.warning("pruning failed: %s", exc)

    def prune_once(self) -> dict[str, int]:
        """Prune everything now due, batch by batch; the totals deleted."""
        before = time.time() - self.loaded().config.settings.retention.events
        totals = {"runs": 0, "events": 0, "deliveries": 0, "state": 0}
        while not self._stop.is_set():
            counts = self.store.prune(before, BATCH)
            for key, n in counts.items():
                totals[key] = totals.get(key, 0) + n
            if not any(counts.values()):
                break
            time.sleep(PAUSE)
        if any(totals.values()):
            log.info("pruned %(runs)d runs, %(events)d events, %(deliveries)d delivery ids and %(state)d rows of rule "
                     "state (ended throttles, counted events, finished timers)", totals)
        return totals
