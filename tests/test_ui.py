"""The web UI (SPEC 13) in a real Chromium, clicking as a person would, against the daemon as
a real process with a real store, a sink for the http action and a fake Hover on loopback."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine.store import Incoming, open_store

from .browser import VIEWPORT, screenshot
from .fakehover import CLIENT_ID, CLIENT_SECRET, FakeHover
from .support import DaemonProcess, Hit, Sink, free_port, post

TOKEN = "ui-t0ken-for-tests"

RULES = """\
rules:
  - name: crm-push
    description: Push every paid order to the CRM
    source: shop
    event: order.created
    when: {total: {gt: 0}}
    actions:
      - id: crm
        http: {method: POST, url: "{SINK}/crm-broken", json: {order: "{{ event.id }}", total: "{{ event.total }}"}}
        retry: {attempts: 1}
      - log: {message: "pushed {{ event.id }}"}
  - name: big-order-review
    description: Orders of 1,000 or more go to the review queue
    source: shop
    event: order.*
    when: {total: {gte: 1000}}
    actions:
      - requeue: {queue: review, key: "{{ event.id }}", data: {total: "{{ event.total }}", note: "{{ event.note }}"}}
  - name: vip-alert
    description: Tell the account team about VIP customers
    source: shop
    event: order.created
    when: {customer.tier: vip}
    actions:
      - log: {message: "VIP order {{ event.id }}"}
"""

CONFIG = """\
store: sqlite:///data/hookwise.db
rules: [rules.yaml]
http: {{allow_private: true}}
{api}
hover: {{base_url: "{hover}", client_id: {client_id}, client_secret: {client_secret}, redirect_uri: "{redirect}"}}
sources:
  shop: {{token: shop-t0ken, type: "body:type"}}
  hover: {{preset: hover, token: hover-t0ken}}
"""

#: Hostile event data: each payload would set ``window.__xss`` if it ran.
XSS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 2">',
    "javascript:window.__xss = 3",
    '"><svg onload="window.__xss = 4">',
    "</pre><script>window.__xss = 5</script>",
    "{{ 7 * 7 }}<style>body{display:none}</style>",
]


@dataclass
class World:
    daemon: DaemonProcess
    sink: Sink
    hover: FakeHover
    root: Path

    @property
    def url(self) -> str:
        return self.daemon.url

    def send(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        status, answer = post(f"{self.url}/hooks/shop?token=shop-t0ken", json.dumps(body), headers)
        assert status == 202, answer
        assert isinstance(answer, dict)
        return str(answer["event_id"])

    def api(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def wait(self, check: Any, timeout: float = 20.0) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError("the condition did not hold in time")

    def matched(self, event_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            detail: dict[str, Any] = self.api(f"/api/events/{event_id}")
            return detail if detail["event"]["status"] == "matched" else None

        found: dict[str, Any] = self.wait(done)
        return found


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _sink_answer(hit: Hit) -> tuple[int, str]:
    return (500, '{"error": "the CRM is down"}') if hit.path.startswith("/crm-broken") else (200, '{"id": "crm-1"}')


def _start(tmp: Path, *, token: bool) -> Iterator[World]:
    port = free_port()
    sink = Sink(_sink_answer)
    hover = FakeHover(redirect_uri=f"http://127.0.0.1:{port}/hover/callback")
    (tmp / "rules.yaml").write_text(RULES.replace("{SINK}", sink.url))
    (tmp / "config.yaml").write_text(
        CONFIG.format(
            api='api: {token: "${UI_TOKEN}"}' if token else "",
            hover=hover.url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect=f"http://127.0.0.1:{port}/hover/callback",
        )
    )
    daemon = DaemonProcess(tmp / "config.yaml", port, env={"UI_TOKEN": TOKEN})
    try:
        daemon.wait_ready()
        yield World(daemon, sink, hover, tmp)
    finally:
        daemon.stop()
        sink.close()
        hover.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The daemon with ``api.token`` set."""
    yield from _start(tmp_path_factory.mktemp("ui"), token=True)


@pytest.fixture(scope="module")
def open_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The daemon without ``api.token``: loopback clients only, no sign-in."""
    yield from _start(tmp_path_factory.mktemp("ui-open"), token=False)


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    """A signed-in page of a fresh browser context."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = context.new_page()
    sign_in(page, world)
    yield page
    context.close()


