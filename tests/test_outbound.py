"""The outbound HTTP client (engine/run/outbound.py, on requests) against a malicious server on
loopback (tests/malicious.py): the protocol cases a hand-written client got wrong. Every
call goes through the http action, so what is checked is what a step sees: output, Retry
or Fail. The Hover client and ``hookwise send`` use the same client."""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from actions.http import HttpAction, HttpParams
from engine.errors import Fail, Retry
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context
from engine.run.outbound import Client, OutboundError

from .malicious import OK, After, RawServer, reply


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
def action() -> Iterator[HttpAction]:
    built = HttpAction(Settings.model_validate({"http": {"allow_hosts": ["127.0.0.1"]}}))
    yield built
    built.close()


def call(action: HttpAction, key: str = "run-1-0", **params: Any) -> dict[str, Any]:
    event = Event(source="test", type="thing.happened", body={}, id="ev-1")
    ctx = Context(
        event=event,
        run_id="run-1",
        step_id="call",
        attempt=1,
        idempotency_key=key,
        logger=logging.getLogger("test.outbound"),
    )
    return action.run(HttpParams.model_validate(params), ctx)


# -- one step's answer never reaches another ---------------------------------------------------

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED"


@pytest.mark.parametrize(
    ("method", "head", "status"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n", 304),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", 200),
    ],
    ids=["204", "304", "HEAD"],
)
def test_stray_bytes_after_a_bodiless_answer_never_reach_another_step(
    raw: Callable[..., RawServer], action: HttpAction, method: str, head: bytes, status: int
) -> None:
    server = raw((head + STRAY, "keep"), (reply("200 OK", b"mine"), "keep"))
    first = call(action, "run-1-0", method=method, url=server.url("/first"), expect=status)
    assert (first["status"], first["text"]) == (status, "")
    second = call(action, "run-2-0", url=server.url("/second"))
    assert (second["status"], second["text"]) == (200, "mine")
    assert len(server.requests) == 2  # the second step's request was really sent and answered


@pytest.mark.parametrize(
    ("method", "head", "status"),
    [
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n", 304),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", 200),
        ("GET", OK, 200),
    ],
    ids=["204", "304", "HEAD", "200"],
)
def test_bytes_arriving_on_an_idle_connection_never_reach_another_step(
    action: HttpAction, method: str, head: bytes, status: int
) -> None:
    # The stray answer arrives after the first was read, while the connection sits idle.
    server = RawServer([(head, "keep"), (reply("200 OK", b"mine"), "keep")], later=STRAY)
    try:
        assert call(action, "run-1-0", method=method, url=server.url("/first"), expect=status)["status"] == status
        server.release.set()
        assert server.later_sent.wait(5)
        second = call(action, "run-2-0", url=server.url("/second"))
    finally:
        server.stop()
    assert (second["status"], second["text"]) == (200, "mine")
    assert len(server.requests) == 2
    assert server.accepts == 2  # the connection with bytes waiting was not reused


def test_a_post_is_not_sent_again_when_the_server_closes_the_reused_connection(
    raw: Callable[..., RawServer], action: HttpAction
) -> None:
    # The server reads the second request and closes without answering (a keep-alive
    # timeout racing the request): the attempt fails and says so; nothing is resent.
    server = raw((OK, "keep"), (b"", "close"))
    call(action, url=server.url(), method="POST", json={"n": 1})
    with pytest.raises(Retry, match=r"http: POST http://127\.0\.0\.1:\d+/: the server closed the connection"):
        call(action, url=server.url(), method="POST", json={"n": 2})
    assert len(server.requests) == 2
    assert server.requests[1].endswith(b'{"n": 2}')


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(
    raw: Callable[..., RawServer], action: HttpAction
) -> None:
    server = raw((OK, "close"), (OK, "keep"))
    call(action, url=server.url())
    assert server.closed.wait(5)
    assert call(action, url=server.url(), method="POST", json={})["text"] == "ok"
    assert (len(server.requests), server.accepts) == (2, 2)  # the POST arrived once, on a new connection


def test_a_reset_is_retried_later_not_now(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"", "reset"))
    with pytest.raises(Retry, match=r"the server closed the connection"):
        call(action, url=server.url("/x"), method="POST", json={})
    assert len(server.requests) == 1


