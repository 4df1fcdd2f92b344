"""engine/hover/callback.py: ``GET /hover/callback`` finishes a login that ``hookwise hover
login`` started, in the daemon (a real process) against the fake Hover's authorize page, and
the command notices; bad, expired or reused states and refused codes get a 4xx page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from engine.hover.callback import Callback, Outcome, page
from engine.hover.client import HoverClient
from engine.rules.loader import load
from engine.store import Store, open_store

from .fakehover import CLIENT_ID, CLIENT_SECRET, FakeHover
from .support import DaemonProcess, free_port, post


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """One request, redirects not followed: status, headers (lower-case names), body."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.build_opener(NoRedirect()).open(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()


def write_config(root: Path, hover_url: str, port: int) -> Path:
    config = root / "hookwise.yaml"
    config.write_text(
        "store: sqlite:///data/hookwise.db\nrules: []\n"
        "defaults: {retry: {attempts: 3, backoff: 100ms, max_backoff: 200ms}}\n"
        f"hover: {{base_url: '{hover_url}', client_id: {CLIENT_ID}, client_secret: '${{HOVER_CLIENT_SECRET}}', "
        f"redirect_uri: 'http://127.0.0.1:{port}/hover/callback'}}\n"
        "sources:\n  hover: {preset: hover, token: url-t0ken}\n"
    )
    return config


ENV = {"HOVER_CLIENT_SECRET": CLIENT_SECRET}


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def hover(port: int) -> Iterator[FakeHover]:
    with FakeHover(redirect_uri=f"http://127.0.0.1:{port}/hover/callback") as fake:
        yield fake


@pytest.fixture
def daemon(tmp_path: Path, hover: FakeHover, port: int) -> Iterator[DaemonProcess]:
    d = DaemonProcess(write_config(tmp_path, hover.url, port), port, env=ENV)
    d.wait_ready()
    yield d
    assert d.stop() == 0, d.output()