def sign_in(page: Any, world: World, token: str = TOKEN) -> None:
    page.goto(world.url + "/ui")
    page.fill("#token", token)
    page.click("button:has-text('Sign in')")


def reload_until(page: Any, selector: str, text: str, timeout: float = 20.0) -> None:
    """Reload until ``selector`` shows ``text`` (the worker runs in its own time)."""
    deadline = time.time() + timeout
    while True:
        if text in page.locator(selector).first.inner_text():
            return
        if time.time() > deadline:
            raise AssertionError(f"{selector} never showed {text!r}: {page.locator(selector).first.inner_text()!r}")
        time.sleep(0.1)
        page.reload()


# --- signing in ------------------------------------------------------------------------------


def test_sign_in_is_needed_and_refuses_a_wrong_token(browser: Any, world: World) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    response = page.goto(world.url + "/ui/events?source=shop")
    assert page.url == world.url + "/ui/login?next=%2Fui%2Fevents%3Fsource%3Dshop"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    screenshot(page, "login")

    page.fill("#token", "not-the-token")
    with page.expect_response(lambda r: r.url.endswith("/ui/login")) as answer:
        page.click("button:has-text('Sign in')")
    assert answer.value.status == 401
    assert "That is not the API token" in page.inner_text("main")

    page.fill("#token", TOKEN)
    page.click("button:has-text('Sign in')")
    assert page.url == world.url + "/ui/events?source=shop"  # back where the person was going
    (cookie,) = [c for c in context.cookies() if c["name"] == "hookwise_ui"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"], cookie["secure"]) == (True, "Strict", "/ui", False)
    assert cookie["expires"] - time.time() == pytest.approx(8 * 3600, abs=120)

    page.click("text=Sign out")
    assert page.url.startswith(world.url + "/ui/login")
    # The signed-out session is gone for good, even when a copy of the cookie comes back.
    context.add_cookies([cookie])
    page.goto(world.url + "/ui/runs")
    assert page.url.startswith(world.url + "/ui/login")
    context.close()


def test_without_a_session_posts_are_refused_and_the_api_still_wants_its_bearer(world: World) -> None:
    status, text = post(
        world.url + "/ui/events/x/replay", "rule=", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 403 and "Sign in" in str(text)
    status, text = post(world.url + "/ui/events", "", method="PUT")
    assert status == 405 and "PUT is not allowed here" in str(text)
    opener = urllib.request.build_opener(NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(world.url + "/ui/runs", timeout=10)
    assert refused.value.code == 303 and refused.value.headers["Location"] == "/ui/login?next=%2Fui%2Fruns"
    assert refused.value.headers["Content-Security-Policy"].startswith("default-src 'none'")
    refused.value.close()
    status, _ = post(world.url + "/api/events/x/replay", "{}")
    assert status == 401


# --- events ------------------------------------------------------------------------------------


def test_find_an_event_read_why_a_rule_did_not_match_and_replay_it_for_one_rule(page: Any, world: World) -> None:
    wanted = world.send({"type": "order.created", "id": "o-100", "total": 250, "customer": {"tier": "regular"}})
    refunded = world.send({"type": "order.refunded", "id": "o-101", "total": 250})
    world.matched(wanted)
    world.matched(refunded)

    page.click("nav >> text=Events")
    page.fill("input[name=type]", "order.created")
    page.fill("input[name=source]", "shop")
    page.click("button:has-text('Filter')")
    assert "type=order.created" in page.url
    rows = page.locator("table.list tbody tr")
    assert all("order.created" in t for t in rows.all_inner_texts())
    screenshot(page, "events-filtered")

    page.click(f"a[href='/ui/events/{wanted}']")
    explain = page.locator("table.explain tr", has_text="vip-alert")
    assert explain.locator("td").nth(1).inner_text() == "no"
    assert explain.locator("td.reason").inner_text() == "no: when.customer.tier: expected 'vip', got 'regular'"
    assert page.locator("table.explain tr", has_text="crm-push").locator("td").nth(1).inner_text() == "yes"
    screenshot(page, "event")

    page.select_option("select[name=rule]", "vip-alert")
    page.click("button:has-text('Replay')")
    replay_id = page.url.rsplit("/", 1)[1]
    assert replay_id != wanted
    meta = page.text_content("dl.meta") or ""
    assert "Replay of" in meta and f"{wanted} for vip-alert" in meta
    replay = world.matched(replay_id)
    assert replay["event"]["replay_of"] == wanted and replay["event"]["only_rules"] == ["vip-alert"]
    assert [r["rule"] for r in replay["event"]["explain"]] == ["vip-alert"]  # only that rule was considered

    # The list says what each event produced, and marks the replay.
    page.goto(world.url + "/ui/events?source=shop")

    def row(event_id: str) -> Any:
        return page.locator(f"table.list tbody tr:has(td:nth-child(2) a[href='/ui/events/{event_id}'])")

    assert row(wanted).locator("td.outcome").inner_text() == "1 run"
    assert row(refunded).locator("td.outcome").inner_text() == "no rule matched"
    assert row(replay_id).locator("td.outcome").inner_text() == "no rule matched"
    assert row(replay_id).locator("td").last.inner_text().startswith("replay of ")
    assert row(wanted).locator("td").last.inner_text() == ""


def test_an_unknown_event_is_a_404_page(page: Any, world: World) -> None:
    response = page.goto(world.url + "/ui/events/no-such-event")
    assert response.status == 404 and "There is no event 'no-such-event'" in page.inner_text("main")
    response = page.goto(world.url + "/ui/events?status=lost")
    assert response.status == 400 and "status: expected one of pending, matched" in page.inner_text("main")


# --- runs --------------------------------------------------------------------------------------


def test_a_dead_run_is_retried_with_an_edited_url_until_it_succeeds(page: Any, world: World) -> None:
    event_id = world.send({"type": "order.created", "id": "o-200", "total": 300, "customer": {"tier": "regular"}})
    run_id = world.wait(lambda: next((r["id"] for r in world.matched(event_id)["runs"] if r["status"] == "dead"), None))

    page.goto(world.url + "/ui/runs?status=dead")
    page.click(f"a[href='/ui/runs/{run_id}']")
    assert page.locator("h1 .badge").inner_text() == "dead"
    assert "500" in page.locator(".step-dead .error-text").inner_text()
    page.locator("#retry").scroll_into_view_if_needed()
    screenshot(page, "run-dead-retry")

    # A value that is not JSON in a JSON field: refused, the person's edit kept in the form.
    page.fill("input[name='p.json.total']", "{oops")
    page.click("button:has-text('Retry with these params')")
    assert "json.total: not valid JSON" in page.inner_text("#retry .flash-error")
    assert page.input_value("input[name='p.json.total']") == "{oops"
    assert world.api(f"/api/runs/{run_id}")["status"] == "dead"

    # An edit the http action refuses (operations.retry checks it): the reason shown, the run still dead.
    page.fill("input[name='p.json.total']", "300")
    page.fill("input[name='p.method']", "FETCH")
    with page.expect_response(lambda r: r.url.endswith(f"/ui/runs/{run_id}/retry")) as answer:
        page.click("button:has-text('Retry with these params')")
    assert answer.value.status == 400
    assert page.inner_text("#retry .flash-error").startswith("crm.method: Input should be 'GET', 'HEAD', 'POST'")
    assert page.input_value("input[name='p.method']") == "FETCH"
    assert world.api(f"/api/runs/{run_id}")["status"] == "dead"
    assert not any(h.path == "/crm" and h.json()["order"] == "o-200" for h in world.sink.hits)

    page.fill("input[name='p.method']", "POST")
    page.fill("input[name='p.json.total']", "300")
    page.fill("input[name='p.url']", world.sink.url + "/crm")
    page.click("button:has-text('Retry with these params')")
    assert "Retry started" in page.inner_text("main")
    reload_until(page, "h1 .badge", "succeeded")
    assert [s.inner_text() for s in page.locator(".timeline .step-head .badge").all()] == ["succeeded", "succeeded"]
    assert "took" in page.locator(".step-succeeded .step-times").first.inner_text()
    (hit,) = [h for h in world.sink.hits if h.path == "/crm" and h.json()["order"] == "o-200"]
    assert hit.json() == {"order": "o-200", "total": 300}
    page.click("text=Output")
    screenshot(page, "run-timeline")


# --- queues ------------------------------------------------------------------------------------


def test_work_a_queue_item_claim_fail_with_retry_in_and_done(page: Any, world: World) -> None:
    first = world.send(
        {"type": "order.created", "id": "o-300", "total": 1500, "customer": {"tier": "regular"}, "note": "roof"}
    )
    second = world.send(
        {"type": "order.created", "id": "o-301", "total": 2500, "customer": {"tier": "regular"}, "note": "yard"}
    )
    for event_id in (first, second):
        world.matched(event_id)
    world.wait(
        lambda: {i["key"] for i in world.api("/api/queues/review?status=waiting")["items"]} >= {"o-300", "o-301"}
    )

    page.click("nav >> text=Queues")
    page.click("a:has-text('review')")
    page.click("button:has-text('Claim the next item')")
    claimed = page.locator("article.picked")
    assert claimed.locator(".badge").inner_text() == "claimed"
    key = claimed.locator(".item-head strong").inner_text()
    claimed.locator("input[name=retry_in]").fill("1h")
    claimed.locator("input[name=error]").fill("no access to the roof")
    claimed.locator("button:has-text('Fail')").click()
    failed = page.locator("article.picked")
    assert failed.locator(".badge").inner_text() == "waiting"
    assert "attempt 2 of 5" in failed.inner_text() and "no access to the roof" in failed.inner_text()
    (item,) = [i for i in world.api("/api/queues/review")["items"] if i["key"] == key]
    assert item["status"] == "waiting" and item["attempts"] == 2
    assert datetime.fromisoformat(item["available_at"]).timestamp() > time.time() + 3000

    page.click("button:has-text('Claim the next item')")  # the failed one waits an hour: the other comes
    other = page.locator("article.picked")
    assert other.locator(".item-head strong").inner_text() != key
    screenshot(page, "queue")
    other.locator("button:has-text('Done')").click()
    assert page.locator("article.picked .badge").inner_text() == "done"
    page.click("button:has-text('Claim the next item')")
    assert "Nothing to claim" in page.inner_text("main")


# --- rules and the playground ------------------------------------------------------------------


def test_rules_show_where_they_are_and_the_playground_renders_a_pasted_event(page: Any, world: World) -> None:
    page.click("nav >> text=Rules")
    row = page.locator("table.list tr", has_text="vip-alert")
    assert "rules.yaml:" in row.inner_text() and "Tell the account team about VIP customers" in row.inner_text()
    page.click("a:has-text('vip-alert')")
    assert "customer.tier: vip" in page.inner_text("pre.code")

    page.goto(world.url + "/ui/rules")
    page.click("text=Open the playground")
    page.select_option("#pg-source", "shop")
    page.fill(
        "#pg-event",
        json.dumps({"type": "order.created", "id": "o-400", "total": 1200, "customer": {"tier": "vip"}, "note": "-"}),
    )
    # The page's script posts as one types; the result arrives without a click.
    result = page.locator("#playground-result")
    result.locator(".action").first.wait_for()
    actions = result.inner_text()
    assert '"queue": "review"' in actions and '"key": "o-400"' in actions and "VIP order o-400" in actions
    assert "yes" in result.locator("table.explain tr", has_text="vip-alert").inner_text()
    screenshot(page, "playground")

    page.fill("#pg-event", "{not json")
    result.locator(".flash-error").wait_for()
    assert "the event is not valid JSON" in result.inner_text()


def test_a_rules_page_backtests_it_over_stored_events(page: Any, world: World) -> None:
    world.matched(world.send({"type": "order.created", "id": "o-bt", "total": 5, "customer": {"tier": "vip"}}))
    page.goto(world.url + "/ui/rules/vip-alert")
    page.select_option("select[name=backtest]", "24h")
    page.click("button:has-text('Backtest')")
    result = page.locator("dl.backtest-result")
    result.wait_for()
    names = [name.lower() for name in result.locator("dt").all_inner_texts()]  # the style capitalises them
    numbers = dict(zip(names, result.locator("dd").all_inner_texts(), strict=True))
    assert int(numbers["would match"]) >= 1 and numbers["would match"] == numbers["did match"]
    assert numbers["would, did not"] == numbers["did, would not"] == "0"
    assert "backtest=24h" in page.url
    screenshot(page, "rule-backtest")


def test_the_playground_works_without_javascript(browser: Any, world: World) -> None:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, world)
    page.goto(world.url + "/ui/playground")
    page.select_option("#pg-source", "shop")
    page.fill("#pg-event", json.dumps({"type": "order.created", "id": "o-401", "total": 5}))
    page.click("button:has-text('Match and render')")
    assert '"order": "o-401"' in page.inner_text("#playground-result")
    context.close()


# --- Hover -------------------------------------------------------------------------------------


def test_connect_the_hover_account_and_register_a_webhook(page: Any, world: World) -> None:
    page.click("nav >> text=Hover")
    assert "not connected" in page.inner_text("main")
    # Only the page's own form starts a login (a POST with its CSRF token), never a link from elsewhere.
    assert page.request.get(world.url + "/ui/hover/connect", max_redirects=0).status == 405
    page.click("text=Connect to Hover")  # Hover's authorize page sends the browser to /hover/callback
    assert page.url.startswith(world.url + "/hover/callback?")
    assert page.inner_text("h1") == "Hover account connected"
    back = page.url
    assert page.goto(back).status == 400  # the login's state is used once (engine/hover/callback.py)
    page.goto(world.url + "/ui/hover")
    assert page.locator("main .badge").first.inner_text() == "connected"
    assert world.hover.grants, "the fake Hover issued no tokens"

    hook_url = world.url + "/hooks/hover?token=hover-t0ken"
    page.fill("#hook-url", hook_url)
    page.click("button:has-text('Register')")
    registered = page.inner_text(".flash-ok")
    (hook,) = world.hover.webhooks.values()
    assert str(hook["id"]) in registered and hook["hmac_secret"] in registered
    assert hook["url"] == hook_url
    assert str(hook["id"]) in page.inner_text("table")
    screenshot(page, "hover")
    page.click("text=Ask Hover")  # Hover's own list, merged with what hookwise recorded
    assert "As Hover lists them now" in page.inner_text("main") and str(hook["id"]) in page.inner_text("table")
    assert any(c.path == "/api/v2/webhooks" and c.method == "GET" for c in world.hover.calls)


def test_a_callback_with_a_state_hookwise_did_not_issue_is_refused(page: Any, world: World) -> None:
    code = world.hover.authorize(world.url + "/hover/callback")
    before = len(world.hover.grants)
    response = page.goto(world.url + f"/hover/callback?code={code}&state=made-up")
    assert response.status == 400 and page.inner_text("h1") == "This login link is not valid"
    assert len(world.hover.grants) == before and code not in page.content()


# --- hostile data and forged forms -------------------------------------------------------------


def test_xss_payloads_in_events_stay_inert(page: Any, world: World) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    body = {
        "type": "order.created",
        "id": XSS[0],
        "total": 1000,
        "customer": {"tier": XSS[1], "name": XSS[4]},
        "note": XSS[2],
        "links": [XSS[3], XSS[5]],
    }
    event_id = world.send(body, {"X-Evil": XSS[1], "Referer": XSS[2]})
    world.matched(event_id)

    for address in (
        "/ui",
        "/ui/events",
        f"/ui/events/{event_id}",
        f"/ui/playground?event={event_id}",
        "/ui/queues/review",
        "/ui/runs",
        "/ui/runs?status=dead",
    ):
        page.goto(world.url + address)
        assert page.evaluate("window.__xss") is None, address
        assert page.locator("main img, main svg[onload], main script").count() == 0, address
    page.goto(world.url + f"/ui/events/{event_id}")
    text = page.inner_text("main")
    assert XSS[0] in text and XSS[1] in text and XSS[4] in text  # shown as text
    dead = world.wait(
        lambda: next((r["id"] for r in world.api(f"/api/events/{event_id}")["runs"] if r["status"] == "dead"), None)
    )
    page.goto(world.url + f"/ui/runs/{dead}")
    assert page.input_value("input[name='p.json.order']") == XSS[0]
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert page.locator("body").is_visible()  # the <style> payload did not hide the page


def test_posts_without_the_csrf_token_are_refused(page: Any, world: World) -> None:
    event_id = world.send({"type": "order.refunded", "id": "o-500", "total": 5})
    world.matched(event_id)
    events_before = len(world.api("/api/events?limit=1000")["events"])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for data in ("rule=", "rule=&csrf=forged"):  # the session cookie is sent, the token is missing or wrong
        answer = page.request.post(
            world.url + f"/ui/events/{event_id}/replay", data=data, headers=form, max_redirects=0
        )
        assert answer.status == 403 and "security token" in answer.text()
    assert len(world.api("/api/events?limit=1000")["events"]) == events_before


def test_a_page_of_another_site_cannot_post_to_the_ui_without_a_token(browser: Any, open_world: World) -> None:
    """Without api.token a person on this machine needs no sign-in, so a page from elsewhere
    posting a form to the UI is what CSRF tokens stop."""
    event_id = open_world.send({"type": "order.refunded", "id": "o-600", "total": 5})
    open_world.matched(event_id)
    attacker = Sink(
        lambda hit: (
            200,
            (
                f'<form id="f" method="post" action="{open_world.url}/ui/events/{event_id}/replay">'
                '<input name="rule" value=""></form>'
                '<script>document.getElementById("f").submit()</script>'
            ),
        ),
        content_type="text/html; charset=utf-8",
    )
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(open_world.url + "/ui")  # the person uses the UI: no sign-in without a token
        assert "Overview" in page.inner_text("h1") and page.locator("text=Sign out").count() == 0
        with page.expect_navigation(url=f"{open_world.url}/ui/events/{event_id}/replay"):
            page.goto(attacker.url + "/evil.html")
        assert "security token" in page.inner_text("main")
        assert len(open_world.api("/api/events?limit=1000")["events"]) == 1
    finally:
        context.close()
        attacker.close()


def earlier_traffic(world: World) -> None:
    """An hour of earlier events from two sources, written to the daemon's store (as
    another receiver sharing it would) with the times they arrived."""
    now = time.time()
    rows = []
    for minute in range(1, 58):
        rows += [
            Incoming("shop", "order.viewed", '{"type": "order.viewed", "total": 1}', {}, {}, now - minute * 60 - n)
            for n in range(minute * 7 % 11 + 3)
        ]
        rows += [
            Incoming("hover", "model-state-changed", '{"event": "model-state-changed"}', {}, {}, now - minute * 60 - n)
            for n in range(minute * 5 % 7)
        ]
    store = open_store(f"sqlite:///{world.root / 'data' / 'hookwise.db'}")
    try:
        store.put_events(rows)
    finally:
        store.close()


def test_the_overview_shows_activity_runs_queues_sources_and_errors(page: Any, world: World) -> None:
    earlier_traffic(world)
    world.matched(
        world.send({"type": "order.created", "id": "o-700", "total": 1200, "customer": {"tier": "vip"}, "note": "-"})
    )
    world.wait(lambda: world.api("/api/queues").get("queues", {}).get("review"))
    dies = world.send({"type": "order.created", "id": "o-701", "total": 300, "customer": {"tier": "regular"}})
    world.wait(lambda: any(r["status"] == "dead" for r in world.matched(dies)["runs"]))  # its own dead run
    page.goto(world.url + "/ui")
    assert page.locator("svg.chart rect").count() >= 57
    assert "shop" in page.inner_text(".legend") and "hover" in page.inner_text(".legend")
    assert page.locator(".stat-dead .stat-value").inner_text() != "0"
    assert "review" in page.inner_text("main")
    sources = page.locator("table", has_text="Endpoint").inner_text()
    assert "/hooks/shop" in sources and "token" in sources
    assert "the CRM is down" in page.locator("section", has_text="Last errors").inner_text()
    screenshot(page, "overview")
    page.click("nav >> text=Events")
    assert page.locator("table.list tbody tr").count() == 50 and page.locator("a[rel=next]").count() == 1
    screenshot(page, "events")
    dark = page.context.browser.new_context(viewport=VIEWPORT, color_scheme="dark")
    night = dark.new_page()
    sign_in(night, world)
    screenshot(night, "overview-dark")
    dark.close()
