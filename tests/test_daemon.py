"""End to end: the daemon as a real process, a real HTTP target on loopback."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import DaemonProcess, Hit, Sink, free_port, post

RULES = """\
rules:
  - name: chain
    source: open
    event: order.created
    actions:
      - id: first
        http: {method: POST, url: "{SINK}/first", json: {order: "{{ event.id }}"}}
      - id: second
        http:
          method: POST
          url: "{SINK}/second"
          json: {echo: "{{ steps.first.json.seen }}", status: "{{ steps.first.status }}"}
  - name: flaky
    source: open
    event: flaky
    actions:
      - http: {method: POST, url: "{SINK}/flaky", json: {n: "{{ event.n }}"}}
        retry: {attempts: 5, backoff: 50ms, max_backoff: 200ms}
  - name: broken
    source: open
    event: broken
    actions:
      - http: {method: POST, url: "{SINK}/broken"}
        retry: {attempts: 3, backoff: 50ms, max_backoff: 100ms}
      - log: {message: never}
  - name: logged
    source: open
    event: crash
    actions:
      - http: {method: POST, url: "{SINK}/crash", json: {n: "{{ event.n }}"}}
        retry: {attempts: 20, backoff: 100ms, max_backoff: 500ms}
"""


def responder(hit: Hit) -> tuple[int, str]:
    if hit.path == "/first":
        return 200, json.dumps({"seen": hit.json()["order"]})
    if hit.path == "/broken":
        return 500, '{"error": "always"}'
    return 200, "{}"


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink(responder)
    yield s
    s.close()


def write_config(tmp_path: Path, sink: Sink) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "e2e.yaml").write_text(RULES.replace("{SINK}", sink.url))
    config = tmp_path / "hookwise.yaml"
    config.write_text(
        "store: sqlite:///data/hookwise.db\nrules: [rules/]\nhttp: {allow_private: true}\n"
        "sources:\n  open: {type: 'body:type', id: 'body:id', verify: none}\n"
    )
    return config


@pytest.fixture
def daemon(tmp_path: Path, sink: Sink) -> Iterator[DaemonProcess]:
    d = DaemonProcess(write_config(tmp_path, sink), free_port())
    d.wait_ready()
    yield d
    assert d.stop() == 0, d.output()


def runs(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    db = sqlite3.connect(tmp_path / "data" / "hookwise.db")
    try:
        return db.execute("SELECT rule, status, error FROM runs ORDER BY created_at").fetchall()
    finally:
        db.close()


def wait_until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_rules_fire_and_steps_chain_outputs(daemon: DaemonProcess, sink: Sink, tmp_path: Path) -> None:
    status, _ = post(daemon.url + "/hooks/open", json.dumps({"type": "order.created", "id": "o-1"}))
    assert status == 202
    first, second = sink.wait_for(1, path="/first")[0], sink.wait_for(1, path="/second")[0]
    assert first.json() == {"order": "o-1"}
    assert second.json() == {"echo": "o-1", "status": 200}
    assert first.headers["idempotency-key"].endswith("-0") and second.headers["idempotency-key"].endswith("-1")
    wait_until(lambda: runs(tmp_path) == [("chain", "succeeded", None)])


def test_a_target_failing_three_times_is_retried_to_success(daemon: DaemonProcess, sink: Sink, tmp_path: Path) -> None:
    calls = {"n": 0}

    def flaky(hit: Hit) -> tuple[int, str]:
        if hit.path == "/flaky":
            calls["n"] += 1
            return (503, "{}") if calls["n"] <= 3 else (200, "{}")
        return responder(hit)

    sink.responder = flaky
    post(daemon.url + "/hooks/open", json.dumps({"type": "flaky", "id": "f-1", "n": 7}))
    hits = sink.wait_for(4, path="/flaky")
    assert len({h.headers["idempotency-key"] for h in hits}) == 1  # one key for every attempt
    wait_until(lambda: runs(tmp_path) == [("flaky", "succeeded", None)])


def test_a_target_that_always_fails_ends_in_a_dead_run_with_its_error(
    daemon: DaemonProcess, sink: Sink, tmp_path: Path
) -> None:
    post(daemon.url + "/hooks/open", json.dumps({"type": "broken", "id": "b-1"}))
    sink.wait_for(3, path="/broken")
    wait_until(lambda: len(runs(tmp_path)) == 1 and runs(tmp_path)[0][1] == "dead")
    ((rule, _, error),) = runs(tmp_path)
    assert rule == "broken" and "500" in (error or "")
    time.sleep(0.3)
    assert len(sink.wait_for(3, path="/broken")) == 3  # no fourth attempt


def connections(pid: int, port: int) -> list[str]:
    """The states of process ``pid``'s TCP connections to ``port`` on loopback (Linux)."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in sockets:
                states.append(fields[3])
    return states


def reloads(daemon: DaemonProcess) -> int:
    status, text = post(daemon.url + "/metrics", "", method="GET")
    found = re.search(r"^hookwise_reloads_total ([0-9.]+)$", str(text), re.MULTILINE)
    return int(float(found.group(1))) if status == 200 and found else 0


