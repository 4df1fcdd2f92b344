"""engine/ui/auth.py: session cookies, their expiry and sign-out, CSRF tokens; and the UI's
loopback rule without api.token, through the real app (an ASGI call with a remote client
address, as uvicorn makes it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.receive.server import Health, create_app
from engine.rules.loader import Current, load
from engine.store import open_store
from engine.ui.auth import HEADERS, SESSION_TTL, Sessions


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sessions(token: str | None = "s3cret-token", clock: Callable[[], float] | None = None) -> Sessions:
    return Sessions(lambda: token, clock or Clock())


def test_a_session_cookie_reads_back_until_it_expires() -> None:
    clock = Clock()
    s = sessions(clock=clock)
    session = s.new(signed_in=True)
    cookie = s.encode(session)
    assert s.decode(cookie) == session and s.max_age(session) == SESSION_TTL
    clock.now += SESSION_TTL - 1
    assert s.decode(cookie) == session
    clock.now += 1
    assert s.decode(cookie) is None


def test_a_forged_or_altered_cookie_is_no_session() -> None:
    s = sessions()
    cookie = s.encode(s.new(signed_in=False))
    session_id, expires, signed_in, mac = cookie.split(".")
    assert s.decode(f"{session_id}.{expires}.1.{mac}") is None  # promoted to signed in
    assert s.decode(f"{session_id}.{int(expires) + 3600}.{signed_in}.{mac}") is None  # made to last longer
    assert s.decode(sessions(token="another-token").encode(s.new(signed_in=True))) is None
    for junk in ("", "x", "a.b.c", "a.b.c.d.e", f"{session_id}.never.0.{mac}"):
        assert s.decode(junk) is None


def test_changing_the_token_ends_every_session_and_processes_sharing_it_agree() -> None:
    token = ["first-token"]
    mine = Sessions(lambda: token[0], Clock())
    cookie = mine.encode(mine.new(signed_in=True))
    assert Sessions(lambda: "first-token", Clock()).decode(cookie) is not None  # another receiver
    token[0] = "second-token"
    assert mine.decode(cookie) is None


def test_sign_out_revokes_the_session() -> None:
    s = sessions()
    session = s.new(signed_in=True)
    s.revoke(session)
    assert s.decode(s.encode(session)) is None
    assert s.decode(s.encode(s.new(signed_in=True))) is not None


def test_csrf_tokens_belong_to_their_session() -> None:
    s = sessions()
    one, two = s.new(), s.new()
    assert s.check_csrf(one, s.csrf(one))
    assert not s.check_csrf(one, s.csrf(two)) and not s.check_csrf(one, None) and not s.check_csrf(one, "")


def test_the_token_is_checked_and_none_is_needed_without_one() -> None:
    s = sessions()
    assert s.required and s.check_token("s3cret-token") and not s.check_token("s3cret-toke") and not s.check_token("")
    open_ = sessions(token=None)
    assert not open_.required and not open_.check_token("")
    # Without a token the key is this process's own: another process's cookies mean nothing.
    assert open_.decode(sessions(token=None).encode(open_.new())) is None


def call(
    app: Any, path: str, client: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, from ``client``, with ``headers`` besides Host."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"hooks.example.com"), *(headers or [])],
        "client": (client, 50000),
        "server": ("192.0.2.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_without_a_token_only_loopback_clients_are_served(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("store: sqlite:///store.db\nrules: []\nsources: {}\n")
    current = Current(load(tmp_path / "config.yaml"))
    store = open_store(current().config.store_url())
    try:
        app = create_app(current, None, Health(), store)
        status, headers, body = call(app, "/ui/events", "203.0.113.9")
        assert (
            status == 403
            and b"Loopback only" in body
            and headers["content-security-policy"] == HEADERS["Content-Security-Policy"]
        )
        assert "set-cookie" not in headers
        status, headers, body = call(app, "/ui/events", "127.0.0.1")
        assert status == 200 and b"<h1>Events</h1>" in body and "HttpOnly" in headers["set-cookie"]
        status, headers, _ = call(app, "/ui/static/ui.css", "127.0.0.1")
        assert (
            status == 200
            and headers["content-type"].startswith("text/css")
            and headers["x-content-type-options"] == "nosniff"
        )
    finally:
        store.close()


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]], ids=["no trusted proxy", "a trusted proxy on loopback"])
def test_the_loopback_rule_believes_forwarding_headers_only_from_trusted_proxies(
    tmp_path: Path, trusted: list[str]
) -> None:
    # The same decision as the API's: a reverse proxy on this machine must not open the UI
    # to everyone it serves, and a header from an untrusted peer is not believed.
    config = f"server: {{trusted_proxies: {trusted}}}\nstore: sqlite:///store.db\nrules: []\nsources: {{}}\n"
    (tmp_path / "config.yaml").write_text(config)
    current = Current(load(tmp_path / "config.yaml"))
    store = open_store(current().config.store_url())
    try:
        app = create_app(current, None, Health(), store)
        assert call(app, "/ui/events", "127.0.0.1")[0] == 200
        assert call(app, "/ui/events", "127.0.0.1", [(b"x-forwarded-for", b"203.0.113.9")])[0] == 403
        assert call(app, "/ui/events", "127.0.0.1", [(b"forwarded", b"for=203.0.113.9")])[0] == 403
        assert call(app, "/ui/events", "203.0.113.9", [(b"x-forwarded-for", b"127.0.0.1")])[0] == 403
        # Forwarded from loopback: local only when a trusted proxy says so.
        status = call(app, "/ui/events", "127.0.0.1", [(b"x-forwarded-for", b"127.0.0.1")])[0]
        assert status == (200 if trusted else 403)
    finally:
        store.close()
