"""Forwarding headers are believed only from server.trusted_proxies (SPEC 4): the client
behind a request, and allow_ips (the API's loopback rule is in test_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.receive.proxies import Proxies

from .support import post
from .test_receiver import CONFIG, Served

LOCAL = ["127.0.0.1"]
CHAIN = ["127.0.0.1", "10.0.0.0/8"]
XFF, FWD = "x-forwarded-for", "forwarded"

CLIENTS = [
    # (name, trusted, peer, headers, client)
    ("no proxy is trusted", [], "127.0.0.1", [(XFF, "203.0.113.9")], "127.0.0.1"),
    ("an untrusted peer's header", ["10.0.0.0/8"], "127.0.0.1", [(FWD, "for=203.0.113.9")], "127.0.0.1"),
    ("no header from a trusted proxy", LOCAL, "127.0.0.1", [], "127.0.0.1"),
    ("x-forwarded-for", LOCAL, "127.0.0.1", [(XFF, "203.0.113.9")], "203.0.113.9"),
    ("a chain of trusted proxies", CHAIN, "127.0.0.1", [(XFF, "203.0.113.9, 10.1.2.3")], "203.0.113.9"),
    ("a forged entry left of the real client", LOCAL, "127.0.0.1", [(XFF, "127.0.0.1, 203.0.113.9")], "203.0.113.9"),
    ("every hop trusted", CHAIN, "127.0.0.1", [(XFF, "10.0.0.1, 10.0.0.2")], "10.0.0.1"),
    ("two header lines, in order", CHAIN, "127.0.0.1", [(XFF, "203.0.113.9"), (XFF, "10.0.0.2")], "203.0.113.9"),
    ("an address with a port", LOCAL, "127.0.0.1", [(XFF, "203.0.113.9:4711")], "203.0.113.9"),
    ("not an address", LOCAL, "127.0.0.1", [(XFF, "somewhere")], None),
    ("forwarded", LOCAL, "127.0.0.1", [(FWD, 'for=203.0.113.9;proto=https;by="[::1]"')], "203.0.113.9"),
    ("forwarded IPv6 with a port", LOCAL, "127.0.0.1", [(FWD, 'For="[2001:db8::17]:4711"')], "2001:db8::17"),
    ("forwarded chain", CHAIN, "127.0.0.1", [(FWD, "for=203.0.113.9, for=10.0.0.3")], "203.0.113.9"),
    ("forwarded unknown", LOCAL, "127.0.0.1", [(FWD, "for=unknown")], None),
    ("forwarded without for", LOCAL, "127.0.0.1", [(FWD, "proto=https")], None),
    ("both headers agree", LOCAL, "127.0.0.1", [(FWD, "for=203.0.113.9"), (XFF, "203.0.113.9")], "203.0.113.9"),
    ("both headers disagree", LOCAL, "127.0.0.1", [(FWD, "for=127.0.0.2"), (XFF, "203.0.113.9")], None),
    ("a dual-stack peer", LOCAL, "::ffff:127.0.0.1", [(XFF, "203.0.113.9")], "203.0.113.9"),
    ("an IPv6 network", ["::1/128"], "::1", [(XFF, "2001:db8::1")], "2001:db8::1"),
]


@pytest.mark.parametrize(("name", "trusted", "peer", "headers", "client"), CLIENTS, ids=[c[0] for c in CLIENTS])
def test_the_client_behind_a_request(
    name: str, trusted: list[str], peer: str, headers: list[tuple[str, str]], client: str | None,
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    assert Proxies(trusted).client(peer, raw) == client


TRUSTING = CONFIG.replace("server: {max_body: 2KiB}", "server: {max_body: 2KiB, trusted_proxies: [127.0.0.1]}")


@pytest.fixture(params=["untrusted", "trusted"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, config=CONFIG if request.param == "untrusted" else TRUSTING)
    yield s
    s.close()


def test_allow_ips_believes_forwarding_headers_only_from_trusted_proxies(served: Served) -> None:
    url = served.url("/hooks/office?token=t0ken-x")
    inside = {"X-Forwarded-For": "203.0.113.9"}  # office allows 203.0.113.0/24
    expected = 202 if _trusts_loopback(served) else 403
    assert post(url, '{"n": 1}', inside)[0] == expected
    assert post(url, '{"n": 2}', {"Forwarded": "for=203.0.113.10"})[0] == expected
    assert post(url, '{"n": 3}', {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})[0] == 403  # the last hop is outside
    assert post(url, '{"n": 4}', {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=198.51.100.7"})[0] == 403
    assert post(url, '{"n": 5}')[0] == 403  # loopback itself is not in allow_ips


def _trusts_loopback(served: Served) -> bool:
    return bool(served.loaded.config.settings.server.trusted_proxies)
