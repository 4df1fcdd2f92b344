"""Real parts for tests: a clock tests move, a free port, an HTTP sink on loopback, the daemon as a process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Clock:
    """A clock that stands still until a test moves it: leases, delays, retries and time
    limits are tested by moving it, never by sleeping. It starts a minute ahead of the wall
    clock, so what a test stamps with ``time.time()`` (an event's ``received_at``) is in its
    past, as it is for a store that looks at it a moment later."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() + 60.0 if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` ahead (from any thread); the new time."""
        with self._lock:
            self.now += seconds
            return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sink:
    """An HTTP server on loopback that records every request and answers with
    ``responder(hit) -> (status, body)`` (default 200 ``{"ok": true}``). With
    ``keep_alive`` it speaks HTTP/1.1 and keeps connections open between requests."""

    responder: Callable[[Hit], tuple[int, str]] | None = None
    content_type: str = "application/json"
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    keep_alive: bool = False

    def __post_init__(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if sink.keep_alive else "HTTP/1.0"

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (a kill -9 test): not a delivery
                    return
                hit = Hit(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with sink.lock:
                    sink.hits.append(hit)
                status, body = sink.responder(hit) if sink.responder else (200, '{"ok": true}')
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", sink.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0, path: str | None = None) -> list[Hit]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                hits = [h for h in self.hits if path is None or h.path.startswith(path)]
            if len(hits) >= count:
                return hits
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests to the sink, got {len(hits)}")


class DaemonProcess:
    """``hookwise serve`` as a real process."""

    def __init__(
        self, config: Path, port: int, *args: str, env: dict[str, str] | None = None,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> None:
        self.config, self.port = config, port
        self.log = config.parent / f"daemon-{port}.log"
        environ = {**os.environ, **(env or {})}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "serve", "-c", str(config), "--port", str(port), *args],
                stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=config.parent, preexec_fn=preexec_fn,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for /readyz; on failure the process is stopped before the error is raised
        (a leaked process would fail a later test with a ResourceWarning)."""
        try:
            self._wait_ready(timeout)
        except AssertionError:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def post(
    url: str, body: bytes | str, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, dict[str, Any] | str]:
    """POST with urllib; returns the status and the JSON (or text) answer."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


#: The PostgreSQL database the tests use (a schema of their own each).
POSTGRES_URL = os.environ.get("HOOKWISE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/hookwise_test")


class NoPostgres(Exception):
    """PostgreSQL cannot serve the tests; the message says why and what to do."""


def postgres_database(url: str = POSTGRES_URL) -> str:
    """``url``, its database created first when the server answers but the database does
    not exist yet (a fresh cluster). Raises :class:`NoPostgres` saying what is missing."""
    try:
        import psycopg
        from psycopg import conninfo, sql
    except ImportError:
        raise NoPostgres("psycopg is not installed: pip install 'hookwise[postgres]'") from None
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return url
    except psycopg.OperationalError:
        pass  # perhaps only the database is missing: ask the server's maintenance database
    info = conninfo.conninfo_to_dict(url)
    dbname, host = str(info.get("dbname") or "hookwise_test"), str(info.get("host") or "127.0.0.1")
    port = f" -p {info['port']}" if info.get("port") not in (None, "5432") else ""
    how = f"createdb -h {host}{port} -U postgres {dbname}"
    try:
        admin = psycopg.connect(conninfo.make_conninfo(url, dbname="postgres"), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise NoPostgres(f"no PostgreSQL server answers at {host}{port}: {str(exc).strip()}") from None
    with admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            pass  # made meanwhile by a test run beside this one
        except psycopg.Error as exc:
            why = f"the database {dbname} does not exist and cannot be created here ({str(exc).strip()})"
            raise NoPostgres(f"{why}: {how}") from None
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise NoPostgres(f"cannot connect to the database {dbname}: {str(exc).strip()}") from None
    return url
