"""Client CPU per keep-alive POST (``python -m bench.httpclient [calls] [rounds]``): the
http action's client (engine/run/outbound.py, on requests) next to the hand-written client it
replaced (actions/wire.py, read from the commit before it was removed, when git has it), a
plain requests.Session and a plain http.client.HTTPConnection, with the whole action on
top of the client and a bare socket (sendall, recv) beneath it for scale.

The target is bench/sink.py pinned to core 1, this process is pinned to core 0. CPU is
the user + system time of this process (getrusage) over ``calls`` calls after a warm-up;
the sink's time is not counted. The clients take turns for ``rounds`` rounds (the
machine's load drifts) and the median of each is printed.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import resource
import socket
import statistics
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests

from actions.http import HttpAction, HttpParams
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context
from engine.run.outbound import Client

from .ingest import HERE, free_port, pinned, stop, wait_up

JOB = {"job": "12345", "state": "processing"}
BODY = json.dumps(JOB).encode()
HEADERS = {"Content-Type": "application/json", "Idempotency-Key": "run-1-0", "User-Agent": "hookwise/bench"}

Call = Callable[[], None]


def cpu_per_call(call: Call, calls: int) -> float:
    """Microseconds of this process's CPU per ``call()``, after ``calls // 10`` warm-up calls."""
    for _ in range(calls // 10):
        call()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        call()
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / calls * 1e6


#: The last commit with the hand-written client (actions/wire.py), for the "before" figure.
WIRE_COMMIT = "8a7490e"


def _old_wire() -> Any:
    """actions/wire.py as it was at WIRE_COMMIT, as a module; None without git or history."""
    try:
        source = subprocess.run(
            ["git", "show", f"{WIRE_COMMIT}:actions/wire.py"], capture_output=True, text=True, check=True,
            cwd=HERE.parent, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("hookwise_bench_old_wire")
    sys.modules[module.__name__] = module  # dataclasses and NamedTuple look their module up
    exec(compile(source, "actions/wire.py@" + WIRE_COMMIT, "exec"), module.__dict__)
    return module


class _Open:
    """The old client's guard, letting every connection through."""

    def before_connect(self, host: str, port: int) -> None:
        pass

    def after_connect(self, host: str, port: int, sock: socket.socket) -> None:
        pass


@contextmanager
def wire_client(port: int) -> Iterator[Call]:
    wire = _old_wire()
    if wire is None:
        raise LookupError(f"actions/wire.py is not in this checkout's history ({WIRE_COMMIT})")
    pool = wire.Pool(_Open(), max_idle=1, max_body=1024 * 1024)
    url = f"http://127.0.0.1:{port}/sink"

    def call() -> None:
        assert pool.request("POST", url, HEADERS, BODY, 10.0).body == b"{}"

    try:
        yield call
    finally:
        pool.close()


@contextmanager
def outbound_client(port: int) -> Iterator[Call]:
    client = Client()
    url = f"http://127.0.0.1:{port}/sink"

    def call() -> None:
        assert client.send("POST", url, headers=HEADERS, data=BODY, timeout=10.0).body == b"{}"

    try:
        yield call
    finally:
        client.close()


@contextmanager
def requests_session(port: int) -> Iterator[Call]:
    session = requests.Session()
    session.trust_env = False
    url = f"http://127.0.0.1:{port}/sink"

    def call() -> None:
        assert session.post(url, data=BODY, headers=HEADERS, timeout=10.0).content == b"{}"

    try:
        yield call
    finally:
        session.close()


@contextmanager
def stdlib_client(port: int) -> Iterator[Call]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)

    def call() -> None:
        conn.request("POST", "/sink", BODY, HEADERS)
        assert conn.getresponse().read() == b"{}"

    try:
        yield call
    finally:
        conn.close()


@contextmanager
def whole_action(port: int) -> Iterator[Call]:
    """The http action's run() (params validated once, as the worker has them)."""
    action = HttpAction(Settings.model_validate({"http": {"allow_private": True}}))
    params = HttpParams.model_validate({"method": "POST", "url": f"http://127.0.0.1:{port}/sink", "json": JOB})
    event = Event(source="bench", type="job", body=JOB, id="ev-1")
    ctx = Context(
        event=event, run_id="run-1", step_id="0", attempt=1, idempotency_key="run-1-0",
        logger=logging.getLogger("bench")
    )

    def call() -> None:
        assert action.run(params, ctx)["json"] == {}

    try:
        yield call
    finally:
        action.close()


@contextmanager
def bare_socket(port: int) -> Iterator[Call]:
    """The floor: the same request bytes, and reads until the sink's ``{}`` arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
    request = (f"POST /sink HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY

    def call() -> None:
        sock.sendall(request)
        data = sock.recv(65536)
        while not data.endswith(b"{}"):
            data += sock.recv(65536)

    try:
        yield call
    finally:
        sock.close()


CLIENTS = {
    "wire.py (before)": wire_client, "outbound (after)": outbound_client, "requests": requests_session,
    "http.client": stdlib_client, "http action": whole_action, "bare socket": bare_socket,
}


def measure(calls: int = 10_000, rounds: int = 3) -> dict[str, float]:
    """Median microseconds of CPU per call, by client."""
    port = free_port()
    sink = subprocess.Popen(pinned([sys.executable, str(HERE / "sink.py"), str(port), os.devnull], 1))
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    try:
        wait_up(port, "/")
        seen: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(rounds):
            for name, client in CLIENTS.items():
                try:
                    with client(port) as call:  # a new connection each round: the sink drops idle ones
                        seen[name].append(cpu_per_call(call, calls))
                except LookupError:  # no history to read the old client from
                    continue
        return {name: statistics.median(values) for name, values in seen.items() if values}
    finally:
        stop(sink)


def report(results: dict[str, float]) -> None:
    print("client CPU per keep-alive POST to a local sink (median of rounds)")
    for name, micros in results.items():
        print(f"  {name:<18} {micros:6.1f} µs")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    report(measure(*args))
