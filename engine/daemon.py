"""``hookwise serve``: the receiver (uvicorn) and the worker in one process, or either
alone (``--role``), with signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads rules.

Draining: the receiver stops taking connections and finishes the requests it has (each
answered only after its event is committed), the group commit flushes, then the worker
stops claiming, lets running steps finish (up to the drain timeout) and records them.
Steps still running after that keep their claim until its lease runs out and are then run
again, so nothing is lost either way.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .config import Config
from .errors import ConfigError
from .ingest import Ingest
from .loader import Current, Loaded, load
from .server import Health, create_app
from .store import Store, open_store
from .worker import Worker

log = logging.getLogger("hookwise.daemon")

ROLES = ("all", "receiver", "worker")


@dataclass
class Options:
    config_path: Path
    host: str | None = None
    port: int | None = None
    role: str = "all"
    drain_timeout: float = 30.0


class Daemon:
    """One hookwise process: builds the parts from the config and runs them."""

    def __init__(self, loaded: Loaded, options: Options) -> None:
        self.options = options
        self.current = Current(loaded)
        self.store: Store = open_store(loaded.config.store_url())
        self.health = Health()
        self.worker: Worker | None = None
        self.ingest: Ingest | None = None
        self._stop = threading.Event()
        self._server: Any = None

    @property
    def config(self) -> Config:
        return self.current().config

    def run(self) -> None:
        role = self.options.role
        if role in ("all", "worker"):
            self.worker = Worker(self.store, self.current, concurrency=self.config.settings.workers.concurrency)
            self.worker.start()
        signal.signal(signal.SIGHUP, self._on_hup)
        # Ours before uvicorn's: uvicorn restores and re-raises the signal it caught once it
        # has shut down, and that must not end the process before the worker has drained.
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        try:
            if role in ("all", "receiver"):
                self._serve_http()
            else:
                self._wait_for_signal()
        finally:
            self._shutdown()

    def _serve_http(self) -> None:
        import uvicorn

        self.ingest = Ingest(self.store, on_stored=self.worker.wake if self.worker else None)
        self.ingest.start()
        app = create_app(self.current, self.ingest, self.health, self.store)
        settings = self.config.settings.server
        config = uvicorn.Config(
            app, host=self.options.host or settings.host, port=self.options.port if self.options.port is not None else settings.port,
            access_log=False, log_level="warning", lifespan="off", timeout_graceful_shutdown=self.options.drain_timeout,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        log.info("receiving on http://%s:%s (role %s)", config.host, config.port, self.options.role)
        self._server.run()  # returns after SIGTERM/SIGINT and a graceful shutdown
        self.health.draining = True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _wait_for_signal(self) -> None:
        log.info("worker running (role worker)")
        while not self._stop.wait(1.0):
            pass

    def _shutdown(self) -> None:
        self.health.draining = True
        if self.ingest is not None:
            self.ingest.stop()
        if self.worker is not None:
            self.worker.stop(self.options.drain_timeout)
        self.store.close()
        log.info("stopped")

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=self.reload, name="hookwise-reload", daemon=True).start()

    def reload(self) -> bool:
        """Load the config and rules again; swap them in only when they are valid."""
        try:
            loaded = load(self.config.path)
        except ConfigError as exc:
            log.error("reload failed, the previous rules stay:\n%s", exc)
            return False
        self.current.swap(loaded)
        log.info("reloaded: %d rules", len(loaded.rules))
        if self.worker is not None:
            self.worker.wake()
        return True


def serve(options: Options) -> None:
    """Load everything, then run until stopped."""
    Daemon(load(options.config_path), options).run()
