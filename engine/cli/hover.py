"""``hookwise hover``: log in to the Hover account and set up its webhooks (SPEC 9).

Registered on the ``hookwise`` group by :mod:`engine.cli`. Failures are raised as
:class:`~engine.errors.HookwiseError` (a usage problem as :class:`UsageError`) so that the
CLI's one error handler prints them as one line with its exit code. The commands read only
the config file (not the rules): a broken rule file must not stop a login.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from ..errors import Fail, HookwiseError, Retry, UsageError
from .base import config_option

#: How long each Hover call of a command may take.
TIMEOUT = 30.0
#: Seconds between two looks at the store while a login waits for the browser.
POLL = 0.25
_COLUMNS = ("id", "url", "verified_at", "verify_method", "last_error")


@click.group("hover")
def hover_group() -> None:
    """Hover account and webhook setup."""


@hover_group.command()
@config_option
@click.option(
    "--code", metavar="CODE", help="The authorization code (or the whole redirect URL); asked for when not given."
)
def login(config_path: str | None, code: str | None) -> None:
    """Log in to Hover (OAuth2): open the printed URL and allow access. With hookwise
    serving hover.redirect_uri that is all; else paste the code (or the redirect URL)."""
    from ..hover.tokens import LOGIN_TTL, iso, missing_settings

    with _client(config_path) as client:
        missing = missing_settings(client.settings, "client_id", "client_secret", "redirect_uri")
        if missing:
            raise UsageError(f"hover login needs {', '.join('hover.' + k for k in missing)} in the config")
        state, url = client.tokens.start_login(LOGIN_TTL)
        attempt = _Login(client, state, time.monotonic() + LOGIN_TTL + 2 * TIMEOUT)
        click.echo(f"Open this URL, log in to Hover and allow access:\n\n  {url}\n")
        if code is None:
            click.echo(f"When Hover sends the browser back to {client.settings.redirect_uri} and hookwise serves it, "
                       "this command notices; else paste what the browser shows.")
        tokens, how = attempt.finish(code)
    click.echo(f"logged in{how}; the access token expires at {iso(tokens.expires_at)} and is refreshed automatically")


@dataclass(frozen=True)
class _Login:
    """One login this command started: its OAuth ``state`` (kept in the store, where
    /hover/callback takes it) and when the command stops waiting for it."""

    client: Any
    state: str
    deadline: float  #: time.monotonic()

    def finish(self, code: str | None) -> tuple[Any, str]:
        """The tokens, and how the login ended: with ``code`` (given, or pasted while
        waiting), or through the browser's return to /hover/callback, whichever comes first."""
        if code is not None:
            return self.pasted(code), ""
        pasted = _read_pasted()
        while True:
            tokens = self.browser_outcome()
            if tokens is not None:
                return tokens, " through the browser"
            try:
                text = pasted.get(timeout=POLL)
            except queue.Empty:
                continue
            if text is not None:
                return self.pasted(text), ""

    def pasted(self, text: str) -> Any:
        """Exchange a pasted code, unless the browser's return took the state first: then
        its outcome counts."""
        code = _code_from(text, self.state)
        store = self.client.store
        if store.take_hover_login(self.state) is None:
            while (tokens := self.browser_outcome()) is None:
                time.sleep(POLL)
            return tokens
        try:
            tokens = _hover(lambda: self.client.tokens.exchange_code(code))
        except HookwiseError as exc:
            store.finish_hover_login(self.state, str(exc))
            raise
        store.finish_hover_login(self.state)
        return tokens

    def browser_outcome(self) -> Any:
        """The tokens once /hover/callback connected the account with this state; None
        while it is open; an error when that login failed or expired (or was taken by a
        process that has not finished it long after)."""
        login = self.client.store.hover_login(self.state)
        if login is None or (login["status"] == "pending" and login["expired"]) or time.monotonic() > self.deadline:
            raise HookwiseError("the login expired: run `hookwise hover login` again")
        if login["status"] == "failed":
            raise HookwiseError(str(login["error"]))
        if login["status"] != "done":
            return None
        tokens = self.client.store.hover_tokens(self.client.account)
        if tokens is None:
            raise HookwiseError("hover: the login finished but no tokens are stored: run `hookwise hover login` again")
        return tokens


def _read_pasted() -> queue.Queue[str | None]:
    """The first line pasted on standard input, read in a thread while the command watches
    the store (None once the input ends without one)."""
    lines: queue.Queue[str | None] = queue.Queue()
    click.echo("Paste the code from the redirect URL (or the whole URL): ", nl=False)
    threading.Thread(target=_read_line, args=(lines,), name="hookwise-login-paste", daemon=True).start()
    return lines


