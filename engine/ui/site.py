"""What every UI page shares: the request with its session and form (:class:`Page`), the
guard in front of each handler (access, sign-in, CSRF, errors as pages, the security
headers), the templates and the static files."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import StoreError, UsageError
from ..receive.proxies import from_loopback
from ..rules.loader import Loaded
from .auth import COOKIE, HEADERS, Session, Sessions
from .forms import Form

log = logging.getLogger("hookwise.ui")

#: Every method reaches a page's endpoint, so that a wrong one gets the UI's own 405 page.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: The static files: name -> media type.
STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8", "icon.svg": "image/svg+xml"}


class Refused(Exception):
    """A request answered with an error page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


@dataclass
class Page:
    """One request to the UI, with its session (new when the browser had none) and, for a
    POST, its form (already checked for its CSRF token)."""

    request: Request
    session: Session
    loaded: Loaded
    form: Form = field(default_factory=lambda: Form([]))
    #: the cookie to send: a new session, a signed-in one, or None to leave it
    send_session: Session | None = None
    signing_out: bool = False

    def query(self, name: str) -> str | None:
        """A query parameter; None when absent or blank."""
        value = self.request.query_params.get(name, "").strip()
        return value or None

    def sign_in(self, session: Session) -> None:
        self.session = self.send_session = session


Handler = Callable[[Page], Awaitable[Response]]


def path(*parts: str) -> str:
    """A UI address with each part encoded as one path segment: ``path("events", id)``."""
    return "/ui" + "".join("/" + quote(p, safe="") for p in parts)


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