def test_keep_alive_connections_are_reused(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    for _ in range(3):
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
def test_a_connection_the_server_means_to_close_is_not_reused(
    raw: Callable[..., RawServer], action: HttpAction, answer: bytes
) -> None:
    server = raw((answer, "keep"))  # the server keeps it open: only the client can tell
    call(action, url=server.url())
    call(action, url=server.url())
    assert server.accepts == 2


def test_each_thread_has_its_own_connections(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, url=server.url())
    with ThreadPoolExecutor(1) as other:
        other.submit(call, action, url=server.url()).result()
    call(action, url=server.url())
    assert (server.accepts, len(server.requests)) == (2, 3)


# -- what is not valid HTTP is refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 099 Early\r\nContent-Length: 2\r\n\r\nok", "a bad status line"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", "a bad status line"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "a bad status line"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "a line does not end in CRLF"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok", "a line does not end in CRLF"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok", "a line holds a NUL byte"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 5\r\nContent-Length: 2\r\n\r\nok", "a line holds a lone CR"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n", "a line does not end in CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\n\r\n", "a line does not end in CRLF"),
    ],
    ids=[
        "status-099",
        "status-2000",
        "not-http",
        "bare-lf-head",
        "bare-lf-header",
        "nul-in-header",
        "lone-cr",
        "bare-lf-chunk-size",
        "bare-lf-last-chunk",
    ],
)
def test_a_response_that_is_not_valid_http_is_refused(
    raw: Callable[..., RawServer], action: HttpAction, answer: bytes, why: str
) -> None:
    server = raw((answer, "close"))
    with pytest.raises(Retry, match=f"not valid HTTP: {why}"):
        call(action, url=server.url())


def test_a_body_that_breaks_off_is_retried(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "close"))
    with pytest.raises(Retry, match="the response body broke off"):
        call(action, url=server.url())


def test_a_body_that_stalls_times_out(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "keep"))
    with pytest.raises(Retry, match=r"timed out after 0.2s reading the response body"):
        call(action, url=server.url(), timeout=0.2)


# -- framing the client gets right ---------------------------------------------------------------


def test_a_chunked_body_is_joined_and_its_trailer_skipped(raw: Callable[..., RawServer], action: HttpAction) -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n5;x=y\r\n: 12}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = raw((chunked, "keep"), (OK, "keep"))
    out = call(action, url=server.url())
    assert out["json"] == {"a": 12}
    assert "x-trailer" not in out["headers"]
    assert call(action, url=server.url())["text"] == "ok"
    assert server.accepts == 1  # read to its end: the connection went on


@pytest.mark.parametrize("encode", [gzip.compress, zlib.compress], ids=["gzip", "deflate"])
def test_compressed_bodies_are_decoded_and_cut_after_decoding(
    raw: Callable[..., RawServer], action: HttpAction, encode: Callable[[bytes], bytes]
) -> None:
    coding = "gzip" if encode is gzip.compress else "deflate"
    server = raw((reply("200 OK", encode(b"a" * (3 * 1024 * 1024)), f"Content-Encoding: {coding}"), "keep"))
    out = call(action, url=server.url(), headers={"Accept-Encoding": "gzip, deflate"})
    assert out["truncated"] is True
    assert out["text"] == "a" * (1024 * 1024)


def test_interim_responses_are_skipped(raw: Callable[..., RawServer], action: HttpAction) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    server = raw((interim + reply("201 Created", b"made"), "keep"))
    out = call(action, method="POST", url=server.url(), json={})
    assert (out["status"], out["text"]) == (201, "made")