class LoginCommand:
    """``hookwise hover login`` as a process, its standard input left open (nothing pasted)."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "hover", "login", "-c", str(config)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV}, cwd=config.parent,
        )
        self.lines: list[str] = []
        self._url = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("  http"):
                self._url.set()

    def authorize_url(self) -> str:
        assert self._url.wait(30), self.lines
        return next(line.strip() for line in self.lines if line.startswith("  http"))

    def wait(self) -> tuple[int, str, str]:
        code = self.proc.wait(30)
        self._reader.join(10)  # it has read the rest once the pipe closed
        assert self.proc.stderr is not None
        return code, "".join(self.lines), self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def stored_tokens(root: Path) -> Any:
    store = open_store(f"sqlite:///{root / 'data' / 'hookwise.db'}")
    try:
        return store.hover_tokens()
    finally:
        store.close()


def test_the_browser_flow_connects_the_account_and_the_login_command_notices(
    tmp_path: Path, hover: FakeHover, daemon: DaemonProcess,
) -> None:
    # A handshake arrives before the login: it waits, and the browser's login wakes it.
    webhook_id, code = hover.add_webhook(f"{daemon.url}/hooks/hover?token=url-t0ken")
    event = {"event": "webhook-verification-code", "webhook_id": webhook_id, "code": code}
    assert post(f"{daemon.url}/hooks/hover?token=url-t0ken", json.dumps(event))[0] == 202

    login = LoginCommand(daemon.config)
    try:
        authorize = login.authorize_url()
        status, headers, _ = get(authorize)  # the person clicks "Allow"
        assert status == 302 and headers["location"].startswith(f"{daemon.url}/hover/callback?")
        back = headers["location"]
        sent = parse_qs(urlsplit(back).query)
        assert sent["state"] == parse_qs(urlsplit(authorize).query)["state"]

        assert get(back, method="HEAD")[0] == 200  # a link checker's look uses nothing up
        status, headers, body = get(back)

        assert status == 200 and "<h1>Hover account connected</h1>" in body, body
        assert headers["cache-control"] == "no-store" and headers["referrer-policy"] == "no-referrer"
        assert headers["content-type"].startswith("text/html")
        exit_code, out, err = login.wait()
    finally:
        login.close()
    assert exit_code == 0, out + err
    assert "logged in through the browser; the access token expires at 20" in out
    tokens = stored_tokens(tmp_path)
    assert tokens is not None and hover.access_token_valid(tokens.access_token)
    for secret in (sent["code"][0], sent["state"][0], tokens.access_token, tokens.refresh_token):
        assert secret not in body and secret not in daemon.output()

    # The waiting handshake ran at once, not ten minutes later.
    deadline = time.time() + 20
    while time.time() < deadline and not hover.webhooks[webhook_id]["verified_at"]:
        time.sleep(0.05)
    assert hover.webhooks[webhook_id]["verified_at"]

    # The same link again: the state was used; nothing reaches Hover.
    grants = len(hover.grants)
    status, _, body = get(back)
    assert status == 400 and "This login link is not valid" in body and sent["code"][0] not in body
    assert len(hover.grants) == grants and hover.invalid_grants == 0


def test_a_pasted_redirect_url_still_works_and_uses_the_state_up(
    tmp_path: Path, hover: FakeHover, daemon: DaemonProcess,
) -> None:
    login = LoginCommand(daemon.config)
    try:
        state = parse_qs(urlsplit(login.authorize_url()).query)["state"][0]
        back = f"{daemon.url}/hover/callback?{urlencode({'code': hover.authorize(), 'state': state})}"
        assert login.proc.stdin is not None
        login.proc.stdin.write(f"\n{back}\n")  # an empty line first: still waiting for the code
        login.proc.stdin.flush()
        exit_code, out, err = login.wait()
    finally:
        login.close()
    assert exit_code == 0, out + err
    assert "Paste the code from the redirect URL (or the whole URL): logged in; the access token expires at 20" in out
    assert stored_tokens(tmp_path) is not None
    status, _, body = get(back)  # the browser's return, late: the state is used
    assert status == 400 and "This login link is not valid" in body


def test_links_hookwise_did_not_issue_are_refused(tmp_path: Path, hover: FakeHover, daemon: DaemonProcess) -> None:
    code = hover.authorize()
    for query, expected in [
        ({"code": code}, "No login to finish"),
        ({"code": code, "state": ""}, "No login to finish"),
        ({"code": code, "state": "made-by-someone-else"}, "This login link is not valid"),
        ({}, "No login to finish"),
    ]:
        status, _, body = get(f"{daemon.url}/hover/callback?{urlencode(query)}")
        assert status == 400 and expected in body and code not in body, (query, body)
    assert hover.grants == [] and stored_tokens(tmp_path) is None
    assert get(f"{daemon.url}/hover/callback", method="POST")[0] == 405
    assert code in hover.codes  # never tried: still good


def test_a_denied_login_ends_the_command_with_the_reason(hover: FakeHover, daemon: DaemonProcess) -> None:
    hover.deny = True
    login = LoginCommand(daemon.config)
    try:
        status, headers, _ = get(login.authorize_url())
        status, _, body = get(headers["location"])
        assert status == 400 and "Hover did not grant access" in body and "(access_denied)" in body
        exit_code, _, err = login.wait()
    finally:
        login.close()
    assert exit_code == 1 and err.strip() == "error: hover: access was not granted (access_denied)"


# --- Callback.finish in the process: the outcomes that need a state set up by hand ------------


@pytest.fixture
def world(
    tmp_path: Path, hover: FakeHover, port: int, monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Callback, Store]]:
    monkeypatch.setenv("HOVER_CLIENT_SECRET", CLIENT_SECRET)
    loaded = load(write_config(tmp_path, hover.url, port))
    store = open_store(loaded.config.store_url())
    yield Callback(lambda: loaded, store), store
    store.close()


def test_an_expired_state_is_refused(world: tuple[Callback, Store], hover: FakeHover) -> None:
    callback, store = world
    store.begin_hover_login("s-old", 0.05)
    time.sleep(0.1)
    assert callback.finish({"state": "s-old", "code": hover.authorize()}).status == 400
    assert hover.grants == []


def test_a_refused_code_is_a_400_that_names_hovers_error_only(world: tuple[Callback, Store], hover: FakeHover) -> None:
    callback, store = world
    store.begin_hover_login("s-1", 600)
    outcome = callback.finish({"state": "s-1", "code": "<script>alert(1)</script>"})
    assert outcome.status == 400 and outcome.title == "Hover refused the login"
    assert "invalid_grant" in outcome.text and "script" not in outcome.text and CLIENT_SECRET not in outcome.text
    assert store.hover_login("s-1") == {"status": "failed", "error": outcome.text, "expired": False}


def test_an_unreachable_hover_is_a_502(tmp_path: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOVER_CLIENT_SECRET", CLIENT_SECRET)
    loaded = load(write_config(tmp_path, f"http://127.0.0.1:{free_port()}", port))
    store = open_store(loaded.config.store_url())
    try:
        store.begin_hover_login("s-1", 600)
        outcome = Callback(lambda: loaded, store).finish({"state": "s-1", "code": "c"})
        assert outcome.status == 502 and "cannot connect" in outcome.text
        assert store.hover_login("s-1")["status"] == "failed"  # type: ignore[index]
    finally:
        store.close()


def test_the_page_escapes_what_it_shows() -> None:
    response = page(Outcome(400, "<b>t</b>", 'a "<script>" & b'))
    body = bytes(response.body).decode()
    assert "<b>" not in body and "<script>" not in body
    assert "&lt;b&gt;t&lt;/b&gt;" in body and "a &quot;&lt;script&gt;&quot; &amp; b" in body
    assert response.status_code == 400 and response.headers["content-security-policy"] == "default-src 'none'"


def test_a_login_through_the_client_works_with_the_state_it_was_given(
    world: tuple[Callback, Store], hover: FakeHover,
) -> None:
    callback, store = world
    client = HoverClient(callback.current().config.settings.hover, store)
    store.begin_hover_login("s-2", 600)
    _, headers, _ = get(client.tokens.authorize_url("s-2"))
    query = {k: v[0] for k, v in parse_qs(urlsplit(headers["location"]).query).items()}
    assert callback.finish(query).status == 200
    assert store.hover_login("s-2") == {"status": "done", "error": None, "expired": False}
    assert store.hover_tokens() is not None
