"""``GET /hover/callback``: where Hover's authorize page sends the browser back (SPEC 9, 13).

The OAuth ``state`` must be one that hookwise issued (``hookwise hover login`` keeps it in
the store), recently (:data:`~engine.hover.tokens.LOGIN_TTL`), and it is used once: a link that
someone else made — login CSRF, which would connect their Hover account to this hookwise —
is refused. The code is exchanged for tokens, which go to the store; the page says that the
account is connected, or what went wrong: 400 for a state or a code that is no good (or
access Hover did not grant), 502 when Hover cannot be reached, 503 when the store cannot.
The outcome is noted with the state, so the ``hookwise hover login`` that issued it ends by
itself. The page is plain, escaped HTML; it never shows the code, the state or a token, and
the log does not either.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..errors import Fail, Retry, StoreError
from ..ops.api_models import HoverCallbackQuery
from ..ops.openapi import Answer, Described, Operation
from ..rules.loader import Loaded
from ..store import HoverStore
from .client import HoverClient

log = logging.getLogger("hookwise.hover")

PATH = "/hover/callback"

#: An OAuth error code (RFC 6749 4.1.2.1) is shown; any other text from the query is not.
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")

#: No cache may keep the page, and no other site learns its address (it held the code).
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}

_AGAIN = "Start again with `hookwise hover login`, or with Connect on the Hover page of /ui."


@dataclass(frozen=True)
class Outcome:
    """What the page says: its status, a title and one paragraph (plain text)."""

    status: int
    title: str
    text: str


CONNECTED = Outcome(200, "Hover account connected",
                    "hookwise can now call the Hover API for this account. You can close this page.")
NO_LOGIN = Outcome(
    400, "No login to finish",
    f"This address finishes a Hover login that hookwise started, and this request carries none. {_AGAIN}",
)
BAD_STATE = Outcome(400, "This login link is not valid",
                    f"It has expired, it was used already, or it was not made by this hookwise. {_AGAIN}")
NO_STORE = Outcome(503, "hookwise cannot finish the login now",
                   f"Its store cannot be reached. {_AGAIN}")


_PAGE = "text/html"
OPERATION = Operation(
    "GET", "Where Hover's authorize page sends the browser back: the login finishes (a page for people)",
    {
        200: Answer("the account is connected", media_type=_PAGE),
        400: Answer("no login state, or one not issued here, expired or used; or access not granted", media_type=_PAGE),
        502: Answer("Hover cannot be reached", media_type=_PAGE),
        503: Answer("the store cannot be reached", media_type=_PAGE),
    },
    query=HoverCallbackQuery, secured=False,
)


def callback_routes(current: Callable[[], Loaded], store: HoverStore) -> list[Route]:
    """The route of :data:`PATH`; open to any client (the state is the check)."""
    return [Described(PATH, Callback(current, store).handle, OPERATION)]


class Callback:
    """The endpoint: one login finished per state."""

    def __init__(self, current: Callable[[], Loaded], store: HoverStore) -> None:
        self.current, self.store = current, store

    async def handle(self, request: Request) -> Response:
        if request.method != "GET":  # a HEAD (a link checker) must not use the state up
            return Response(status_code=200, headers=_HEADERS)
        return page(await run_in_threadpool(self.finish, dict(request.query_params)))

    def finish(self, query: dict[str, str]) -> Outcome:
        state = query.get("state")
        if not state:
            return NO_LOGIN
        try:
            account = self.store.take_hover_login(state)
            if account is None:
                log.warning("hover: %s was opened with a login state that is unknown, expired or used", PATH)
                return BAD_STATE
            outcome, error = self._exchange(account, query)
            self.store.finish_hover_login(state, error)
        except StoreError as exc:
            log.error("hover: %s: %s", PATH, exc)
            return NO_STORE
        return outcome

    def _exchange(self, account: str, query: dict[str, str]) -> tuple[Outcome, str | None]:
        """The page, and the error to note with the state (None: connected)."""
        if query.get("error") or not query.get("code"):
            given = query.get("error", "")
            code = f" ({given})" if _ERROR_CODE.fullmatch(given) else ""
            error = f"hover: access was not granted{code}"
            log.warning("%s (through %s)", error, PATH)
            text = f"Hover sent the browser back without an authorization{code}. {_AGAIN}"
            return Outcome(400, "Hover did not grant access", text), error
        loaded = self.current()
        client = HoverClient(loaded.config.settings.hover, self.store, account=account)
        try:
            client.tokens.exchange_code(query["code"])
        except Fail as exc:
            error = loaded.masker.mask(str(exc))
            log.warning("%s (through %s)", error, PATH)
            return Outcome(400, "Hover refused the login", error), error
        except Retry as exc:
            error = loaded.masker.mask(str(exc))
            log.warning("%s (through %s)", error, PATH)
            return Outcome(502, "Hover could not be reached", f"{error}. {_AGAIN}"), error
        finally:
            client.close()  # made for this login alone
        log.info("hover: the account is connected (through %s)", PATH)
        return CONNECTED, None


def page(outcome: Outcome) -> HTMLResponse:
    """A plain HTML page: a title and a paragraph, both escaped."""
    title, text = html.escape(outcome.title), html.escape(outcome.text)
    body = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n<meta name="robots" content="noindex">\n'
        f"<title>hookwise: {title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<p>{text}</p>\n</body>\n</html>\n"
    )
    return HTMLResponse(body, status_code=outcome.status, headers=_HEADERS)