def test_repeated_headers_are_joined_under_lower_case_names(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((reply("200 OK", b"", "X-Tag: a", "x-TAG: b"), "keep"))
    assert call(action, url=server.url())["headers"]["x-tag"] == "a, b"


# -- the request ---------------------------------------------------------------------------------


def test_the_request_carries_host_with_port_and_its_own_content_length(
    raw: Callable[..., RawServer], action: HttpAction
) -> None:
    server = raw((OK, "keep"))
    call(
        action,
        method="PUT",
        url=server.url("/c?b=1"),
        body="hé",
        headers={"content-LENGTH": "99", "Transfer-Encoding": "chunked", "X-Mine": "v"},
    )
    lines = server.requests[0].split(b"\r\n")
    assert lines[0] == b"PUT /c?b=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 3" in lines
    assert not any(line.lower().startswith((b"content-length: 99", b"transfer-encoding")) for line in lines)
    assert b"X-Mine: v" in lines
    assert lines[-1] == "hé".encode()


def test_a_non_ascii_path_is_percent_encoded(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, url=server.url("/café?q=ü&r=%20"))
    assert server.requests[0].startswith(b"GET /caf%C3%A9?q=%C3%BC&r=%20 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("Content-Length ", "5", "invalid header name"),
        ("X-A\tB", "1", "invalid header name"),
        ("X-A", "1\r\nX-Injected: 1", "contains a line break"),
        ("X-A", "a\0b", "contains a control character"),
        ("X-A", "a\rb", "contains a line break"),
    ],
    ids=["name-trailing-space", "name-tab", "crlf-value", "nul-value", "cr-value"],
)
def test_a_header_that_would_break_the_request_is_refused_before_sending(name: str, value: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        HttpParams.model_validate({"url": "http://127.0.0.1/", "headers": {name: value}})


def test_a_bearer_token_with_a_line_break_is_refused_unsent(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    with pytest.raises(Fail, match="a header name or value cannot be sent") as caught:
        call(action, url=server.url(), auth={"bearer": "t0k\r\nX-Injected: 1"})
    assert "t0k" not in str(caught.value)
    assert server.accepts == 0


def test_userinfo_becomes_basic_auth_and_is_not_sent_in_the_url(
    raw: Callable[..., RawServer], action: HttpAction
) -> None:
    server = raw((OK, "keep"))
    call(action, url=f"http://alice:s%40cret@127.0.0.1:{server.port}/in")
    lines = server.requests[0].split(b"\r\n")
    assert lines[0] == b"GET /in HTTP/1.1"
    assert b"Authorization: Basic YWxpY2U6c0BjcmV0" in lines  # alice:s@cret


def test_the_steps_auth_wins_over_userinfo(raw: Callable[..., RawServer], action: HttpAction) -> None:
    server = raw((OK, "keep"))
    call(action, url=f"http://alice:pw@127.0.0.1:{server.port}/in", auth={"bearer": "tok"})
    assert b"Authorization: Bearer tok" in server.requests[0].split(b"\r\n")


# -- the client on its own (the Hover client and `hookwise send` use it so) ---------------------------


def test_the_client_follows_no_redirect_and_reads_no_more_than_its_cap(raw: Callable[..., RawServer]) -> None:
    server = raw((reply("302 Found", b"x" * 5000, "Location: /elsewhere"), "keep"))
    client = Client(max_body=100)
    try:
        answer = client.send("GET", server.url())
    finally:
        client.close()
    assert (answer.status, answer.headers["location"], len(answer.body), answer.truncated) == (
        302,
        "/elsewhere",
        100,
        True,
    )
    assert len(server.requests) == 1


def test_the_client_does_not_read_proxies_from_the_environment(
    raw: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = raw((OK, "keep"))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    client = Client()
    try:
        assert client.send("GET", server.url()).body == b"ok"
    finally:
        client.close()


def test_a_closed_client_refuses_new_threads(raw: Callable[..., RawServer]) -> None:
    server = raw((OK, "keep"))
    client = Client()
    client.close()
    with ThreadPoolExecutor(1) as other, pytest.raises(OutboundError, match="closed"):
        other.submit(client.send, "GET", server.url()).result()


def test_closing_the_client_releases_its_connections_and_refuses_its_threads_too(raw: Callable[..., RawServer]) -> None:
    server = raw((OK, "keep"))
    client = Client()
    assert client.send("GET", server.url()).body == b"ok"  # a connection kept alive, a Session for this thread
    client.close()
    assert server.client_left.wait(5)
    with pytest.raises(OutboundError, match="the client is closed"):
        client.send("GET", server.url())
    assert len(server.requests) == 1
