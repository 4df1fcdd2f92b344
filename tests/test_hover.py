"""engine/hover/client.py (with hover_tokens.py and hover_limits.py), actions/hover.py and
engine/cli/hover.py against a fake Hover API on loopback (tests/fakehover.py) and a real
SQLite store."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from actions.hover import HoverAction, HoverParams
from engine.cli.hover import hover_group
from engine.errors import Fail, HookwiseError, Retry, UsageError
from engine.events import Event
from engine.hover.client import HoverClient, SharedClient
from engine.hover.limits import RateLimiter
from engine.hover.tokens import NOT_LOGGED_IN
from engine.rules.config import Hover
from engine.run.action import Context
from engine.store import HoverTokens, Store, open_store

from .fakehover import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeHover
from .support import free_port


class FakeClock:
    """A clock that moves only when told to, or when something sleeps on it."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> Iterator[FakeHover]:
    with FakeHover() as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hookwise.db'}"


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    opened = open_store(db)
    yield opened
    opened.close()


def settings(fake: FakeHover, **changes: Any) -> Hover:
    values = {
        "base_url": fake.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT_URI
    }
    return Hover(**{**values, **changes})


def logged_in(fake: FakeHover, store: Store, **options: Any) -> HoverClient:
    client = HoverClient(settings(fake), store, **options)
    client.tokens.exchange_code(fake.authorize())
    return client


def job_calls(fake: FakeHover, job_id: int = 42) -> list[int]:
    return [c.status for c in fake.api_calls(f"/api/v3/jobs/{job_id}")]


# --- OAuth -----------------------------------------------------------------------------


def test_login_follows_the_authorization_code_flow(fake: FakeHover, store: Store) -> None:
    client = HoverClient(settings(fake), store)
    url = client.tokens.authorize_url(state="s-123")
    parts = urlsplit(url)
    assert url.startswith(fake.url + "/oauth/authorize?")
    assert parse_qs(parts.query) == {
        "client_id": [CLIENT_ID], "redirect_uri": [REDIRECT_URI], "response_type": ["code"], "state": ["s-123"],
    }
    # The user allows access: Hover redirects to redirect_uri with the code and the state.
    location = _redirect_location(url)
    assert location.startswith(REDIRECT_URI) and parse_qs(urlsplit(location).query)["state"] == ["s-123"]
    code = parse_qs(urlsplit(location).query)["code"][0]

    before = time.time()
    tokens = client.tokens.exchange_code(code)

    assert store.hover_tokens() == tokens
    assert fake.access_token_valid(tokens.access_token) and fake.refresh_token_alive(tokens.refresh_token)
    assert before + 7200 - 5 <= tokens.expires_at <= time.time() + 7200
    assert client.tokens.access_token() == tokens.access_token


def test_a_started_login_keeps_its_state_in_the_store_for_the_callback(fake: FakeHover, store: Store) -> None:
    client = HoverClient(settings(fake), store)
    state, url = client.tokens.start_login(60)
    assert parse_qs(urlsplit(url).query)["state"] == [state] and len(state) >= 32
    assert store.hover_login(state) == {"status": "pending", "error": None, "expired": False}
    assert client.tokens.start_login()[0] != state  # a new state for every login
    assert store.take_hover_login(state) == "default" and store.take_hover_login(state) is None

    unset = HoverClient(settings(fake, redirect_uri=None), store)
    with pytest.raises(Fail, match="redirect_uri"):
        unset.tokens.start_login()


def test_an_authorization_code_works_once(fake: FakeHover, store: Store) -> None:
    client = HoverClient(settings(fake), store)
    code = fake.authorize()
    first = client.tokens.exchange_code(code)
    with pytest.raises(Fail, match=r"invalid_grant.*hookwise hover login") as caught:
        client.tokens.exchange_code(code)
    assert code not in str(caught.value)
    assert store.hover_tokens() == first