class Site:
    """Templates, static files and the guard of every page."""

    def __init__(self, current: Callable[[], Loaded], sessions: Sessions) -> None:
        self.current = current
        self.sessions = sessions
        self.env = Environment(
            loader=PackageLoader("engine.ui", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when, pretty=pretty, duration=duration, short=short)
        self.env.globals.update(path=path, static=self.static_url, query=query_string)
        self.static = {name: files("engine.ui").joinpath("static", name).read_bytes() for name in STATIC}
        self.versions = {name: hashlib.sha256(data).hexdigest()[:12] for name, data in self.static.items()}

    def static_url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.versions[name]}"

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return self.bare_error(404, "Not found", "There is no such file.")
        headers = {**HEADERS, "Cache-Control": "public, max-age=86400"}
        return Response(self.static[name], media_type=STATIC[name], headers=headers)

    # --- rendering ------------------------------------------------------------------------

    def render(self, page: Page | None, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(
            page=page,
            csrf=self.sessions.csrf(page.session) if page else "",
            signing=self.sessions.required,
            signed_in=bool(page and page.session.signed_in),
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers={**HEADERS, "Cache-Control": "no-store"})

    def error(self, page: Page | None, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(page, "error.html", status, title=title, message=message)

    def bare_error(self, status: int, title: str, message: str) -> HTMLResponse:
        """An error page for a request that gets no session (a refused client)."""
        return self.error(None, status, title, message)

    # --- the guard ------------------------------------------------------------------------

    def page(
        self, address: str, get: Handler | None = None, post: Handler | None = None, *, public: bool = False
    ) -> Route:
        """The route of one address: ``get`` answers GET and HEAD, ``post`` POST (after its
        CSRF token is checked), any other method gets a 405 page; ``public`` pages (sign-in)
        need no signed-in session."""
        return Route(address, self._endpoint(get, post, public), methods=_METHODS)

    def _endpoint(
        self, get: Handler | None, post: Handler | None, public: bool
    ) -> Callable[[Request], Awaitable[Response]]:

        async def endpoint(request: Request) -> Response:
            loaded = self.current()
            peer = request.client.host if request.client else None
            trusted = loaded.config.settings.server.trusted_proxies
            if not self.sessions.required and not from_loopback(peer, request.scope["headers"], trusted):
                return self.bare_error(
                    403,
                    "Loopback only",
                    "Until api.token is set in the config, the UI answers only "
                    "this machine's own clients. Set it, then sign in with it.",
                )
            session = self.sessions.decode(request.cookies.get(COOKIE))
            page = Page(request, session or self.sessions.new(), loaded)
            if session is None:
                page.send_session = page.session
            response = await self._answer(
                page, get if request.method in ("GET", "HEAD") else post if request.method == "POST" else None, public
            )
            return self._finish(page, response)

        return endpoint

    async def _answer(self, page: Page, handler: Handler | None, public: bool) -> Response:
        try:
            if handler is None:
                raise Refused(405, "Not allowed", f"{page.request.method} is not allowed here.")
            if self.sessions.required and not page.session.signed_in and not public:
                return self._sign_in_first(page)
            if page.request.method == "POST":
                page.form = await self._form(page)
                if not self.sessions.check_csrf(page.session, page.form.get("csrf")):
                    raise Refused(
                        403,
                        "Form expired",
                        "This form's security token is missing or out of date. "
                        "Go back, reload the page and submit it again.",
                    )
            return await handler(page)
        except Refused as exc:
            return self.error(page, exc.status, exc.title, exc.message)
        except UsageError as exc:
            return self.error(page, 400, "Cannot do that", exc.message)
        except StoreError as exc:
            log.warning("a UI page could not read the store: %s", exc)
            return self.error(page, 503, "Store unavailable", "The store cannot be reached now. Try again in a moment.")
        except Exception:  # a bug: the person gets a page, the log the traceback
            log.exception("the UI page %s failed", page.request.url.path)
            return self.error(page, 500, "Something went wrong", "This page failed; the log has the details.")

    def _sign_in_first(self, page: Page) -> Response:
        if page.request.method in ("GET", "HEAD"):
            target = page.request.url.path + (f"?{page.request.url.query}" if page.request.url.query else "")
            return redirect("/ui/login?" + urlencode({"next": target}))
        raise Refused(403, "Sign in first", "Your session has ended. Sign in again, then repeat what you did.")

    async def _form(self, page: Page) -> Form:
        media = page.request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise Refused(415, "Not a form", "The UI takes forms (application/x-www-form-urlencoded) only.")
        limit = page.loaded.config.settings.server.max_body
        chunks, size = [], 0
        async for chunk in page.request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "Too large", f"The form is larger than {limit} bytes (server.max_body).")
            chunks.append(chunk)
        return Form.parse(b"".join(chunks))

    def _finish(self, page: Page, response: Response) -> Response:
        """The response with the security headers (redirects too) and the session cookie."""
        for name, value in {**HEADERS, "Cache-Control": "no-store"}.items():
            response.headers.setdefault(name, value)
        secure = page.request.url.scheme == "https"
        if page.signing_out:
            response.delete_cookie(COOKIE, path="/ui", secure=secure, httponly=True, samesite="strict")
        elif page.send_session is not None:
            response.set_cookie(
                COOKIE,
                self.sessions.encode(page.send_session),
                max_age=self.sessions.max_age(page.send_session),
                path="/ui",
                secure=secure,
                httponly=True,
                samesite="strict",
            )
        return response


def when(value: str | None) -> str:
    """An ISO-8601 time as ``2026-11-03 14:02:11`` (UTC); "" for None."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(start: str | None, end: str | None) -> str:
    """The time between two ISO-8601 times, as a person reads it ("" when one is missing)."""
    if not start or not end:
        return ""
    seconds = (
        datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))
    ).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def pretty(value: Any) -> str:
    """JSON as people read it: indented, non-ASCII kept."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def short(value: str | None, size: int = 10) -> str:
    """An id shortened for a table (the full id is the link and the title)."""
    if not value:
        return ""
    return value if len(value) <= size + 1 else value[:size] + "…"


def query_string(**params: Any) -> str:
    """``?a=1&b=2`` of the params that are set ("" when none is)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""
