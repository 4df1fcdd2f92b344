"""The receiver's connection limits (SPEC 4): request headers over max_header (431), clients
slower than read_timeout, and more connections than max_connections or open files allow —
against the app on loopback, and the daemon as a real process with a low open-files limit.

The attacking clients are raw sockets: they send what no HTTP library would (headers that
never end), which is the point."""

from __future__ import annotations

import http.client
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.store import open_store

from .support import DaemonProcess, free_port, post
from .test_receiver import Served

LIMITED = """\
server: {max_header: 8KiB, read_timeout: 500ms, max_connections: 400}
rules: []
sources:
  open: {type: "body:kind", id: "header:X-Delivery", allow_ips: [127.0.0.1]}
"""


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, config=LIMITED)
    yield s
    s.close()


def request(
    port: int, headers: dict[str, str], path: str = "/hooks/open", body: bytes = b'{"kind": "k"}',
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


UNFINISHED = b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nX-A: "


def unfinished(port: int, count: int, head: bytes = UNFINISHED) -> list[socket.socket]:
    """``count`` connections that start a request and never finish its headers."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head)
        socks.append(s)
    return socks


def read_until_closed(socks: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """What each socket receives until the server closes it; sockets still open after
    ``within`` seconds are left out."""
    got = {s: b"" for s in socks}
    closed: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[s] += chunk
                else:
                    sel.unregister(s)
                    closed[s] = got[s]
    return closed


def test_headers_over_max_header_are_refused_431_and_nothing_is_stored(limited: Served) -> None:
    before = len(limited.events())
    for headers, path in [
        ({"X-Big": "a" * 9000}, "/hooks/open"),  # one header
        ({f"X-H{n}": "b" * 100 for n in range(100)}, "/hooks/open"),  # many, together
        ({}, "/hooks/open?q=" + "c" * 9000),  # the request line counts too
    ]:
        status, body = request(limited.port, {**headers, "X-Delivery": "big"}, path)
        assert status == 431 and b'"headers_too_large"' in body
    assert len(limited.events()) == before
    assert request(limited.port, {"X-Small": "a" * 7000, "X-Delivery": "small"})[0] == 202


def test_a_request_after_a_large_body_on_the_same_connection_is_counted_anew(limited: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=10)
    try:
        for n in range(3):  # bodies and heads of 6 KiB each, on one connection: none is over 8 KiB
            conn.request("POST", "/hooks/open", body=b'{"kind": "' + b"x" * 6000 + b'"}',
                         headers={"Content-Type": "application/json", "X-Delivery": f"keep-{n}", "X-Pad": "p" * 6000})
            response = conn.getresponse()
            assert (response.status, response.read()[:10]) == (202, b'{"event_id')
    finally:
        conn.close()


def test_clients_slower_than_read_timeout_are_closed(limited: Served) -> None:
    before = len(limited.events())
    heads = unfinished(limited.port, 300)
    body = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    body.sendall(b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Delivery: slow\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    silent = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    closed = read_until_closed([*heads, body, silent], within=20)
    try:
        assert len(closed) == 302, "a slow client was never disconnected"
        assert all(closed[s].startswith(b"HTTP/1.1 408 ") for s in [*heads, silent])
        assert closed[body] == b""  # mid-body: disconnected without an answer
        assert len(limited.events()) == before
    finally:
        for s in [*heads, body, silent]:
            s.close()


def test_past_max_connections_the_longest_idle_are_closed_and_requests_still_served(tmp_path: Path) -> None:
    config = LIMITED.replace("read_timeout: 500ms, max_connections: 400", "read_timeout: 60s, max_connections: 40")
    served = Served(tmp_path, config=config)
    waiting = unfinished(served.port, 60)  # the cap is 40: the first 20 make room for the last 20
    try:
        for n in range(5):
            assert request(served.port, {"X-Delivery": f"through-{n}"})[0] == 202
        closed = read_until_closed(waiting, within=1)
        assert len(closed) >= 20 and set(closed.values()) == {b""}  # closed without an answer
        assert waiting[0] in closed and waiting[-1] not in closed
    finally:
        for s in waiting:
            s.close()
        served.close()


def test_when_every_connection_is_busy_a_new_one_is_answered_503(tmp_path: Path) -> None:
    served = Served(tmp_path, config=LIMITED.replace("max_connections: 400", "max_connections: 2"))
    busy = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(2)]
    try:
        for s in busy:  # a request each, its body awaited: every connection is busy
            s.sendall(b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Expect: 100-continue\r\nContent-Length: 50\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")  # the app is reading the body
        status, body = request(served.port, {"X-Delivery": "third"})
        assert status == 503 and b"too many connections" in body
    finally:
        for s in busy:
            s.close()
        served.close()


DAEMON = """\
rules: []
sources:
  open: {type: "body:kind", allow_ips: [127.0.0.1]}
"""


def low_files(soft: int, hard: int | None = None) -> None:
    _, current = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard if hard is not None else current))


@pytest.fixture
def more_files() -> Iterator[None]:
    """This process holds the attacking sockets: let it open enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.fail(f"the test needs an open-files hard limit of 4096, have {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    # With only 128 files, accepting fails for want of them, and asyncio tries again a
    # second later: a request may wait that long (the connection waits, never fails).
    ("hard", "count", "within"), [(None, 1100, 1.0), (1024, 1100, 1.0), (128, 300, 3.0)],
    ids=["soft limit 1024 (raised)", "hard limit 1024", "hard limit 128 (accept fails for want of files)"],
)
def test_the_daemon_survives_connections_that_never_finish_their_headers(
    tmp_path: Path, more_files: None, hard: int | None, count: int, within: float,
) -> None:
    (tmp_path / "config.yaml").write_text(DAEMON)
    (tmp_path / "rules").mkdir()
    port = free_port()
    soft = min(1024, hard or 1024)
    config = tmp_path / "config.yaml"
    daemon = DaemonProcess(config, port, "--role", "receiver", preexec_fn=lambda: low_files(soft, hard))
    attack: list[socket.socket] = []
    try:
        daemon.wait_ready()
        attack = unfinished(port, count)
        for n in range(5):
            started = time.monotonic()
            status, _ = post(f"{daemon.url}/hooks/open", f'{{"kind": "legit-{n}"}}')
            took = time.monotonic() - started
            assert status == 202 and took < within, f"request {n} took {took:.3f} s"  # the bound the limits exist for
        assert daemon.proc.poll() is None
    finally:
        for s in attack:
            s.close()
        daemon.stop()
    assert daemon.log.stat().st_size < 16 * 1024, daemon.output()[-4000:]
    assert "Traceback" not in daemon.output()


def peak_memory(pid: int) -> int:
    """The process's peak resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_100_mb_trailer_costs_the_daemon_no_memory_and_stores_nothing(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(DAEMON)
    (tmp_path / "rules").mkdir()
    daemon = DaemonProcess(tmp_path / "config.yaml", free_port(), "--role", "receiver")
    try:
        daemon.wait_ready()
        before = peak_memory(daemon.proc.pid)
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
            s.sendall(b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ")
            with pytest.raises(OSError):  # closed by the daemon on the way
                for _ in range(100):
                    s.sendall(b"a" * (1 << 20))
        assert peak_memory(daemon.proc.pid) - before < 16 * 1024 * 1024
        assert post(f"{daemon.url}/livez", b"", method="GET") == (200, {"status": "ok"})
    finally:
        daemon.stop()
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'hookwise.db'}")
    try:
        assert store.list_events() == []
    finally:
        store.close()


def test_a_120_mb_header_costs_the_daemon_no_memory(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(DAEMON)
    (tmp_path / "rules").mkdir()
    daemon = DaemonProcess(tmp_path / "config.yaml", free_port(), "--role", "receiver")
    try:
        daemon.wait_ready()
        before = peak_memory(daemon.proc.pid)
        answer = b""
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
            try:
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ")
                chunk = b"a" * (1 << 20)
                for _ in range(120):
                    s.sendall(chunk)
                answer = s.recv(200)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused and closed before it was all sent: what matters is below
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        assert peak_memory(daemon.proc.pid) - before < 16 * 1024 * 1024
        assert post(f"{daemon.url}/livez", b"", method="GET") == (200, {"status": "ok"})
    finally:
        daemon.stop()


def test_malformed_and_upgrade_requests_are_answered_and_logged_once(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(DAEMON)
    (tmp_path / "rules").mkdir()
    daemon = DaemonProcess(tmp_path / "config.yaml", free_port(), "--role", "receiver")
    try:
        daemon.wait_ready()
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
                s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                answer = b"".join(iter(lambda: s.recv(4096), b""))
            assert answer.startswith(b"HTTP/1.1 400 ") and b'"error": "bad_request"' in answer
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
            conn.request("GET", "/livez", headers={"Connection": "Upgrade", "Upgrade": "websocket"})
            assert conn.getresponse().status == 200  # answered as plain HTTP
            conn.close()
    finally:
        daemon.stop()
    lines = daemon.output().splitlines()
    assert len(lines) < 12, "\n".join(lines)
    assert sum("could not parse" in line for line in lines) == 1 and sum("upgrade" in line for line in lines) == 1
