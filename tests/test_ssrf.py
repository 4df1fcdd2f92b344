"""The SSRF guard (actions/ssrf.py, SPEC 11) against the forms an address can take in a URL.

Each refused URL must fail its step with a message naming the address, and nothing may
connect: the audit hook sees no ``socket.connect`` at all, and a loopback listener on the
port the URL names (with ``allow_private`` off) accepts nothing. A control case shows the
listener does count a connection that is let through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from actions.http import HttpAction, HttpParams
from engine.errors import Fail, Retry
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context

from .malicious import CountingListener


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    counting = CountingListener()
    yield counting
    counting.close()


@pytest.fixture
def make() -> Iterator[Callable[..., HttpAction]]:
    built: list[HttpAction] = []

    def build(**http: Any) -> HttpAction:
        built.append(HttpAction(Settings.model_validate({"http": http})))
        return built[-1]

    yield build
    for action in built:
        action.close()


def call(action: HttpAction, **params: Any) -> dict[str, Any]:
    event = Event(source="test", type="t", body={}, id="ev-1")
    ctx = Context(
        event=event,
        run_id="run-1",
        step_id="s",
        attempt=1,
        idempotency_key="run-1-0",
        logger=logging.getLogger("test.ssrf"),
    )
    return action.run(HttpParams.model_validate({"timeout": 2, **params}), ctx)


LOOPBACK = "a loopback address"
#: URLs towards this machine: {port} is the counting listener's.
TO_THE_LISTENER = [
    ("http://127.0.0.1:{port}/", LOOPBACK),
    ("http://127.1:{port}/", LOOPBACK),
    ("http://127.0.1:{port}/", LOOPBACK),
    ("http://2130706433:{port}/", LOOPBACK),  # decimal
    ("http://0x7f000001:{port}/", LOOPBACK),  # hex
    ("http://0x7f.0x0.0x0.0x1:{port}/", LOOPBACK),
    ("http://0177.0.0.1:{port}/", LOOPBACK),  # octal
    ("http://017700000001:{port}/", LOOPBACK),
    ("http://127.000.000.001:{port}/", LOOPBACK),
    ("http://127.255.255.254:{port}/", LOOPBACK),
    ("http://localhost:{port}/", LOOPBACK),  # a name that resolves to loopback
    ("http://LocalHost:{port}/", LOOPBACK),
    ("https://localhost:{port}/", LOOPBACK),  # refused before any TLS
    ("http://[::1]:{port}/", LOOPBACK),
    ("http://[::ffff:127.0.0.1]:{port}/", LOOPBACK),  # IPv4-mapped
    ("http://[::ffff:7f00:1]:{port}/", LOOPBACK),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/", LOOPBACK),
    ("http://[64:ff9b::7f00:1]:{port}/", LOOPBACK),  # NAT64
    ("http://[2002:7f00:1::]:{port}/", LOOPBACK),  # 6to4
    ("http://0.0.0.0:{port}/", "an unspecified address"),  # Linux connects it to this host
    ("http://0:{port}/", "an unspecified address"),
    ("http://[::]:{port}/", "an unspecified address"),
    ("http://user@127.0.0.1:{port}/", LOOPBACK),
    ("http://example.com@127.0.0.1:{port}/#@example.com", LOOPBACK),
]
#: URLs towards addresses no test listens on: only the audit hook can tell.
ELSEWHERE = [
    ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
    ("http://0xa9fea9fe/", "a cloud metadata address"),
    ("http://2852039166/", "a cloud metadata address"),
    ("http://[::ffff:169.254.169.254]/", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/", "a cloud metadata address"),
    ("http://100.100.100.200/", "a cloud metadata address"),
    ("http://169.254.1.1/", "a link-local address"),
    ("http://[fe80::1%25lo]/", "a link-local address"),  # a zone id
    ("http://10.0.0.1/", "a private address"),
    ("http://172.16.0.1/", "a private address"),
    ("http://192.168.0.1/", "a private address"),
    ("http://[fc00::1]/", "a private address"),
    ("http://[64:ff9b::a00:1]/", "a private address"),
    ("http://100.64.0.1/", "a non-public address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://[ff02::1]/", "a multicast address"),
    ("http://240.0.0.1/", "a private address"),  # 240.0.0.0/4 is in Python's private list
]


@pytest.mark.parametrize(("url", "reason"), TO_THE_LISTENER, ids=[u for u, _ in TO_THE_LISTENER])
def test_refused_without_a_connection_attempt(
    make: Callable[..., HttpAction], listener: CountingListener, connects: list[Any], url: str, reason: str
) -> None:
    with pytest.raises(Fail, match=rf"http: refusing to connect to \S+( at \S+)? \({reason}\); set http.allow_private"):
        call(make(), url=url.format(port=listener.port))
    assert connects == []
    assert listener.count() == 0


@pytest.mark.parametrize(("url", "reason"), ELSEWHERE, ids=[u for u, _ in ELSEWHERE])
def test_refused_without_a_connection_attempt_elsewhere(
    make: Callable[..., HttpAction], connects: list[Any], url: str, reason: str
) -> None:
    with pytest.raises(Fail, match=rf"refusing to connect to \S+( at \S+)? \({reason}\)"):
        call(make(), url=url)
    assert connects == []


def test_the_listener_counts_a_connection_that_is_let_through(
    make: Callable[..., HttpAction], listener: CountingListener
) -> None:
    with pytest.raises(Retry):  # the listener closes without answering
        call(make(allow_hosts=["127.0.0.1"]), url=f"http://127.0.0.1:{listener.port}/")
    assert listener.count() == 1


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.1:{port}/", LOOPBACK),
        ("http://2130706433:{port}/", LOOPBACK),
        ("http://[::ffff:127.0.0.1]:{port}/", LOOPBACK),
        ("http://LOCALHOST:{port}/", LOOPBACK),
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://0xa9fea9fe/", "a cloud metadata address"),
    ],
)
def test_a_redirect_to_a_refused_address_is_refused_without_connecting(
    make: Callable[..., HttpAction], listener: CountingListener, location: str, reason: str
) -> None:
    # The first hop is to an allowed host (the test server, by the name allow_hosts names).
    server = HTTPServer(host="127.0.0.1")
    server.start()
    try:
        server.expect_request("/hop").respond_with_response(
            Response("", status=302, headers={"Location": location.format(port=listener.port)})
        )
        with pytest.raises(Fail, match=rf"refusing to connect to \S+( at \S+)? \({reason}\)"):
            call(
                make(allow_hosts=[f"127.0.0.1:{server.port}"]),
                url=f"http://127.0.0.1:{server.port}/hop",
                follow_redirects=True,
            )
        assert len(server.log) == 1
    finally:
        server.stop()
    assert listener.count() == 0


def test_a_name_resolving_to_public_and_private_addresses_connects_only_to_an_allowed_one(
    monkeypatch: pytest.MonkeyPatch, make: Callable[..., HttpAction], connects: list[Any]
) -> None:
    # A DNS answer with a private address first and a public one after (rebinding): the
    # private one is skipped; the public one is tried (and, here, cannot be reached).
    import socket

    def resolve(host: str, port: int, *args: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(Exception) as caught:
        call(make(), url="http://rebind.example:9/", timeout=0.2)
    assert "refusing" not in str(caught.value)
    assert [address[0] for address in connects] == ["1.1.1.1"]
