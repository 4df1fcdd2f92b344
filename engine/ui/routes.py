"""The UI's pages (SPEC 13) and their addresses.

Each page shows what the API shows, through the same functions (:mod:`engine.ops.operations`,
:mod:`engine.rules.dryrun`, the store's queue operations, :mod:`engine.hover.client`); the handlers only
read the request, call those in a worker thread and render a template.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import Fail, ParamsError, Retry, UsageError
from ..hover.client import HoverClient, SharedClient
from ..ops import operations as ops
from ..ops.api import item_json
from ..rules.loader import Loaded
from ..store import QUEUE_STATUSES, OperatorStore, QueueItem
from ..units import parse_duration
from . import charts, forms
from .auth import Sessions, content_policy
from .rule_pages import RulePages
from .site import Page, Refused, Site, path, redirect

#: A claimed queue item's lease unless the form says otherwise.
DEFAULT_LEASE = "30m"
#: How long a Hover call made for a page may take.
HOVER_TIMEOUT = 15.0

T = TypeVar("T")


class Ui:
    """The pages, over one store and the current rules."""

    def __init__(
        self, current: Callable[[], Loaded], store: OperatorStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.current = current
        self.store = store
        self.clock = clock
        self.sessions = Sessions(lambda: current().config.settings.api.token, clock)
        self.site = Site(current, self.sessions)
        self._hover = SharedClient(store)  # one Hover client while the ``hover:`` settings stay the same
        self.rule_pages = RulePages(self.site, store, clock)

    def routes(self) -> list[BaseRoute]:
        page = self.site.page
        return [
            page("/ui", self.overview),
            page("/ui/login", self.login_page, self.login, public=True),
            page("/ui/logout", post=self.logout),
            page("/ui/events", self.events),
            page("/ui/events/{id}", self.event),
            page("/ui/events/{id}/replay", post=self.replay),
            page("/ui/runs", self.runs),
            page("/ui/runs/{id}", self.run),
            page("/ui/runs/{id}/retry", post=self.retry),
            page("/ui/rules", self.rule_pages.rules),
            page("/ui/rules/{name}", self.rule_pages.rule),
            page("/ui/playground", self.rule_pages.playground, self.rule_pages.try_event),
            page("/ui/queues", self.queues),
            page("/ui/queues/{name}", self.queue),
            page("/ui/queues/{name}/claim", post=self.claim),
            page("/ui/queues/{name}/items/{item}/done", post=self.done),
            page("/ui/queues/{name}/items/{item}/fail", post=self.fail),
            page("/ui/hover", self.hover),
            page("/ui/hover/connect", post=self.connect),  # a POST with its CSRF token: only this page starts a login
            page("/ui/hover/register", post=self.register),
            Route("/ui/static/{name}", self.site.static_file, methods=["GET", "HEAD"]),
            page("/ui/{rest:path}", self.not_found, self.not_found),
        ]

    # --- sign in and out ----------------------------------------------------------------

    async def login_page(self, page: Page) -> Response:
        if not self.sessions.required or page.session.signed_in:
            return redirect(_local(page.query("next")))
        return self.site.render(page, "login.html", next=_local(page.query("next")))

    async def login(self, page: Page) -> Response:
        target = _local(page.form.get("next"))
        if not self.sessions.required:
            return redirect(target)
        if not self.sessions.check_token(page.form.text("token")):
            return self.site.render(
                page, "login.html", 401, next=target, error="That is not the API token (api.token)."
            )
        page.sign_in(self.sessions.new(signed_in=True))  # a new id: none chosen before sign-in survives it
        return redirect(target)

    async def logout(self, page: Page) -> Response:
        self.sessions.revoke(page.session)
        page.signing_out = True
        return redirect("/ui/login" if self.sessions.required else "/ui")

    async def not_found(self, page: Page) -> Response:
        if page.request.url.path == "/ui/" and page.request.method in ("GET", "HEAD"):
            return redirect("/ui")
        raise Refused(404, "Not found", f"There is no page at {page.request.url.path}.")

    # --- overview -------------------------------------------------------------------------

    async def overview(self, page: Page) -> Response:
        data = await run_in_threadpool(ops.overview, page.loaded, self.store)
        return self.site.render(
            page,
            "overview.html",
            nav="overview",
            data=data,
            chart=charts.events_chart(data["activity"]),
            legend=charts.legend(data["activity"]),
        )

    # --- events ---------------------------------------------------------------------------

    async def events(self, page: Page) -> Response:
        filters = {k: page.query(k) for k in ("source", "type", "status", "since", "until")}
        limit = _limit(page.query("limit"))
        try:
            found = await run_in_threadpool(
                lambda: ops.list_events(page.loaded, self.store, limit=limit, cursor=page.query("cursor"), **filters)
            )
            error, status = None, 200
        except UsageError as exc:
            found, error, status = {"events": [], "next_cursor": None}, exc.message, 400
        return self.site.render(
            page,
            "events.html",
            status,
            nav="events",
            found=found,
            filters=filters,
            limit=limit,
            error=error,
            sources=sorted(page.loaded.config.settings.sources),
            paged=page.query("cursor") is not None,
        )

    async def event(self, page: Page) -> Response:
        event_id = page.request.path_params["id"]
        detail = await run_in_threadpool(ops.event_detail, page.loaded, self.store, event_id)
        if detail is None:
            raise Refused(404, "No such event", f"There is no event {event_id!r}; it may have been pruned.")
        return self.site.render(
            page,
            "event.html",
            nav="events",
            detail=detail,
            event=detail["event"],
            rule_names=[r.name for r in page.loaded.rules],
        )

    async def replay(self, page: Page) -> Response:
        event_id = page.request.path_params["id"]
        rule = page.form.text("rule")
        new = await run_in_threadpool(ops.replay, page.loaded, self.store, event_id, [rule] if rule else [])
        if new is None:
            raise Refused(404, "No such event", f"There is no event {event_id!r} to replay.")
        return redirect(path("events", new))

    # --- runs -----------------------------------------------------------------------------

    async def runs(self, page: Page) -> Response:
        status, rule, mode = page.query("status"), page.query("rule"), page.query("mode")
        shadow = {"shadow": True, "live": False}.get(mode or "")
        found = await run_in_threadpool(
            lambda: ops.list_runs(
                page.loaded, self.store, status=status, rule=rule, limit=_limit(page.query("limit")), shadow=shadow
            )
        )
        return self.site.render(
            page,
            "runs.html",
            nav="runs",
            runs=found["runs"],
            status=status,
            rule=rule,
            mode=mode if shadow is not None else None,
            statuses=ops.RUN_STATUSES,
            rule_names=[r.name for r in page.loaded.rules],
        )

    async def run(self, page: Page) -> Response:
        return await self._run_page(page)

    async def _run_page(self, page: Page, status: int = 200, error: str | None = None) -> Response:
        run_id = page.request.path_params["id"]
        detail = await run_in_threadpool(ops.run_detail, page.loaded, self.store, run_id)
        if detail is None:
            raise Refused(404, "No such run", f"There is no run {run_id!r}; it may have been pruned.")
        dead = next((s for s in detail["steps"] if s["status"] == "dead"), None)
        fields = forms.fields(dead["params"]) if dead and detail["status"] == "dead" else []
        submitted = {f.path: page.form.get(f"p.{f.path}", f.text) for f in fields}
        return self.site.render(
            page,
            "run.html",
            status,
            nav="runs",
            run=detail,
            dead=dead,
            fields=fields,
            submitted=submitted,
            error=error,
            retried=page.query("retried") is not None,
            form=page.form,
        )

    async def retry(self, page: Page) -> Response:
        run_id = page.request.path_params["id"]
        detail = await run_in_threadpool(ops.run_detail, page.loaded, self.store, run_id)
        if detail is None:
            raise Refused(404, "No such run", f"There is no run {run_id!r}.")
        dead = next((s for s in detail["steps"] if s["status"] == "dead"), None)
        try:
            changes = forms.edits(page.form, forms.fields(dead["params"])) if dead and page.form.get("edit") else []
        except UsageError as exc:  # a field the form cannot read (JSON that does not parse)
            return await self._run_page(page, 400, exc.message)
        sets = [(dead["id"], param, value) for param, value in changes] if dead else []
        try:
            await run_in_threadpool(ops.retry, page.loaded, self.store, run_id, sets)
        except ParamsError as exc:  # an edit the step's action refuses: the run stays dead
            return await self._run_page(page, 400, exc.message)
        except UsageError as exc:  # the run is not dead (any more)
            return await self._run_page(page, 409, exc.message)
        except LookupError as exc:
            raise Refused(404, "No such run", str(exc.args[0])) from None
        return redirect(path("runs", run_id) + "?retried=1")

    # --- queues ---------------------------------------------------------------------------

    async def queues(self, page: Page) -> Response:
        counts = await run_in_threadpool(self.store.queue_counts)
        return self.site.render(page, "queues.html", nav="queues", counts=counts, statuses=QUEUE_STATUSES)

    async def queue(self, page: Page) -> Response:
        name, status = page.request.path_params["name"], page.query("status")
        if status is not None and status not in QUEUE_STATUSES:
            raise Refused(400, "No such status", f"A queue item is {', '.join(QUEUE_STATUSES)}; not {status!r}.")
        items = await run_in_threadpool(self.store.list_queue_items, name, status, 200)
        counts = (await run_in_threadpool(self.store.queue_counts)).get(name, {})
        now = self.clock()
        shown = page.loaded.masker.mask_value([_item(i, now) for i in items])
        return self.site.render(
            page,
            "queue.html",
            nav="queues",
            name=name,
            status=status,
            items=shown,
            counts=counts,
            statuses=QUEUE_STATUSES,
            picked=page.query("item"),
            empty=page.query("empty") is not None,
            lease=DEFAULT_LEASE,
        )

    async def claim(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        lease = _duration(page.form.text("lease") or DEFAULT_LEASE, "lease")
        item = await run_in_threadpool(self.store.claim_queue_item, name, lease)
        if item is None:
            return redirect(path("queues", name) + "?empty=1")
        return redirect(path("queues", name) + "?" + f"status=claimed&item={item.id}")

    async def done(self, page: Page) -> Response:
        name, item_id = await self._claimed(page)
        changed = await run_in_threadpool(self.store.finish_queue_item, item_id)
        return self._after_change(name, item_id, changed is not None)

    async def fail(self, page: Page) -> Response:
        retry_in = _duration(page.form.text("retry_in") or "0s", "retry in")
        name, item_id = await self._claimed(page)
        changed = await run_in_threadpool(
            self.store.fail_queue_item, item_id, retry_in, page.form.text("error") or None
        )
        return self._after_change(name, item_id, changed is not None)

    async def _claimed(self, page: Page) -> tuple[str, str]:
        name, item_id = page.request.path_params["name"], page.request.path_params["item"]
        item = await run_in_threadpool(self.store.get_queue_item, item_id)
        if item is None or item.queue != name:
            raise Refused(404, "No such item", f"There is no item {item_id!r} in queue {name!r}.")
        return name, item_id

    def _after_change(self, name: str, item_id: str, changed: bool) -> Response:
        if not changed:
            raise Refused(
                409, "Not claimed", "The item is not claimed any more (its lease may have run out): claim it again."
            )
        return redirect(path("queues", name) + f"?item={item_id}")

    # --- Hover ----------------------------------------------------------------------------

    async def hover(self, page: Page) -> Response:
        return await self._hover_page(page)

    async def _hover_page(
        self,
        page: Page,
        status: int = 200,
        *,
        register_error: str | None = None,
        url: str = "",
        registered: dict[str, Any] | None = None,
    ) -> Response:
        account = await run_in_threadpool(ops.hover_account, page.loaded, self.store)
        remote_error = None
        if page.query("remote") and account["connected"]:
            try:
                rows = await run_in_threadpool(
                    self._hover_call, page.loaded, lambda c: c.list_webhooks(timeout=HOVER_TIMEOUT)
                )
                account["webhooks"] = page.loaded.masker.mask_value(rows)
            except (Fail, Retry) as exc:
                remote_error = page.loaded.masker.mask(str(exc))
        sources = [n for n, s in sorted(page.loaded.config.settings.sources.items()) if s.preset == "hover"]
        response = self.site.render(
            page,
            "hover.html",
            status,
            nav="hover",
            account=account,
            sources=sources,
            remote=page.query("remote") is not None,
            remote_error=remote_error,
            register_error=register_error,
            url=url,
            registered=registered,
        )
        hover = urlsplit(page.loaded.config.settings.hover.base_url)
        response.headers["Content-Security-Policy"] = content_policy(f"{hover.scheme}://{hover.netloc}")
        return response

    async def connect(self, page: Page) -> Response:
        account = await run_in_threadpool(ops.hover_account, page.loaded, self.store)
        if account["missing"]:
            raise Refused(
                400,
                "Hover is not set up",
                "Set " + ", ".join("hover." + k for k in account["missing"]) + " in the config first.",
            )
        # The login `hookwise hover login` starts: its state kept in the store, for
        # GET /hover/callback (engine/hover/callback.py) to take when Hover sends the browser back.
        _, url = await run_in_threadpool(self._hover_call, page.loaded, lambda c: c.tokens.start_login())
        return RedirectResponse(url, status_code=303)

    async def register(self, page: Page) -> Response:
        url, source = page.form.text("url"), page.form.text("source") or None
        if not url.startswith(("https://", "http://")):
            return await self._hover_page(
                page, 400, register_error="The URL must start with https:// (or http://).", url=url
            )
        try:
            hook = await run_in_threadpool(
                self._hover_call, page.loaded, lambda c: c.register_webhook(url, source=source, timeout=HOVER_TIMEOUT)
            )
        except (Fail, Retry) as exc:
            return await self._hover_page(page, 502, register_error=page.loaded.masker.mask(str(exc)), url=url)
        return await self._hover_page(
            page,
            registered={"id": hook.get("id"), "url": hook.get("url") or url, "hmac_secret": hook.get("hmac_secret")},
        )

    def _hover_call(self, loaded: Loaded, call: Callable[[HoverClient], T]) -> T:
        """``call`` made with the Hover client of ``loaded``'s settings (in a thread: it
        does I/O)."""
        with self._hover.use(loaded.config.settings.hover) as client:
            return call(client)


def _local(target: str | None) -> str:
    """Where to go after signing in: a UI address, never another site."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui"
    return target


def _limit(text: str | None) -> int:
    if text is None:
        return 50
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise UsageError("limit: a number from 1 to 500")
    return int(text)


def _duration(text: str, name: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _item(item: QueueItem, now: float) -> dict[str, Any]:
    """A queue item as the API shows it (times as ISO-8601), and ``later`` when it waits to be due."""
    return {**item_json(item), "later": item.available_at > now}
