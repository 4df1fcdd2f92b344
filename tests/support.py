"""Real parts for tests: a free port, an HTTP sink on loopback, the daemon as a process."""

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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


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
    ``responder(hit) -> (status, body)`` (default 200 ``{"ok": true}``)."""

    responder: Callable[[Hit], tuple[int, str]] | None = None
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def __post_init__(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
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
                self.send_header("Content-Type", "application/json")
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


def post(url: str, body: bytes | str, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, dict[str, Any] | str]:
    """POST with urllib; returns the status and the JSON (or text) answer."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
