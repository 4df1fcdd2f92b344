"""The UI's pages about rules (SPEC 13): the list, a rule with its backtest, and the
playground that dry-runs an event, each through the functions the API uses
(:mod:`engine.ops.operations`, :mod:`engine.rules.backtest`, :mod:`engine.rules.dryrun`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import UsageError
from ..ops import operations as ops
from ..rules.dryrun import dry_run
from ..rules.loader import Loaded
from ..store import OperatorStore
from .site import Page, Refused, Site

#: The windows the rule page's backtest offers.
BACKTEST_WINDOWS = ("1h", "24h", "7d", "30d")


class RulePages:
    """The rule pages, over one store."""

    def __init__(self, site: Site, store: OperatorStore, clock: Callable[[], float] = time.time) -> None:
        self.site = site
        self.store = store
        self.clock = clock

    async def rules(self, page: Page) -> Response:
        info = await run_in_threadpool(ops.rules_info, page.loaded, self.store)
        return self.site.render(page, "rules.html", nav="rules", rules=info["rules"])

    async def rule(self, page: Page) -> Response:
        name = page.request.path_params["name"]
        info = await run_in_threadpool(ops.rules_info, page.loaded, self.store)
        found = next((r for r in info["rules"] if r["name"] == name), None)
        compiled = page.loaded.rules.get(name)
        if found is None or compiled is None:
            raise Refused(404, "No such rule", f"There is no rule named {name!r} in the rules loaded now.")
        since = page.query("backtest")
        backtest = None
        if since:  # the rule's backtest over the window asked for: reads only, so a GET
            if since not in BACKTEST_WINDOWS:
                raise Refused(400, "No such window", f"Backtest over one of {', '.join(BACKTEST_WINDOWS)}.")
            backtest = await run_in_threadpool(self._backtest, page.loaded, name, since)
        return self.site.render(
            page, "rule.html", nav="rules", rule=found, text=page.loaded.masker.mask(compiled.text),
            windows=BACKTEST_WINDOWS, since=since, backtest=backtest,
        )

    def _backtest(self, loaded: Loaded, name: str, since: str) -> dict[str, Any]:
        from ..rules.backtest import Backtest, window_start

        job = Backtest(loaded, loaded.rules, self.store, since=window_start(since, self.clock()), max_events=500_000)
        report = job.run().json()
        report["rule"] = next((r for r in report["rules"] if r["rule"] == name), None)
        return loaded.masker.mask_value(report)

    async def playground(self, page: Page) -> Response:
        sources = _source_names(page.loaded)
        source, body = (sources[0] if sources else ""), ""
        event_id = page.query("event")
        if event_id:
            stored = await run_in_threadpool(ops.event_detail, page.loaded, self.store, event_id)
            if stored is None:
                raise Refused(404, "No such event", f"There is no event {event_id!r} to try.")
            event = stored["event"]
            # A body with body_note is its stored text already (JSON cannot show it as a value).
            body = event["body"] if "body_note" in event else json.dumps(event["body"], indent=2, ensure_ascii=False)
            source = event["source"]
        return self.site.render(
            page,
            "playground.html",
            nav="rules",
            sources=sources,
            source=source,
            body=body,
            headers="",
            result=None,
            error=None,
        )

    async def try_event(self, page: Page) -> Response:
        sources = _source_names(page.loaded)
        source, body, headers = page.form.text("source"), page.form.get("event") or "", page.form.get("headers") or ""
        result, error = None, None
        try:
            event, parsed_headers = _playground_input(source, body, headers, sources)
            result = await run_in_threadpool(dry_run, page.loaded, event, source, parsed_headers)
        except UsageError as exc:
            error = exc.message
        if page.request.headers.get("x-hookwise-fragment"):  # the page's script asks for the result only
            return self.site.render(page, "playground_result.html", result=result, error=error)
        return self.site.render(
            page,
            "playground.html",
            200 if error is None else 400,
            nav="rules",
            sources=sources,
            source=source,
            body=body,
            headers=headers,
            result=result,
            error=error,
        )


def _source_names(loaded: Loaded) -> list[str]:
    return sorted(loaded.config.settings.sources)


def _playground_input(source: str, body: str, headers: str, sources: list[str]) -> tuple[Any, dict[str, str]]:
    if source not in sources:
        raise UsageError(f"source: one of {', '.join(sources)}" if sources else "no sources are configured")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise UsageError(f"the event is not valid JSON: {exc}") from None
    if not isinstance(event, (dict, list)):
        raise UsageError("the event must be a JSON object or array")
    parsed: dict[str, str] = {}
    for line in headers.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"headers: {line.strip()!r} is not 'Name: value'")
        parsed[name.strip().lower()] = value.strip()
    return event, parsed
