"""The http action's client (actions/wire.py) against real servers on loopback: a raw
socket server for the replies a framework will not make (chunked, read to the close,
interim 1xx, broken heads, resets, stale keep-alive connections) and pytest-httpserver
over TLS with a certificate made here by ``openssl``.

Every call goes through the action, so what is checked is what a step sees: output,
Retry or Fail.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import socket
import ssl
import struct
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from actions.http import HttpAction, HttpParams
from engine.action import Context
from engine.config import Settings
from engine.errors import Fail, Retry
from engine.events import Event

After = Literal["keep", "close", "reset", "idle-408"]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
IDLE_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class RawServer:
    """A TCP server on loopback. It reads each request (head and Content-Length body),
    records it, and answers with the next of ``replies`` (the last one repeats): bytes to
    send, then what to do with the connection: ``keep`` it open, ``close`` it, ``reset``
    it (RST, sending nothing), or, once ``release`` is set, close it with a 408 as some
    servers do when a connection was idle too long (``idle-408``). Counts the
    connections it accepts."""

    def __init__(self, replies: list[tuple[bytes, After]]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.accepts = 0
        self.closed = threading.Event()  #: set when it closed a connection after a reply
        self.client_left = threading.Event()  #: set when a client closed a connection
        self.release = threading.Event()  #: lets ``idle-408`` go on
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        for sock in (self._listener, *self._conns):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepts += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while (request := _read_request(conn)) is not None:
                reply, after = self.replies[min(len(self.requests), len(self.replies) - 1)]
                self.requests.append(request)
                if after == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                    return
                conn.sendall(reply)
                if after == "idle-408" and self.release.wait(5):
                    conn.sendall(IDLE_408)
                if after in ("close", "idle-408"):
                    conn.close()
                    self.closed.set()
                    return
            self.client_left.set()
        except OSError:  # the client went away mid-reply, or stop()
            pass


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(*replies: tuple[bytes, After]) -> RawServer:
        servers.append(RawServer(list(replies)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make() -> Iterator[Callable[..., HttpAction]]:
    built: list[HttpAction] = []

    def build(**http: Any) -> HttpAction:
        built.append(HttpAction(Settings.model_validate({"http": {"allow_hosts": ["127.0.0.1"], **http}})))
        return built[-1]

    yield build
    for action in built:
        action.close()


@pytest.fixture
def action(make: Callable[..., HttpAction]) -> HttpAction:
    return make()


def call(action: HttpAction, **params: Any) -> dict[str, Any]:
    event = Event(source="test", type="thing.happened", body={}, id="ev-1")
    ctx = Context(event=event, run_id="run-1", step_id="call", attempt=1, idempotency_key="run-1-call", logger=logging.getLogger("test.wire"))
    return action.run(HttpParams.model_validate(params), ctx)


def reply(status: str = "200 OK", body: bytes = b"", *headers: str) -> bytes:
    """A response with a Content-Length."""
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


# -- the request -----------------------------------------------------------------------------


def test_the_request_carries_host_with_port_and_its_own_content_length(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, method="POST", url=server.url("/a?b=1"))
    call(action, method="PUT", url=server.url("/c"), body="hé", headers={"content-LENGTH": "99", "X-Mine": "v"})
    bare, sized = (request.split(b"\r\n") for request in server.requests)
    assert bare[0] == b"POST /a?b=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in bare
    assert b"Content-Length: 0" in bare
    assert b"Content-Length: 3" in sized and b"content-LENGTH: 99" not in sized
    assert b"X-Mine: v" in sized
    assert sized[-1] == "hé".encode()


def test_a_non_ascii_path_is_percent_encoded(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, url=server.url("/café?q=ü&r=%20"))
    assert server.requests[0].startswith(b"GET /caf%C3%A9?q=%C3%BC&r=%20 HTTP/1.1\r\n")


def test_a_header_value_with_a_line_break_is_refused_unsent(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    with pytest.raises(Fail, match=r"header 'Authorization' contains a line break") as caught:
        call(action, url=server.url(), auth={"bearer": "t0k\r\nX-Injected: 1"})
    assert "t0k" not in str(caught.value)
    assert server.accepts == 0


# -- framing -------------------------------------------------------------------------------


def test_a_chunked_body_is_joined_and_its_trailer_skipped(raw: Callable[..., RawServer], action: HttpAction) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n5;x=y\r\n: 12}\r\n0\r\nX-Trailer: t\r\n\r\n"
    server = raw((chunked, "keep"), (OK, "keep"))
    out = call(action, url=server.url())
    assert out["json"] == {"a": 12}
    assert "x-trailer" not in out["headers"]
    assert call(action, url=server.url())["text"] == "ok"
    assert server.accepts == 1  # the trailer was read up to its end: the connection went on


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send it
    ],
)
def test_gzip_and_deflate_bodies_are_decoded(raw: Callable[..., RawServer], action: HttpAction, coding: str, encode: Callable[[bytes], bytes]) -> None:
    server = raw((reply("200 OK", encode(b'{"zipped": true}' * 100), f"Content-Encoding: {coding}"), "keep"))
    out = call(action, url=server.url(), headers={"Accept-Encoding": "gzip, deflate"})
    assert out["text"] == '{"zipped": true}' * 100
    assert b"Accept-Encoding: gzip, deflate" in server.requests[0]


def test_an_unknown_content_encoding_is_kept_as_it_came(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((reply("200 OK", b"\x0b\x02\x80hi\x03", "Content-Encoding: br"), "keep"))
    assert call(action, url=server.url())["text"] == "\x0b\x02\ufffdhi\x03"


def test_a_compressed_body_is_cut_after_decoding(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((reply("200 OK", gzip.compress(b"a" * (3 * 1024 * 1024)), "Content-Encoding: gzip"), "keep"))
    out = call(action, url=server.url())
    assert out["truncated"] is True
    assert out["text"] == "a" * (1024 * 1024)


def test_a_body_without_a_length_is_read_to_the_close(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", "close"), (OK, "keep"))
    assert call(action, url=server.url())["text"] == "all of it"
    assert call(action, url=server.url())["text"] == "ok"
    assert server.accepts == 2


@pytest.mark.parametrize(
    ("method", "head", "expect"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 200),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", 304),
    ],
)
def test_head_204_and_304_have_no_body(raw: Callable[..., RawServer], action: HttpAction, method: str, head: bytes, expect: int) -> None:
    server = raw((head, "keep"), (OK, "keep"))
    out = call(action, method=method, url=server.url(), expect=expect)
    assert (out["status"], out["text"]) == (expect, "")
    assert call(action, url=server.url())["text"] == "ok"  # no body was waited for
    assert server.accepts == 1


def test_interim_responses_are_skipped(raw: Callable[..., RawServer], action: HttpAction) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    server = raw((interim + reply("201 Created", b"made"), "keep"))
    out = call(action, method="POST", url=server.url(), json={})
    assert (out["status"], out["text"]) == (201, "made")
    assert "link" not in out["headers"]


def test_repeated_headers_are_joined_under_lower_case_names(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((reply("200 OK", b"", "X-Tag: a", "x-TAG: b", "Folded: one", " two"), "keep"))
    headers = call(action, url=server.url())["headers"]
    assert headers["x-tag"] == "a, b"
    assert headers["folded"] == "one two"


# -- connections ---------------------------------------------------------------------------


def test_calls_share_one_connection_across_threads(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, url=server.url())
    with ThreadPoolExecutor(1) as other:
        other.submit(call, action, url=server.url()).result()
    call(action, url=server.url())
    assert (server.accepts, len(server.requests)) == (1, 3)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_a_connection_the_server_means_to_close_is_not_reused(raw: Callable[..., RawServer], action: HttpAction, answer: bytes) -> None:
    server = raw((answer, "keep"))  # the server keeps it open: only the client can tell
    call(action, url=server.url())
    call(action, url=server.url())
    assert server.accepts == 2


def test_a_connection_the_server_closed_while_idle_is_replaced(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "close"), (OK, "keep"))
    call(action, url=server.url())
    assert server.closed.wait(5)
    assert call(action, url=server.url())["text"] == "ok"
    assert len(server.requests) == 2  # the second call's request arrived once
    assert server.accepts == 2


def test_a_408_on_an_idle_connection_is_taken_for_its_close(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "idle-408"), (OK, "keep"))
    call(action, url=server.url())
    server.release.set()
    assert server.closed.wait(5)
    assert call(action, url=server.url())["text"] == "ok"
    assert (server.accepts, len(server.requests)) == (2, 2)


def test_a_reset_on_a_new_connection_is_retried_later_not_now(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"", "reset"))
    with pytest.raises(Retry, match=r"http: GET http://127\.0\.0\.1:\d+/x: no response: Connection reset by peer"):
        call(action, url=server.url("/x"))
    assert len(server.requests) == 1


def test_close_closes_the_idle_connections(raw: Callable[..., RawServer], make: Callable[..., HttpAction]) -> None:
    server = raw((OK, "keep"))
    action = make()
    call(action, url=server.url())
    action.close()
    assert server.client_left.wait(5)


# -- broken responses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n", "its header section is over 64 KiB"),
        (reply("200 OK", b"", *(f"X-{n}: {n}" for n in range(101))), "it has more than 100 header lines"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "it starts with 'SSH-2.0-OpenSSH_9.6'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok", "Content-Length 'two'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok", "Content-Length '2, 3'"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "a chunk size is not a hex number"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "a header line has no name"),
    ],
    ids=["head-over-64k", "101-header-lines", "not-http", "bad-length", "lengths-disagree", "bad-chunk-size", "no-colon"],
)
def test_a_response_that_is_not_valid_http_is_retried(raw: Callable[..., RawServer], action: HttpAction, answer: bytes, why: str) -> None:
    server = raw((answer, "close"))
    with pytest.raises(Retry, match=f"the response is not valid HTTP: {re.escape(why)}"):
        call(action, url=server.url())


def test_a_body_that_breaks_off_is_retried(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "close"))
    with pytest.raises(Retry, match="the response body broke off: the server closed the connection"):
        call(action, url=server.url())


def test_a_body_that_stalls_times_out(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "keep"))
    with pytest.raises(Retry, match=r"timed out after 0.2s reading the response body"):
        call(action, url=server.url(), timeout=0.2)


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (not for 127.0.0.1) and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPServer]:
    """An HTTPS server on loopback whose certificate the action trusts (SSL_CERT_FILE is
    read when the action makes its TLS context, at its first https call)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    server = HTTPServer(host="127.0.0.1", ssl_context=context, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def hello(request: Request) -> Response:
    return Response(json.dumps({"tls": request.scheme}), content_type="application/json")


def test_https_to_a_trusted_certificate(tls_server: HTTPServer, make: Callable[..., HttpAction]) -> None:
    tls_server.expect_request("/hello").respond_with_handler(hello)
    action = make(allow_hosts=["localhost"])
    assert call(action, url=f"https://localhost:{tls_server.port}/hello")["json"] == {"tls": "https"}
    assert call(action, url=f"https://localhost:{tls_server.port}/hello")["status"] == 200


def test_https_to_a_name_the_certificate_does_not_cover_is_refused(tls_server: HTTPServer, action: HttpAction) -> None:
    tls_server.expect_request("/hello").respond_with_handler(hello)
    with pytest.raises(Retry, match=r"cannot connect: .*CERTIFICATE_VERIFY_FAILED.*127\.0\.0\.1"):
        call(action, url=f"https://127.0.0.1:{tls_server.port}/hello")
    assert tls_server.log == []