def _read_line(lines: queue.Queue[str | None]) -> None:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # a stream in memory: reading it never waits
        lines.put(next((line.strip() for line in sys.stdin if line.strip()), None))
        return
    pending = b""
    while True:
        # os.read, not sys.stdin: a thread left waiting in it holds no lock of the
        # interpreter's, so the command can end while nothing was pasted.
        data = os.read(fd, 4096)
        pending += data
        *complete, pending = pending.split(b"\n")
        pasted = next((c.decode(errors="replace").strip() for c in complete if c.strip()), None)
        if pasted or not data:
            lines.put(pasted or (pending.decode(errors="replace").strip() or None))
            return


@hover_group.command()
@config_option
@click.argument("url")
@click.option("--source", metavar="S", help="The hookwise source URL belongs to (recorded with the webhook).")
def register(config_path: str | None, url: str, source: str | None) -> None:
    """Register URL as a webhook of the Hover account; prints its id and hmac_secret."""
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"URL must start with https:// (got {url!r})")
    with _client(config_path) as client:
        hook = _hover(lambda: client.register_webhook(url, source=source, timeout=TIMEOUT))
    click.echo(f"webhook {hook['id']} registered for {hook.get('url') or url}")
    if hook.get("hmac_secret"):
        click.echo(f"hmac_secret: {hook['hmac_secret']}")
        click.echo(
            "  hookwise shows it only here: keep it in an environment variable and give it to the source,\n"
            f"  e.g. sources: {{{source or 'hover'}: {{preset: hover, hmac_secret: \"${{HOVER_HMAC_SECRET}}\"}}}}"
        )
    click.echo(
        "Hover now posts a webhook-verification-code event to the URL; a running hookwise verifies it.\n"
        f"Without one: hookwise hover verify CODE --webhook-id {hook['id']}"
    )


@hover_group.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def webhooks(config_path: str | None, as_json: bool) -> None:
    """List the account's webhooks with verified_at and last_error."""
    with _client(config_path) as client:
        rows = _hover(lambda: client.list_webhooks(timeout=TIMEOUT))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no webhooks: register one with `hookwise hover register URL`")
    else:
        click.echo(_table(rows))


@hover_group.command()
@config_option
@click.argument("code")
@click.option("--webhook-id", metavar="ID", help="The webhook the code belongs to, to record it as verified.")
def verify(config_path: str | None, code: str, webhook_id: str | None) -> None:
    """Verify a webhook with the code Hover posted to it."""
    with _client(config_path) as client:
        _hover(lambda: client.verify_webhook(code, webhook_id, timeout=TIMEOUT))
    click.echo(f"webhook {webhook_id} verified" if webhook_id else "webhook verified")


@contextmanager
def _client(config_path: str | None) -> Iterator[Any]:
    from ..hover.client import HoverClient
    from ..rules.config import find_config, load_config
    from ..store import open_store

    config = load_config(find_config(config_path))
    store = open_store(config.store_url())
    client = HoverClient(config.settings.hover, store)
    try:
        yield client
    finally:
        client.close()
        store.close()


def _hover(call: Callable[[], Any]) -> Any:
    """``call()``, with the client's Fail and Retry turned into errors the CLI reports."""
    try:
        return call()
    except Fail as exc:
        raise HookwiseError(str(exc)) from None
    except Retry as exc:
        later = f"; try again in {exc.after:g}s" if exc.after else "; try again later"
        raise HookwiseError(f"{exc}{later}") from None


def _code_from(text: str, state: str) -> str:
    """The code itself, or the ``code`` of a pasted redirect URL (whose ``state``, when it
    has one, must be this login's)."""
    text = text.strip()
    if "code=" not in text:
        if not text:
            raise UsageError("no authorization code given")
        return text
    query = parse_qs(urlsplit(text).query or text.partition("?")[2] or text)
    if query.get("state", [state])[0] != state:
        raise UsageError(
            "the pasted URL belongs to another login attempt (its state differs): use the URL printed above"
        )
    codes = query.get("code")
    if not codes or not codes[0]:
        raise UsageError("the pasted URL has no code")
    return codes[0]


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[str(row.get(c) if row.get(c) is not None else "-") for c in _COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(_COLUMNS)]
    lines = [_COLUMNS, *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)
