"""``hookwise serve``: the receiver (uvicorn) and the worker in one process, or either
alone (``--role``), with signals: SIGTERM/SIGINT drain and stop, SIGHUP (and, with
``--watch``, a change to the config or a rule file) reloads rules.

Reloading loads and validates everything again and swaps it in whole, or keeps the rules
in use and logs every problem (``FILE:LINE:COL: ...``); both are counted in the metrics.

Draining: /readyz answers 503 from the moment the signal arrives; the receiver stops
taking connections and finishes the requests it has (each answered only after its event is
committed), the group commit flushes, then the worker stops claiming, lets running steps
finish (up to the drain timeout) and records them.
Steps still running after that keep their claim until its lease runs out and are then run
again, so nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError, Problem
from ..receive import tokenfile
from ..receive.connections import deepen_queues, open_files_for, quiet_accept_errors, uvicorn_options
from ..receive.ingest import Ingest
from ..receive.server import Health, create_app
from ..rules.config import Config, Role, missing_token_files, read_config
from ..rules.loader import Current, Loaded, load, rule_count
from ..rules.rule_loader import rule_files
from ..run.delivery import Delivery
from ..run.worker import Worker
from ..store import Store, open_store
from .logs import mask_with
from .metrics import Metrics
from .retention import Retention

log = logging.getLogger("hookwise.daemon")

@dataclass
class Options:
    config_path: Path
    host: str | None = None
    port: int | None = None
    role: Role = "all"
    drain_timeout: float = 30.0
    #: reload when the config or a rule file changes (``serve --watch``)
    watch: bool = False
    #: seconds between two looks at the watched files
    watch_interval: float = 1.0


class Daemon:
    """One hookwise process: builds the parts from the config and runs them."""

    def __init__(self, loaded: Loaded, options: Options) -> None:
        self.options = options
        self.current = Current(loaded)
        self.store: Store = open_store(loaded.config.store_url())
        self.health = Health()
        self.delivery = Delivery(loaded.config.settings.http)
        self.metrics = Metrics(self.store.queue_counts, self.delivery.hosts)
        self.worker: Worker | None = None
        self.ingest: Ingest | None = None
        self.watcher: RuleWatcher | None = None
        self.retention: Retention | None = None
        self._stop = threading.Event()
        self._server: Any = None
        self._reload_lock = threading.Lock()

    @property
    def config(self) -> Config:
        return self.current().config

    def run(self) -> None:
        role = self.options.role
        mask_with(lambda: self.current().masker)
        if role in ("all", "worker"):
            self.worker = Worker(
                self.store, self.current, concurrency=self.config.settings.workers.concurrency, metrics=self.metrics,
                delivery=self.delivery,
            )
            self.worker.start()
            self.retention = Retention(self.store, self.current)
            self.retention.start()
        if self.options.watch:
            self.watcher = RuleWatcher(self.watched_files, self.reload, self.options.watch_interval)
            self.watcher.start()
            log.info("watching the config and rule files for changes")
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
        app = create_app(self.current, self.ingest, self.health, self.store, self.metrics, self.delivery.hosts)
        settings = self.config.settings.server
        config = uvicorn.Config(
            app, host=self.options.host or settings.host,
            port=self.options.port if self.options.port is not None else settings.port,
            access_log=False, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=int(self.options.drain_timeout),
            server_header=False,
            log_config=None,  # uvicorn's own lines go through our handler: our format, secrets masked
            **uvicorn_options(settings, open_files_for(settings.max_connections)),
        )
        self._server = _server(config, self._draining)
        log.info("receiving on http://%s:%s (role %s)", config.host, config.port, self.options.role)
        self._announce_token_urls(config.host, config.port)
        threading.Thread(target=self._notify_when_started, name="hookwise-notify", daemon=True).start()
        self._server.run()  # returns after SIGTERM/SIGINT and a graceful shutdown
        self.health.draining = True

    def _announce_token_urls(self, host: str, port: int) -> None:
        """Log, once at start, the URL to give the sender of each source whose token
        hookwise keeps in a ``token_file``: the one line that shows that token."""
        server = self.config.settings.server
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
        base = server.public_url.rstrip("/") if server.public_url else f"http://{shown}:{port}"
        reach = "" if server.public_url else "; it must reach this address: set server.public_url to the one it does"
        for name, source in sorted(self.config.settings.sources.items()):
            if source.token_file and source.token:
                url = f"{base}/hooks/{name}?token={quote(source.token[0], safe='')}"
                sender = "Hover (`hookwise hover register URL`)" if source.preset == "hover" else "the sender"
                log.info("source %s: register %s with %s%s; the token is kept in %s", name, url, sender, reach,
                         self.config.resolve(source.token_file), extra={"reveal": True})

    def _notify_when_started(self) -> None:
        """Tell systemd (``Type=notify``) once the listener is up."""
        while self._server is not None and not self._server.started and not self._stop.is_set():
            time.sleep(0.05)
        notify("READY=1")

    def _draining(self, signum: int) -> None:
        """Called in a signal handler (uvicorn's, before it starts shutting down, or ours):
        /readyz answers 503 from now on."""
        if not self.health.draining:
            self.health.draining = True
            # Not logged here: a signal handler may interrupt this thread inside the log handler.
            message = f"{signal.Signals(signum).name}: draining"
            threading.Thread(target=log.info, args=(message,), name="hookwise-drain-log", daemon=True).start()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._draining(signum)
        self._stop.set()

    def _wait_for_signal(self) -> None:
        log.info("worker running (role worker)")
        notify("READY=1")
        while not self._stop.wait(1.0):
            pass

    def _shutdown(self) -> None:
        notify("STOPPING=1")
        self.health.draining = True
        if self.retention is not None:
            self.retention.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.ingest is not None:
            self.ingest.stop()
        if self.worker is not None:
            self.worker.stop(self.options.drain_timeout)
        self.current.close()  # the actions' connections, once no step uses them
        self.store.close()
        log.info("stopped")

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=self.reload, name="hookwise-reload", daemon=True).start()

    def reload(self) -> bool:
        """Load the config and rules again; swap them in only when they are valid."""
        with self._reload_lock:  # a SIGHUP and the watcher at once: one after the other
            try:
                make_token_files(self.config.path)
                loaded = load(self.config.path)
            except ConfigError as exc:
                self._reload_failed(exc.problems)
                return False
            except Exception as exc:  # e.g. a plugin failing on import: still keep the old set
                log.exception("reload failed, the previous rules stay")
                self._reload_failed([f"{type(exc).__name__}: {exc}"])
                return False
            self.current.swap(loaded)
            self.delivery.configure(loaded.config.settings.http)
        log.info("reloaded: %s", rule_count(loaded.rules))
        self.metrics.reloaded(True)  # after the log line: who sees the count rise finds the line
        if self.worker is not None:
            self.worker.wake()
        return True

    def _reload_failed(self, problems: Iterable[object]) -> None:
        problems = list(problems)
        log.error(
            "reload failed, the previous rules stay: %d problem%s", len(problems), "" if len(problems) == 1 else "s"
        )
        for problem in problems:  # one line each, FILE:LINE:COL first, as `hookwise check` prints them
            log.error("reload: %s", problem)
        self.metrics.reloaded(False)  # after the log lines: who sees the count rise finds them

    def watched_files(self) -> list[Path]:
        """The files a reload reads: the config, and the rule files of the config in use
        (looked up each time, so a file added to a rules folder is seen)."""
        config = self.config
        named = [config.resolve(entry) for entry in config.settings.rules]
        found, _ = rule_files(config)
        # A named file that does not exist yet is watched for its arrival; folders are
        # not watched themselves (an editor's swap file changes them).
        return [config.path, *(path for path in named if not path.is_dir()), *found]


Stat = tuple[int, int, int] | None


class RuleWatcher:
    """Calls ``on_change`` when the files ``paths`` returns change: one is edited,
    replaced, added or removed.

    It looks every ``interval`` seconds at each file's modification time, size and inode
    (no new dependency, works on every filesystem), and calls ``on_change`` once a change
    has stayed the same for one more look, so an editor's save in several writes is one
    reload of the finished file. ``on_change`` runs in the watcher's thread.
    """

    def __init__(
        self, paths: Callable[[], Iterable[Path]], on_change: Callable[[], object], interval: float = 1.0
    ) -> None:
        self.paths = paths
        self.on_change = on_change
        self.interval = interval
        self._seen: dict[Path, Stat] | None = None  # None: the first look sets what "unchanged" is
        self._changed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._seen = self.snapshot()
        self._thread = threading.Thread(target=self._loop, name="hookwise-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a bug must not end the watching: log it and look again
                log.exception("watching the rule files failed")

    def check(self) -> bool:
        """Look once; True when ``on_change`` was called."""
        now = self.snapshot()
        if self._seen is None:
            self._seen = now
            return False
        if now != self._seen:  # changed since the last look: wait until it settles
            self._seen, self._changed = now, True
            return False
        if not self._changed:
            return False
        # Not looked at again after the reload: a write during it is seen next time. (A
        # reload that changes `rules:` makes the next look differ: one more, harmless reload.)
        self._changed = False
        self.on_change()
        return True

    def snapshot(self) -> dict[Path, Stat]:
        return {path: _stat(path) for path in self.paths()}


def _stat(path: Path) -> Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _server(config: Any, on_signal: Callable[[int], None]) -> Any:
    """A uvicorn server that calls ``on_signal`` as soon as SIGTERM or SIGINT arrives,
    before its graceful shutdown starts."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            quiet_accept_errors(asyncio.get_running_loop())
            await super().startup(sockets)
            deepen_queues(listener for server in getattr(self, "servers", []) for listener in server.sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            on_signal(sig)
            super().handle_exit(sig, frame)

    return Server(config)


def notify(state: str) -> None:
    """Send ``state`` to systemd when it started us with ``Type=notify`` (sd_notify's
    protocol: one datagram to the socket named by ``$NOTIFY_SOCKET``); else nothing."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


def make_token_files(path: Path) -> None:
    """Create the ``token_file`` of each source of the config at ``path`` that does not
    exist yet (before loading, so that the sources verify from the first request). Other
    problems of the config are left to the loading that follows, which reports them all."""
    config, _ = read_config(path)
    for name, file in missing_token_files(config):
        try:
            tokenfile.create(file)
        except tokenfile.TokenFileError as exc:
            problem = Problem(str(exc), ("sources", name, "token_file"))
            raise ConfigError([config.document.locate(problem) if config.document else problem]) from None
        log.info("sources.%s.token_file: made %s with a random token (mode 0600)", name, file)


def serve(options: Options) -> None:
    """Load everything, then run until stopped."""
    make_token_files(options.config_path)
    Daemon(load(options.config_path), options).run()