def test_reloads_leave_no_connections_behind(tmp_path: Path) -> None:
    # Each reload's actions are new; the old ones are closed once their steps are done
    # (here: the http action's kept-alive connection to the target).
    sink = Sink(keep_alive=True)
    d = DaemonProcess(write_config(tmp_path, sink), free_port())
    try:
        d.wait_ready()
        for n in range(7):
            if n:
                d.proc.send_signal(signal.SIGHUP)
                wait_until(lambda n=n: reloads(d) == n)
            post(d.url + "/hooks/open", json.dumps({"type": "flaky", "id": f"k-{n}", "n": n}))
            sink.wait_for(n + 1, path="/flaky")
        wait_until(lambda: [r[1] for r in runs(tmp_path)] == ["succeeded"] * 7)
        assert len(connections(d.proc.pid, sink.port)) <= 1, connections(d.proc.pid, sink.port)
    finally:
        assert d.stop() == 0, d.output()
        sink.close()


def test_hookwise_send_signs_and_posts(tmp_path: Path, sink: Sink) -> None:
    config = write_config(tmp_path, sink)
    config.write_text(config.read_text().replace("verify: none", "token: s3cret-token"))
    d = DaemonProcess(config, free_port())
    try:
        d.wait_ready()
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"type": "order.created", "id": "sent-1"}))
        url = f"{d.url}/hooks/open"
        command = [sys.executable, "-m", "engine", "send", "-c", str(config), "--source", "open", str(event),
                   "--url", url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("202 ")
        assert sink.wait_for(1, path="/first")[0].json() == {"order": "sent-1"}
        unsigned = post(url, event.read_text())
        assert unsigned[0] == 401
    finally:
        assert d.stop() == 0, d.output()


def test_hookwise_send_to_nothing_says_so_in_one_line_without_the_token(tmp_path: Path, sink: Sink) -> None:
    config = write_config(tmp_path, sink)
    open_source = "open: {type: 'body:type', id: 'body:id', verify: none}"
    assert open_source in config.read_text()
    config.write_text(
        config.read_text().replace(open_source, "open: {type: 'body:type', id: 'body:id', token: s3cret-token}")
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "order.created", "id": "sent-1"}))
    url = f"http://127.0.0.1:{free_port()}/hooks/open"
    command = [sys.executable, "-m", "engine", "send", "-c", str(config), "--source", "open", str(event), "--url", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: cannot reach {url}?****: cannot connect: Connection refused"]


def test_sigterm_drains_and_exits_zero(tmp_path: Path, sink: Sink) -> None:
    d = DaemonProcess(write_config(tmp_path, sink), free_port())
    d.wait_ready()
    post(d.url + "/hooks/open", json.dumps({"type": "order.created", "id": "drain-1"}))
    sink.wait_for(1, path="/second")
    assert d.stop(signal.SIGTERM) == 0
    assert "stopped" in d.output()


def test_killed_daemon_loses_no_acknowledged_event(tmp_path: Path, sink: Sink) -> None:
    """kill -9 while events are being posted; after a restart every event that got a 2xx
    is processed, and the target saw every idempotency key."""
    config = write_config(tmp_path, sink)
    port = free_port()
    d = DaemonProcess(config, port)
    d.wait_ready()
    acknowledged: list[int] = []
    stop = threading.Event()

    def sender() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            try:
                status, _ = post(d.url + "/hooks/open", json.dumps({"type": "crash", "id": f"c-{n}", "n": n}))
            except (OSError, http.client.HTTPException):
                continue  # the daemon is down (or died mid-answer): this one was never acknowledged
            if status == 202:
                acknowledged.append(n)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acknowledged) >= 100)
    d.proc.kill()  # kill -9
    d.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    survivors = set(acknowledged)
    d2 = DaemonProcess(config, port)
    try:
        d2.wait_ready()
        wait_until(lambda: {h.json()["n"] for h in list(sink.hits) if h.path == "/crash"} >= survivors, timeout=60)
    finally:
        assert d2.stop() == 0, d2.output()
    db = sqlite3.connect(tmp_path / "data" / "hookwise.db")
    try:
        stored = {json.loads(b)["n"] for (b,) in db.execute("SELECT body FROM events")}
        run_count = db.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM runs").fetchone()
    finally:
        db.close()
    assert survivors <= stored
    assert run_count[0] == run_count[1]  # one run per (event, rule)
    keys = {h.headers["idempotency-key"] for h in sink.hits if h.path == "/crash"}
    assert len(keys) >= len(survivors)


def test_receiver_and_worker_as_separate_processes(tmp_path: Path, sink: Sink) -> None:
    config = write_config(tmp_path, sink)
    receiver = DaemonProcess(config, free_port(), "--role", "receiver")
    worker = DaemonProcess(config, free_port(), "--role", "worker")
    try:
        receiver.wait_ready()
        assert post(receiver.url + "/hooks/open", json.dumps({"type": "order.created", "id": "split-1"}))[0] == 202
        assert sink.wait_for(1, path="/second")[0].json() == {"echo": "split-1", "status": 200}
    finally:
        codes = (receiver.stop(), worker.stop())  # both, even when the first fails
        assert codes == (0, 0), receiver.output() + worker.output()