def test_refreshes_shortly_before_expiry_and_saves_the_rotated_pair(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    clock = FakeClock()
    client = logged_in(fake, store, clock=clock, sleep=clock.sleep)
    first = store.hover_tokens()
    assert first is not None

    clock.now += 7200 - 301  # more than 5 minutes left: no refresh
    client.request("GET", "/api/v3/jobs/42", timeout=5)
    assert fake.refreshes == 0 and store.hover_tokens() == first

    clock.now += 2  # now within 5 minutes of expiry: refreshed before the call
    status, _, _ = client.request("GET", "/api/v3/jobs/42", timeout=5)
    second = store.hover_tokens()
    assert status == 200 and fake.refreshes == 1 and fake.unauthorized == 0
    assert second is not None and second != first
    assert second.expires_at == pytest.approx(clock.now + 7200)
    assert not fake.refresh_token_alive(first.refresh_token) and fake.refresh_token_alive(second.refresh_token)
    assert [c.token for c in fake.api_calls("/api/v3/jobs/42")] == [first.access_token, second.access_token]


def test_a_401_refreshes_once_and_sends_once_more(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    client = logged_in(fake, store)
    fake.expire_access_tokens()  # Hover ended the token early: only a 401 tells

    status, body, _ = client.request("GET", "/api/v3/jobs/42", timeout=5)

    assert (status, body["id"]) == (200, 42)
    assert job_calls(fake) == [401, 200] and fake.refreshes == 1


def test_a_second_401_fails_without_a_second_refresh(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    client = logged_in(fake, store)
    fake.on_next_request(fake.expire_access_tokens)
    fake.on_next_request(fake.expire_access_tokens)

    with pytest.raises(Fail, match=r"401 even after refreshing.*hookwise hover login"):
        client.request("GET", "/api/v3/jobs/42", timeout=5)
    assert job_calls(fake) == [401, 401] and fake.refreshes == 1


def test_a_client_holding_a_stale_pair_re_reads_instead_of_reusing_a_dead_refresh_token(
    fake: FakeHover, db: str
) -> None:
    fake.add_job(42)
    store_a, store_b = open_store(db), open_store(db)  # two processes' stores
    try:
        clock_a = FakeClock()
        a = logged_in(fake, store_a, clock=clock_a, sleep=clock_a.sleep)
        b = HoverClient(settings(fake), store_b)
        clock_a.now += 7200  # a finds the token expiring...
        # ...and refreshes while b's call with the old token is on its way: that token and
        # its refresh token die; b gets a 401 and must use a's new pair, not refresh again.
        fake.on_next_request(a.tokens.access_token)

        status, _, _ = b.request("GET", "/api/v3/jobs/42", timeout=5)

        tokens = store_b.hover_tokens()
        assert status == 200 and job_calls(fake) == [401, 200]
        assert fake.refreshes == 1 and fake.invalid_grants == 0
        assert tokens is not None and fake.refresh_token_alive(tokens.refresh_token)
    finally:
        store_a.close()
        store_b.close()


def _race(clients: list[HoverClient]) -> list[str]:
    """Every client asks for the access token at the same moment; the tokens they got."""
    barrier = threading.Barrier(len(clients))
    got: list[str] = []
    errors: list[BaseException] = []

    def ask(client: HoverClient) -> None:
        barrier.wait()
        try:
            got.append(client.tokens.access_token())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    return got


def test_threads_of_one_client_refresh_once(store: Store) -> None:
    with FakeHover(token_delay=0.3) as fake:
        client = logged_in(fake, store)
        old = store.hover_tokens()
        assert old is not None
        store.save_hover_tokens(HoverTokens(old.access_token, old.refresh_token, time.time() + 60))  # expiring

        got = _race([client] * 6)

        tokens = store.hover_tokens()
        assert fake.refreshes == 1 and fake.invalid_grants == 0
        assert tokens is not None and set(got) == {tokens.access_token}
        assert fake.refresh_token_alive(tokens.refresh_token)


def test_clients_of_two_processes_refresh_once(db: str) -> None:
    stores = [open_store(db), open_store(db)]
    try:
        with FakeHover(token_delay=0.3) as fake:
            clocks = [FakeClock(), FakeClock()]
            first = logged_in(fake, stores[0], clock=clocks[0], sleep=time.sleep)
            second = HoverClient(settings(fake), stores[1], clock=clocks[1], sleep=time.sleep)
            for clock in clocks:
                clock.now += 7200  # both see the token expiring

            got = _race([first, second, first, second])

            tokens = stores[1].hover_tokens()
            assert fake.refreshes == 1 and fake.invalid_grants == 0
            assert tokens is not None and set(got) == {tokens.access_token}
            assert fake.refresh_token_alive(tokens.refresh_token)
    finally:
        for s in stores:
            s.close()


def test_a_dead_refresh_token_asks_for_a_new_login_and_never_shows_a_token(
    fake: FakeHover, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add_job(42)
    client = logged_in(fake, store)
    tokens = store.hover_tokens()
    assert tokens is not None
    fake.revoke_all()  # the user withdrew access at Hover

    refused = r"refreshing the access token: refused \(400 invalid_grant\).*hookwise hover login"
    with pytest.raises(Fail, match=refused) as caught:
        client.request("GET", "/api/v3/jobs/42", timeout=5)

    for secret in (tokens.access_token, tokens.refresh_token, CLIENT_SECRET):
        assert secret not in str(caught.value) and secret not in caplog.text
    assert "refreshed" not in caplog.text and "logged in" in caplog.text


def test_not_logged_in_fails_before_calling_hover(fake: FakeHover, store: Store) -> None:
    client = HoverClient(settings(fake), store)
    with pytest.raises(Fail) as caught:
        client.request("GET", "/api/v3/jobs/42", timeout=5)
    assert str(caught.value) == NOT_LOGGED_IN == "hover: not logged in: run `hookwise hover login`"
    assert fake.calls == []


# --- statuses ----------------------------------------------------------------------------


def test_429_is_a_retry_after_hovers_retry_after(store: Store) -> None:
    with FakeHover(rate_limit=2) as fake:
        fake.add_job(42)
        client = logged_in(fake, store)
        client.request("GET", "/api/v3/jobs/42", timeout=5)
        client.request("GET", "/api/v3/jobs/42", timeout=5)
        with pytest.raises(Retry, match="429") as caught:
            client.request("GET", "/api/v3/jobs/42", timeout=5)
        assert caught.value.after is not None and 55 <= caught.value.after <= 60
        assert job_calls(fake) == [200, 200, 429]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_a_retry(fake: FakeHover, store: Store, status: int) -> None:
    fake.add_job(42)
    client = logged_in(fake, store)
    fake.fail_next(1, status)
    with pytest.raises(Retry, match=f"GET /api/v3/jobs/42: {status}"):
        client.request("GET", "/api/v3/jobs/42", timeout=5)
    assert client.request("GET", "/api/v3/jobs/42", timeout=5)[0] == 200


def test_an_unreachable_hover_is_a_retry(tmp_path: Path, store: Store) -> None:
    store.save_hover_tokens(HoverTokens("at", "rt", time.time() + 7200))
    client = HoverClient(Hover(base_url=f"http://127.0.0.1:{free_port()}"), store)
    with pytest.raises(Retry, match="cannot connect"):
        client.request("GET", "/api/v3/jobs/42", timeout=5)


def test_a_slow_hover_is_a_retry(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    client = logged_in(fake, store)
    fake.on_next_request(lambda: time.sleep(1.0))
    started = time.monotonic()
    with pytest.raises(Retry, match="timed out"):
        client.request("GET", "/api/v3/jobs/42", timeout=0.3)
    assert time.monotonic() - started < 0.9


def test_404_fails_with_the_status_and_an_excerpt(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    with pytest.raises(Fail, match=r"hover: GET /api/v3/jobs/999: 404: .*Not Found"):
        client.request("GET", "/api/v3/jobs/999", timeout=5)
    assert job_calls(fake, 999) == [404]


def test_query_and_bodies_reach_hover(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    body = {
        "current_user_email": "ops@example.com",
        "capture_request": {
            "capturing_user_name": "Pat", "capturing_user_email": "pat@example.com",
            "job_attributes": {"location_line_1": "1 Main St", "deliverable_id": 3},
        },
    }
    status, created, _ = client.request("POST", "/api/v2/capture_requests", json=body, timeout=5)
    assert status == 201 and created["state"] == "new" and created["job_attributes"]["location_line_1"] == "1 Main St"
    status, listed, _ = client.request("GET", "/api/v2/capture_requests", params={"page": 1, "per_page": 10}, timeout=5)
    assert [c["identifier"] for c in listed["results"]] == [created["identifier"]]
    assert listed["pagination"] == {"current_page": 1, "total_pages": 1, "total": 1}
    with pytest.raises(Fail, match="422"):
        client.request("POST", "/api/v2/capture_requests", json={"capture_request": {}}, timeout=5)


# --- the rate limit ------------------------------------------------------------------------


def test_the_call_past_the_rate_limit_waits_for_a_slot(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    clock = FakeClock()
    client = logged_in(fake, store, clock=clock, sleep=clock.sleep, rate_limit=5)
    start = clock.now
    for _ in range(5):
        clock.now += 1
        client.request("GET", "/api/v3/jobs/42", timeout=120)
    assert clock.slept == []

    client.request("GET", "/api/v3/jobs/42", timeout=120)

    assert sum(clock.slept) == pytest.approx(start + 1 + 60 - (start + 5))  # until the first call is a minute old
    assert job_calls(fake) == [200] * 6


def test_a_wait_longer_than_the_timeout_is_a_retry_without_a_call(fake: FakeHover, store: Store) -> None:
    fake.add_job(42)
    clock = FakeClock()
    client = logged_in(fake, store, clock=clock, sleep=clock.sleep, rate_limit=5)
    for _ in range(5):
        client.request("GET", "/api/v3/jobs/42", timeout=10)
    with pytest.raises(Retry) as caught:
        client.request("GET", "/api/v3/jobs/42", timeout=10)
    assert caught.value.after == pytest.approx(60)
    assert clock.slept == [] and len(job_calls(fake)) == 5


def test_the_rate_limit_holds_across_threads() -> None:
    limiter = RateLimiter(5)
    outcomes: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        try:
            limiter.acquire(timeout=0)
            result = "ok"
        except Retry:
            result = "retry"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=take) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["ok"] * 5 + ["retry"] * 7


# --- the process's client ------------------------------------------------------------------


def test_the_shared_client_is_one_per_settings_and_closes_the_one_replaced_once_no_call_uses_it(
    fake: FakeHover, store: Store,
) -> None:
    fake.add_job(42)
    logged_in(fake, store).close()
    shared = SharedClient(store)
    with shared.use(settings(fake)) as first:
        with shared.use(settings(fake)) as same:
            assert same is first
        with shared.use(settings(fake, client_id="another-client")) as second:  # a reload changed the settings
            assert second is not first
            assert first.request("GET", "/api/v3/jobs/42", timeout=5)[0] == 200  # still in use: still open
    with pytest.raises(Retry, match="the client is closed"):
        first.request("GET", "/api/v3/jobs/42", timeout=5)
    with shared.use(settings(fake, client_id="another-client")) as current:
        assert current is second
        shared.close()  # the process stops while a call still uses it
        assert current.request("GET", "/api/v3/jobs/42", timeout=5)[0] == 200
    with pytest.raises(Retry, match="the client is closed"):
        second.request("GET", "/api/v3/jobs/42", timeout=5)
    assert job_calls(fake) == [200, 200]


# --- webhooks ------------------------------------------------------------------------------


def test_register_records_the_webhook_and_returns_its_secret(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    hook = client.register_webhook("https://hooks.example.com/hooks/hover", source="hover")
    sent = fake.webhooks[hook["id"]]
    assert hook["hmac_secret"] == sent["hmac_secret"] and sent["content_type"] == "json"
    assert [(r["webhook_id"], r["source"], r["url"]) for r in store.hover_webhooks()] == [
        (str(hook["id"]), "hover", "https://hooks.example.com/hooks/hover"),
    ]


def test_list_merges_every_page_with_the_stores_records(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    hooks = [client.register_webhook(f"https://hooks.example.com/{i}") for i in range(27)]  # two pages of 25
    client.verify_webhook(fake.code_for(hooks[0]["id"]), str(hooks[0]["id"]))
    store.save_hover_webhook("777", url="https://gone.example.com", last_error="hover: 404")

    rows = {r["id"]: r for r in client.list_webhooks()}

    assert len(rows) == 28 and all("hmac_secret" not in r for r in rows.values())
    assert rows[str(hooks[0]["id"])]["verified_at"] == fake.webhooks[hooks[0]["id"]]["verified_at"]
    assert rows[str(hooks[1]["id"])]["verified_at"] is None and rows[str(hooks[26]["id"])]["at_hover"] is True
    assert rows["777"] == {"id": "777", "url": "https://gone.example.com", "source": None, "verified_at": None,
                           "verify_method": None, "last_error": "hover: 404", "at_hover": False}
    assert rows[str(hooks[0]["id"])]["verify_method"] == "PUT"
    assert [c.path for c in fake.api_calls("/api/v2/webhooks") if c.method == "GET"] == ["/api/v2/webhooks"] * 2


def test_verify_records_verified_at_or_the_last_error(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    hook = client.register_webhook("https://hooks.example.com/x")
    with pytest.raises(Fail, match="404"):
        client.verify_webhook("wrong-code", str(hook["id"]))
    [row] = store.hover_webhooks()
    assert row["verified_at"] is None and "404" in row["last_error"]

    assert client.verify_webhook(fake.code_for(hook["id"]), str(hook["id"])) == 200

    [row] = store.hover_webhooks()
    assert row["verified_at"] == pytest.approx(time.time(), abs=5) and row["last_error"] is None
    assert row["verify_method"] == "PUT"
    assert fake.webhooks[hook["id"]]["verified_at"] is not None


def test_verify_tries_post_once_when_put_is_answered_405(store: Store) -> None:
    with FakeHover(verify_method="POST") as fake:
        client = logged_in(fake, store)
        hook = client.register_webhook("https://hooks.example.com/x")
        assert client.verify_webhook(fake.code_for(hook["id"]), str(hook["id"])) == 200
        assert [(c.method, c.status) for c in fake.api_calls("/api/v2/webhooks/")] == [("PUT", 405), ("POST", 200)]
        [row] = store.hover_webhooks()
        assert row["verify_method"] == "POST" and row["verified_at"] is not None
        with pytest.raises(Fail, match="404"):  # POST once: a refused POST is the answer
            client.verify_webhook("wrong-code", str(hook["id"]))
        assert [c.method for c in fake.api_calls("/api/v2/webhooks/wrong-code")] == ["PUT", "POST"]


def test_verify_does_not_try_post_after_other_refusals(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    with pytest.raises(Fail, match="404"):
        client.verify_webhook("wrong-code")
    assert [c.method for c in fake.api_calls("/api/v2/webhooks/wrong-code")] == ["PUT"]


# --- the hover action ----------------------------------------------------------------------


def context(event: Event, store: Store | None, client: HoverClient | None) -> Context:
    return Context(
        event=event, run_id="r1", step_id="job", attempt=1, idempotency_key="r1-job",
        logger=logging.getLogger("test"), rule="hover-job", timeout=10, store=store, hover=client,
    )


def run_action(params: dict[str, Any], ctx: Context) -> Any:
    return HoverAction().run(HoverParams.model_validate(params), ctx)


def test_the_action_fetches_a_job(fake: FakeHover, store: Store) -> None:
    fake.add_job(19402492, models=2, failed_models=1)
    client = logged_in(fake, store)
    event = Event(
        source="hover", type="job-state-changed-v2", body={"event": "job-state-changed-v2", "job_id": 19402492}
    )

    output = run_action({"method": "get", "path": "/api/v3/jobs/19402492"}, context(event, store, client))

    assert set(output) == {"status", "json"} and output["status"] == 200
    models = output["json"]["models"]
    assert [m["state"] for m in models] == ["complete", "failed"]
    links = {a["name"]: a["url"] for a in models[0]["artifacts"]}
    assert links["measurements_json"].startswith(fake.url + "/api/v3/models/")
    json.dumps(output)  # a step output is JSON


def test_the_action_fails_clearly(fake: FakeHover, store: Store) -> None:
    event = Event(source="hover", type="x", body={})
    with pytest.raises(Fail, match="no Hover client"):
        run_action({"path": "/api/v3/jobs/1"}, context(event, store, None))
    client = logged_in(fake, store)
    with pytest.raises(Fail, match="404"):
        run_action({"path": "/api/v3/jobs/1"}, context(event, store, client))


@pytest.mark.parametrize(("path", "message"), [
    ("/api/v2/webhooks/../../v3/jobs/4242/archive", "must not contain '.' or '..' segments"),
    ("/api/v3/jobs/1/..", "must not contain '.' or '..' segments"),
    ("/api/v3/./jobs", "must not contain '.' or '..' segments"),
    ("/api/v3/jobs/%2e%2E/x", "must not contain '.' or '..' segments"),
    ("/api/v3/jobs/%2E/x", "must not contain '.' or '..' segments"),
    ("/api/v2/webhooks/x?y=/verify", "must not contain '?' or '#': give query parameters in params"),
    ("/api/v3/jobs/1#frag", "must not contain '?' or '#'"),
    ("/api/v3/jobs//1", "must not contain empty segments"),
    ("/api/v3/jobs/..\\x", "must not contain a backslash"),
    ("//evil.example/api", "starting with a single '/'"),
    ("https://evil.example/api", "starting with a single '/'"),
])
def test_the_action_refuses_a_path_that_could_leave_its_endpoint(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        HoverParams.model_validate({"path": path})


@pytest.mark.parametrize("path", [
    "/api/v3/jobs/19402492", "/api/v2/webhooks/..%2F..%2Fv3%2Fjobs/verify", "/api/v3/jobs/...", "/api/v3/jobs/a.b",
    "/api/v3/jobs/",
])
def test_the_action_takes_a_clean_path(path: str) -> None:
    assert HoverParams.model_validate({"path": path}).path == path


def test_the_verification_handshake_records_the_webhook(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    hook = client.register_webhook("https://hooks.example.com/hooks/hover")
    code = fake.code_for(hook["id"])
    event = Event(source="hover", type="webhook-verification-code",
                  body={"event": "webhook-verification-code", "code": code, "webhook_id": hook["id"]})

    output = run_action({"method": "PUT", "path": f"/api/v2/webhooks/{code}/verify"}, context(event, store, client))

    assert output == {"status": 200, "json": None, "method": "PUT"}
    [row] = store.hover_webhooks()
    assert row["webhook_id"] == str(hook["id"]) and row["source"] == "hover"
    assert row["verified_at"] == pytest.approx(time.time(), abs=5) and row["last_error"] is None
    assert row["verify_method"] == "PUT"
    assert fake.webhooks[hook["id"]]["verified_at"] is not None


def test_the_handshake_posts_when_put_is_answered_405(store: Store) -> None:
    with FakeHover(verify_method="POST") as fake:
        client = logged_in(fake, store)
        webhook_id, code = fake.add_webhook("https://hooks.example.com/hooks/hover")
        event = Event(source="hover", type="webhook-verification-code",
                      body={"event": "webhook-verification-code", "code": code, "webhook_id": webhook_id})

        output = run_action({"method": "PUT", "path": f"/api/v2/webhooks/{code}/verify"}, context(event, store, client))

        assert output == {"status": 200, "json": None, "method": "POST"}
        assert fake.webhooks[webhook_id]["verified_at"] is not None
        [row] = store.hover_webhooks()  # verified: now it is recorded, with the method that worked
        assert (row["webhook_id"], row["verify_method"]) == (str(webhook_id), "POST")


def test_a_failed_handshake_records_the_last_error_of_a_known_webhook_only(fake: FakeHover, store: Store) -> None:
    client = logged_in(fake, store)
    event = Event(source="hover", type="webhook-verification-code",
                  body={"event": "webhook-verification-code", "code": "stale", "webhook_id": 555})
    with pytest.raises(Fail, match="404"):
        run_action({"method": "PUT", "path": "/api/v2/webhooks/stale/verify"}, context(event, store, client))
    assert store.hover_webhooks() == []  # an event alone makes no webhook appear

    store.save_hover_webhook("555", source="hover", url="https://hooks.example.com/hooks/hover")
    with pytest.raises(Fail, match="404"):
        run_action({"method": "PUT", "path": "/api/v2/webhooks/stale/verify"}, context(event, store, client))
    [row] = store.hover_webhooks()
    assert (row["webhook_id"], row["verified_at"]) == ("555", None) and "404" in row["last_error"]


def test_a_handshake_without_a_login_waits_for_it(fake: FakeHover, store: Store) -> None:
    client = HoverClient(settings(fake), store)
    event = Event(source="hover", type="webhook-verification-code",
                  body={"event": "webhook-verification-code", "code": "c0de", "webhook_id": 230293})
    with pytest.raises(Retry) as waiting:
        run_action({"method": "PUT", "path": "/api/v2/webhooks/c0de/verify"}, context(event, store, client))
    assert str(waiting.value) == NOT_LOGGED_IN + "; the handshake runs as soon as the account is connected"
    assert waiting.value.after == 600 and fake.calls == [] and store.hover_webhooks() == []
    with pytest.raises(Fail, match="not logged in"):  # other calls fail at once, as before
        run_action({"path": "/api/v3/jobs/1"}, context(event, store, client))


def test_other_calls_record_nothing(fake: FakeHover, store: Store) -> None:
    fake.add_job(7)
    client = logged_in(fake, store)
    event = Event(source="hover", type="job-state-changed", body={"webhook_id": 1, "job_id": 7})
    run_action({"path": "/api/v3/jobs/7"}, context(event, store, client))
    assert store.hover_webhooks() == []


# --- hookwise hover ... ----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, fake: FakeHover) -> Path:
    path = tmp_path / "hookwise.yaml"
    path.write_text(
        "store: sqlite:///data/hookwise.db\n"
        f"hover: {{base_url: '{fake.url}', client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET},\n"
        f"         redirect_uri: '{REDIRECT_URI}'}}\n"
    )
    return path


def cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(hover_group, list(args), input=input)


def cli_store(config: Path) -> Store:
    return open_store(f"sqlite:///{config.parent / 'data' / 'hookwise.db'}")


def test_cli_login_with_a_code(fake: FakeHover, config: Path) -> None:
    result = cli("login", "-c", str(config), "--code", fake.authorize())
    assert result.exit_code == 0, result.output
    assert f"{fake.url}/oauth/authorize?client_id={CLIENT_ID}" in result.output
    assert "logged in; the access token expires at 20" in result.output
    s = cli_store(config)
    tokens = s.hover_tokens()
    s.close()
    assert tokens is not None and fake.access_token_valid(tokens.access_token)
    assert tokens.access_token not in result.output and tokens.refresh_token not in result.output


def test_cli_login_asks_for_the_code_and_takes_the_redirect_url(fake: FakeHover, config: Path) -> None:
    result = cli("login", "-c", str(config), input=f"{REDIRECT_URI}?code={fake.authorize()}\n")
    assert result.exit_code == 0, result.output
    assert "Paste the code" in result.output and "logged in;" in result.output


def test_cli_login_refuses_a_url_of_another_attempt(fake: FakeHover, config: Path) -> None:
    result = cli("login", "-c", str(config), "--code", f"{REDIRECT_URI}?code={fake.authorize()}&state=other")
    assert isinstance(result.exception, UsageError) and "another login attempt" in str(result.exception)


def test_cli_login_names_the_missing_settings(tmp_path: Path, fake: FakeHover) -> None:
    path = tmp_path / "hookwise.yaml"
    path.write_text(f"store: sqlite:///hookwise.db\nhover: {{base_url: '{fake.url}', client_id: x}}\n")
    result = cli("login", "-c", str(path), "--code", "c")
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == "hover login needs hover.client_secret, hover.redirect_uri in the config"


def test_cli_a_refused_code_is_one_error(fake: FakeHover, config: Path) -> None:
    result = cli("login", "-c", str(config), "--code", "not-a-code")
    assert type(result.exception) is HookwiseError and "invalid_grant" in str(result.exception)


def test_cli_register_list_and_verify(fake: FakeHover, config: Path) -> None:
    assert cli("login", "-c", str(config), "--code", fake.authorize()).exit_code == 0

    registered = cli("register", "-c", str(config), "https://hooks.example.com/hooks/hover")
    assert registered.exit_code == 0, registered.output
    [(webhook_id, hook)] = fake.webhooks.items()
    assert f"webhook {webhook_id} registered" in registered.output
    assert f"hmac_secret: {hook['hmac_secret']}" in registered.output and "${HOVER_HMAC_SECRET}" in registered.output

    listed = cli("webhooks", "-c", str(config))
    header, row = listed.output.splitlines()
    assert header.split() == ["id", "url", "verified_at", "verify_method", "last_error"]
    assert row.split() == [str(webhook_id), "https://hooks.example.com/hooks/hover", "-", "-", "-"]
    assert hook["hmac_secret"] not in listed.output

    verified = cli("verify", "-c", str(config), fake.code_for(webhook_id), "--webhook-id", str(webhook_id))
    assert verified.exit_code == 0 and f"webhook {webhook_id} verified" in verified.output

    [entry] = json.loads(cli("webhooks", "-c", str(config), "--json").output)
    assert entry["id"] == str(webhook_id) and entry["verified_at"] == hook["verified_at"] is not None
    assert entry["verify_method"] == "PUT"
    assert cli("webhooks", "-c", str(config)).output.splitlines()[1].split()[3] == "PUT"


def test_cli_errors_are_hookwise_errors(fake: FakeHover, config: Path) -> None:
    result = cli("webhooks", "-c", str(config))
    assert type(result.exception) is HookwiseError and str(result.exception) == NOT_LOGGED_IN

    assert cli("login", "-c", str(config), "--code", fake.authorize()).exit_code == 0
    result = cli("verify", "-c", str(config), "no-such-code")
    assert type(result.exception) is HookwiseError and "404" in str(result.exception)

    fake.fail_next(1, 503)
    result = cli("webhooks", "-c", str(config))
    assert type(result.exception) is HookwiseError and "try again" in str(result.exception)

    result = cli("register", "-c", str(config), "ftp://x")
    assert isinstance(result.exception, UsageError)


def _redirect_location(url: str) -> str:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect()).open(url, timeout=5).close()
    except urllib.error.HTTPError as exc:
        with exc:
            assert exc.code == 302
            return str(exc.headers["Location"])
    raise AssertionError("expected a redirect")
