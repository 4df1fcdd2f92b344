"""The http action against a real HTTP server on loopback (pytest-httpserver, threaded).

Loopback is exactly what the SSRF guard refuses by default, so every test that means to
reach the server allows it explicitly (``allow_hosts: [127.0.0.1]`` or ``allow_private``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from ipaddress import ip_address
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from actions.http import (
    MAX_BODY,
    HttpAction,
    HttpParams,
    _first_request,
    _redirected,
    refusal_reason,
    retry_after,
)
from engine.errors import ConfigError, Fail, Retry
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context
from engine.secrets import safe_url

from .malicious import RawServer, reply

# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[HTTPServer]:
    srv = HTTPServer(host="127.0.0.1", threaded=True)  # threaded: a slow handler must not block the next test
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def web(server: HTTPServer) -> Iterator[HTTPServer]:
    yield server
    server.clear()


@pytest.fixture
def make() -> Iterator[Callable[..., HttpAction]]:
    built: list[HttpAction] = []

    def build(**http: Any) -> HttpAction:
        action = HttpAction(Settings.model_validate({"http": http}))
        built.append(action)
        return action

    yield build
    for action in built:
        action.close()


@pytest.fixture
def action(make: Callable[..., HttpAction]) -> HttpAction:
    return make(allow_hosts=["127.0.0.1"])


def context(key: str = "run-1-call") -> Context:
    event = Event(source="test", type="thing.happened", body={"id": 1}, id="ev-1")
    return Context(
        event=event, run_id="run-1", step_id="call", attempt=1, idempotency_key=key,
        logger=logging.getLogger("test.http")
    )


def call(action: HttpAction, ctx: Context | None = None, **params: Any) -> dict[str, Any]:
    return action.run(HttpParams.model_validate(params), ctx or context())


def echo(request: Request) -> Response:
    """Answer with what arrived, as JSON."""
    seen = {
        "method": request.method,
        "path": request.path,
        "args": request.args.to_dict(flat=False),
        # werkzeug's Headers iterate as (name, value) pairs: keys() gives the names
        "headers": {k.lower(): request.headers.getlist(k) for k in request.headers.keys()},  # noqa: SIM118
        "body": request.get_data(as_text=True),
    }
    return Response(json.dumps(seen), content_type="application/json")


def echoed(web: HTTPServer, action: HttpAction, path: str = "/echo", **params: Any) -> dict[str, Any]:
    web.expect_request(path).respond_with_handler(echo)
    out = call(action, url=web.url_for(path), **params)
    assert out["status"] == 200
    return out["json"]  # type: ignore[no-any-return]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- requests and outputs ----------------------------------------------------------------


def test_get_returns_status_lowercase_headers_json_and_text(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/thing", method="GET").respond_with_json({"ok": True, "n": [1, 2]}, headers={"X-Thing": "a"})
    out = call(action, url=web.url_for("/thing"))
    assert out["status"] == 200
    assert out["json"] == {"ok": True, "n": [1, 2]}
    assert json.loads(out["text"]) == out["json"]
    assert out["headers"]["x-thing"] == "a"
    assert out["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in out["headers"])
    assert out["truncated"] is False


def test_a_body_that_is_not_json_gives_text_and_json_none(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/plain").respond_with_data("héllo, world", content_type="text/plain; charset=utf-8")
    out = call(action, url=web.url_for("/plain"))
    assert out["json"] is None
    assert out["text"] == "héllo, world"


def test_a_named_charset_decodes_the_text(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/latin").respond_with_data(
        "café".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
    )
    assert call(action, url=web.url_for("/latin"))["text"] == "café"


def test_query_params_are_added_to_the_url_query(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/q").respond_with_handler(echo)
    out = call(action, url=web.url_for("/q") + "?a=1", params={"b": [1, 2], "c": True, "d": "x y"})
    assert out["json"]["args"] == {"a": ["1"], "b": ["1", "2"], "c": ["true"], "d": ["x y"]}


def test_post_json_sends_the_value_as_json(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, method="post", json={"job": 42, "tags": ["a"], "ok": None})
    assert seen["method"] == "POST"
    assert json.loads(seen["body"]) == {"job": 42, "tags": ["a"], "ok": None}
    assert seen["headers"]["content-type"] == ["application/json"]


def test_post_form_is_urlencoded_and_lists_repeat(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, method="POST", form={"a": "x y", "n": [1, 2], "flag": False})
    assert seen["body"] == "a=x+y&n=1&n=2&flag=false"
    assert seen["headers"]["content-type"] == ["application/x-www-form-urlencoded"]


def test_a_text_body_is_sent_as_is_and_a_step_content_type_wins(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, method="PUT", body="<x>ü</x>", headers={"content-type": "application/xml"})
    assert seen["method"] == "PUT"
    assert seen["body"] == "<x>ü</x>"
    assert seen["headers"]["content-type"] == ["application/xml"]


def test_headers_and_user_agent_are_sent(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, headers={"X-Custom": "v1"})
    assert seen["headers"]["x-custom"] == ["v1"]
    assert seen["headers"]["user-agent"][0].startswith("hookwise/")


def test_basic_auth_arrives(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, auth={"basic": ["ann", "pä:ss"]})
    assert seen["headers"]["authorization"] == ["Basic YW5uOnDDpDpzcw=="]  # base64("ann:pä:ss" in UTF-8)


def test_bearer_auth_arrives(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, auth={"bearer": "tok-123"})
    assert seen["headers"]["authorization"] == ["Bearer tok-123"]


def test_idempotency_key_is_the_contexts_and_stable_across_attempts(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    ctx = context("run-7-notify")
    first = call(action, ctx, url=web.url_for("/echo"))["json"]
    again = call(action, ctx, url=web.url_for("/echo"))["json"]
    assert first["headers"]["idempotency-key"] == ["run-7-notify"]
    assert again["headers"]["idempotency-key"] == ["run-7-notify"]


def test_a_step_idempotency_key_header_is_not_overridden(web: HTTPServer, action: HttpAction) -> None:
    seen = echoed(web, action, headers={"idempotency-KEY": "mine"})
    assert seen["headers"]["idempotency-key"] == ["mine"]


# -- statuses: expect, Retry and Fail ------------------------------------------------------


def test_expect_makes_a_listed_status_a_success(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/gone").respond_with_data("nope", status=404)
    out = call(action, url=web.url_for("/gone"), expect=[404, 410])
    assert out["status"] == 404
    assert out["text"] == "nope"


def test_expect_makes_an_unlisted_2xx_a_failure(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/ok").respond_with_data("fine", status=200)
    with pytest.raises(Fail, match=r"returned 200 OK: fine \(expected 201\)"):
        call(action, url=web.url_for("/ok"), expect=201)


def test_404_fails_with_the_status_and_the_start_of_the_body(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/missing").respond_with_data("no such job\n" + "x" * 5000, status=404)
    with pytest.raises(Fail) as caught:
        call(action, url=web.url_for("/missing"))
    message = str(caught.value)
    assert message.startswith(f"http: GET {web.url_for('/missing')} returned 404 NOT FOUND: no such job x")
    assert "expected 2xx" in message
    assert len(message) < 400


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_without_a_delay_of_its_own(web: HTTPServer, action: HttpAction, status: int) -> None:
    web.expect_request("/down").respond_with_data("busy", status=status)
    with pytest.raises(Retry, match=rf"returned {status} .*: busy") as caught:
        call(action, url=web.url_for("/down"))
    assert caught.value.after is None


def test_503_with_retry_after_seconds(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/later").respond_with_data("", status=503, headers={"Retry-After": "120"})
    with pytest.raises(Retry) as caught:
        call(action, url=web.url_for("/later"))
    assert caught.value.after == 120.0


def test_429_with_retry_after_http_date(web: HTTPServer, action: HttpAction) -> None:
    when = datetime.now(UTC) + timedelta(seconds=300)
    web.expect_request("/slow-down").respond_with_data(
        "", status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    with pytest.raises(Retry, match="returned 429") as caught:
        call(action, url=web.url_for("/slow-down"))
    assert caught.value.after is not None
    assert 290 <= caught.value.after <= 300


NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "after"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0),
        ("Fri, 02 Jan 2026 03:00:00 GMT", 0.0),  # in the past
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("1.5", None),
    ],
)
def test_retry_after_values(header: str | None, after: float | None) -> None:
    assert retry_after(header, now=NOW) == after


def test_connection_refused_is_retried(action: HttpAction) -> None:
    with pytest.raises(Retry, match=r"cannot connect: Connection refused"):
        call(action, url=f"http://127.0.0.1:{closed_port()}/x", timeout=2)


def test_a_read_timeout_is_retried(web: HTTPServer, action: HttpAction) -> None:
    answer = threading.Event()

    def slow(request: Request) -> Response:
        answer.wait(10)
        return Response("late")

    web.expect_request("/slow").respond_with_handler(slow)
    with pytest.raises(Retry, match=r"timed out after 0.1s waiting for the response"):
        call(action, url=web.url_for("/slow"), timeout=0.1)
    # The late answer is logged before the test ends, not in a later test's log of the server.
    answer.set()
    deadline = time.monotonic() + 10
    while not web.log and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.path for r, _ in web.log] == ["/slow"]


def test_a_body_over_1_mib_is_cut_and_marked_truncated(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/big").respond_with_data("[" + "1," * MAX_BODY + "1]", content_type="application/json")
    out = call(action, url=web.url_for("/big"))
    assert out["truncated"] is True
    assert len(out["text"]) == MAX_BODY
    assert out["json"] is None


def test_a_body_of_exactly_1_mib_is_whole(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/full").respond_with_data('"' + "a" * (MAX_BODY - 2) + '"', content_type="application/json")
    out = call(action, url=web.url_for("/full"))
    assert out["truncated"] is False
    assert out["json"] == "a" * (MAX_BODY - 2)


# -- redirects -----------------------------------------------------------------------------


def redirect(web: HTTPServer, path: str, status: int, location: str) -> None:
    web.expect_request(path).respond_with_response(Response("", status=status, headers={"Location": location}))


def test_a_redirect_is_not_followed_by_default(web: HTTPServer, action: HttpAction) -> None:
    redirect(web, "/old", 302, "/echo")
    web.expect_request("/echo").respond_with_handler(echo)
    with pytest.raises(Fail, match=r"returned 302 FOUND \(expected 2xx; it is a redirect: set follow_redirects"):
        call(action, url=web.url_for("/old"))
    assert [r.path for r, _ in web.log] == ["/old"]


def test_an_unfollowed_redirect_can_be_expected(web: HTTPServer, action: HttpAction) -> None:
    redirect(web, "/old", 301, "/echo")
    out = call(action, url=web.url_for("/old"), expect=[301])
    assert out["status"] == 301
    assert out["headers"]["location"] == "/echo"


@pytest.mark.parametrize(
    ("status", "method", "arrives_as", "body_kept"),
    [
        (301, "DELETE", "DELETE", True),  # only POST turns into GET on 301/302 (fetch spec)
        (302, "POST", "GET", False),
        (301, "POST", "GET", False),
        (302, "PUT", "PUT", True),
        (303, "PUT", "GET", False),
        (307, "POST", "POST", True),
        (308, "PATCH", "PATCH", True),
    ],
)
def test_redirects_followed_when_asked_with_browser_method_rules(
    web: HTTPServer, action: HttpAction, status: int, method: str, arrives_as: str, body_kept: bool
) -> None:
    redirect(web, "/from", status, "/echo")
    web.expect_request("/echo").respond_with_handler(echo)
    out = call(action, url=web.url_for("/from"), method=method, json={"a": 1}, follow_redirects=True)
    seen = out["json"]
    assert seen["method"] == arrives_as
    assert seen["body"] == ('{"a": 1}' if body_kept else "")
    assert ("content-type" in seen["headers"]) is body_kept
    assert seen["headers"]["idempotency-key"] == ["run-1-call"]


def test_authorization_is_kept_on_the_same_host_and_dropped_on_another(
    web: HTTPServer, make: Callable[..., HttpAction]
) -> None:
    action = make(allow_private=True)
    web.expect_request("/echo").respond_with_handler(echo)
    redirect(web, "/same", 302, "/echo")
    redirect(web, "/other", 302, f"http://localhost:{web.port}/echo")
    same = call(action, url=web.url_for("/same"), auth={"bearer": "t0k"}, follow_redirects=True)["json"]
    other = call(action, url=web.url_for("/other"), auth={"bearer": "t0k"}, follow_redirects=True)["json"]
    assert same["headers"]["authorization"] == ["Bearer t0k"]
    assert "authorization" not in other["headers"]


CREDENTIALS = {"Cookie": "sid=1", "X-Api-Key": "k-1", "X-Crm": "from-a-s3cret", "Proxy-Authorization": "Basic eDp5"}
NOT_CREDENTIALS = {"X-Trace": "t-1", "Accept": "application/json"}


def secret_context() -> Context:
    """A step whose config holds the secret ``s3cret`` (as the worker's context says)."""
    return replace(context(), secret=lambda text: "s3cret" in text)


def test_credentials_are_kept_on_the_same_origin(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    redirect(web, "/same", 307, "/echo")
    seen = call(action, secret_context(), url=web.url_for("/same"), auth={"bearer": "t0k"}, follow_redirects=True,
                headers={**CREDENTIALS, **NOT_CREDENTIALS})["json"]["headers"]
    assert seen["authorization"] == ["Bearer t0k"]
    assert {name.lower(): [value] for name, value in {**CREDENTIALS, **NOT_CREDENTIALS}.items()}.items() <= seen.items()


def test_credentials_are_dropped_on_a_hop_to_another_host(web: HTTPServer, make: Callable[..., HttpAction]) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    redirect(web, "/other", 302, f"http://localhost:{web.port}/echo")
    seen = call(make(allow_private=True), secret_context(), url=web.url_for("/other"), auth={"bearer": "t0k"},
                follow_redirects=True, headers={**CREDENTIALS, **NOT_CREDENTIALS})["json"]["headers"]
    assert {"authorization", "cookie", "x-api-key", "x-crm", "proxy-authorization"}.isdisjoint(seen)
    assert seen["x-trace"] == ["t-1"] and seen["accept"] == ["application/json"]
    assert seen["idempotency-key"] == ["run-1-call"]


def test_credentials_are_dropped_on_a_hop_to_another_port(web: HTTPServer, action: HttpAction) -> None:
    other = RawServer([(reply("200 OK", b"{}"), "keep")])
    try:
        redirect(web, "/port", 308, other.url("/there"))
        call(action, secret_context(), url=web.url_for("/port"), method="POST", json={}, auth={"basic": ["u", "p"]},
             follow_redirects=True, headers={**CREDENTIALS, **NOT_CREDENTIALS})
        lines = [line.lower() for line in other.requests[0].split(b"\r\n")]
    finally:
        other.stop()
    assert lines[0] == b"post /there http/1.1"
    dropped = (b"authorization", b"cookie", b"x-api-key", b"x-crm", b"proxy-auth")
    assert not [line for line in lines if line.startswith(dropped)]
    assert b"x-trace: t-1" in lines


@pytest.mark.parametrize(
    ("old", "new", "dropped"),
    [
        ("http://h.example/a", "https://h.example/b", True),  # scheme (and default port)
        ("https://h.example/a", "http://h.example:443/b", True),  # scheme alone
        ("https://h.example/a", "https://h.example:8443/b", True),  # port
        ("https://h.example/a", "https://H.EXAMPLE:443/b", False),  # the same origin, written otherwise
        ("https://h.example/a", "/b", False),
    ],
)
def test_the_origin_is_scheme_host_and_port(old: str, new: str, dropped: bool) -> None:
    params = {"url": old, "headers": {"Cookie": "c", "X-Trace": "t"}, "auth": {"bearer": "b"}}
    first = _first_request(HttpParams.model_validate(params), "key", None)
    hop = _redirected(first, 302, new)
    assert ("Authorization" not in hop.headers and "Cookie" not in hop.headers) is dropped
    assert hop.headers["X-Trace"] == "t"


def test_userinfo_in_a_redirect_becomes_basic_auth_for_that_hop(
    web: HTTPServer, make: Callable[..., HttpAction],
) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    redirect(web, "/ui", 302, f"http://bob:pw@localhost:{web.port}/echo")
    out = call(make(allow_private=True), url=web.url_for("/ui"), auth={"bearer": "t0k"}, follow_redirects=True)
    seen = out["json"]["headers"]
    assert seen["authorization"] == ["Basic Ym9iOnB3"]  # bob:pw, not the first origin's bearer token


def test_a_location_with_spaces_is_encoded(web: HTTPServer, action: HttpAction) -> None:
    redirect(web, "/sp", 302, "/a b?c d")
    web.expect_request("/a b").respond_with_handler(echo)
    call(action, url=web.url_for("/sp"), follow_redirects=True)
    request = web.log[-1][0]
    assert request.environ["RAW_URI"] == "/a%20b?c%20d"


def test_a_location_with_control_characters_is_refused() -> None:
    server = RawServer([(b"HTTP/1.1 302 Found\r\nLocation: /a\x01b\r\nContent-Length: 0\r\n\r\n", "keep")])
    action = HttpAction(Settings.model_validate({"http": {"allow_hosts": ["127.0.0.1"]}}))
    try:
        with pytest.raises(Fail, match="redirected to a Location with control characters"):
            call(action, url=server.url("/x"), follow_redirects=True)
    finally:
        action.close()
        server.stop()
    assert len(server.requests) == 1


def test_more_than_10_redirects_fail(web: HTTPServer, action: HttpAction) -> None:
    redirect(web, "/loop", 302, "/loop")
    with pytest.raises(Fail, match="stopped after 10 redirects"):
        call(action, url=web.url_for("/loop"), follow_redirects=True)
    assert len(web.log) == 11


def test_a_redirect_to_another_scheme_fails(web: HTTPServer, action: HttpAction) -> None:
    redirect(web, "/ftp", 302, "ftp://example.com/file")
    with pytest.raises(Fail, match="not an http"):
        call(action, url=web.url_for("/ftp"), follow_redirects=True)


# -- the SSRF guard ----------------------------------------------------------------------


def test_loopback_is_refused_by_default(web: HTTPServer) -> None:
    action = HttpAction(None)  # no config: the defaults, allow_private false
    try:
        web.expect_request("/echo").respond_with_handler(echo)
        with pytest.raises(Fail) as caught:
            call(action, url=web.url_for("/echo"))
    finally:
        action.close()
    assert str(caught.value) == (
        "http: refusing to connect to 127.0.0.1 (a loopback address); "
        "set http.allow_private or add the host to http.allow_hosts"
    )
    assert web.log == []


def test_a_host_name_is_judged_by_what_it_resolves_to_before_connecting(
    web: HTTPServer, make: Callable[..., HttpAction], connects: list[Any],
) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    with pytest.raises(Fail, match=r"refusing to connect to localhost at (127\.0\.0\.1|::1) \(a loopback address\)"):
        call(make(), url=f"http://localhost:{web.port}/echo")
    assert connects == []  # not even a TCP handshake towards it
    assert web.log == []


def test_https_is_refused_before_the_tls_handshake(web: HTTPServer, make: Callable[..., HttpAction]) -> None:
    # The server speaks plain HTTP: a handshake attempt would end in an SSL error (Retry).
    with pytest.raises(Fail, match=r"refusing to connect to localhost at .* \(a loopback address\)"):
        call(make(), url=f"https://localhost:{web.port}/echo")


def test_allow_private_lets_loopback_through(web: HTTPServer, make: Callable[..., HttpAction]) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    assert call(make(allow_private=True), url=f"http://localhost:{web.port}/echo")["status"] == 200


def test_allow_hosts_matches_the_url_host_case_insensitively(web: HTTPServer, make: Callable[..., HttpAction]) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    assert call(make(allow_hosts=["LocalHost"]), url=f"http://localhost:{web.port}/echo")["status"] == 200
    with pytest.raises(Fail, match="refusing"):
        call(make(allow_hosts=["localhost"]), url=f"http://127.0.0.1:{web.port}/echo")


def test_allow_hosts_with_a_port_allows_that_port_only(web: HTTPServer, make: Callable[..., HttpAction]) -> None:
    web.expect_request("/echo").respond_with_handler(echo)
    assert call(make(allow_hosts=[f"127.0.0.1:{web.port}"]), url=web.url_for("/echo"))["status"] == 200
    with pytest.raises(Fail, match="refusing"):
        call(make(allow_hosts=[f"127.0.0.1:{web.port + 1}"]), url=web.url_for("/echo"))


# "" is dropped by the config: an unset ${VAR:-}
@pytest.mark.parametrize("entry", ["host:port", "user@host", "host/path"])
def test_a_bad_allow_hosts_entry_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"http\.allow_hosts\[0\]: .* is not a host or host:port"):
        HttpAction(Settings.model_validate({"http": {"allow_hosts": [entry]}}))


def test_a_redirect_from_an_allowed_host_to_a_refused_address_is_refused(
    web: HTTPServer, make: Callable[..., HttpAction]
) -> None:
    action = make(allow_hosts=["localhost"])
    redirect(web, "/hop", 302, f"http://127.0.0.1:{web.port}/echo")
    web.expect_request("/echo").respond_with_handler(echo)
    with pytest.raises(Fail, match=r"refusing to connect to 127\.0\.0\.1 \(a loopback address\)"):
        call(action, url=f"http://localhost:{web.port}/hop", follow_redirects=True)
    assert [r.path for r, _ in web.log] == ["/hop"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "a cloud metadata address"),
        ("http://100.100.100.200/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/", "a cloud metadata address"),
        ("http://[::1]:8080/", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "a loopback address"),
        ("http://0.0.0.0:8080/", "an unspecified address"),
        ("http://10.1.2.3/", "a private address"),
        ("https://[fe80::1]/", "a link-local address"),
    ],
)
def test_ip_literals_are_refused_without_connecting(
    make: Callable[..., HttpAction], connects: list[Any], url: str, reason: str
) -> None:
    with pytest.raises(Fail, match=rf"refusing to connect to \S+ \({reason}\)"):
        call(make(), url=url, timeout=1)
    assert connects == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.9.9.9", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.1.1", "a link-local address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("100.64.0.1", "a non-public address"),
        ("224.0.0.251", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("8.8.8.8", None),
        ("::ffff:8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_reasons(address: str, reason: str | None) -> None:
    assert refusal_reason(ip_address(address)) == reason


def test_proxies_from_the_environment_are_ignored(
    web: HTTPServer, action: HttpAction, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    web.expect_request("/echo").respond_with_handler(echo)
    assert call(action, url=web.url_for("/echo"))["status"] == 200


def test_cookies_are_not_carried_between_calls(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/set").respond_with_response(Response("", headers={"Set-Cookie": "sid=abc; Path=/"}))
    web.expect_request("/echo").respond_with_handler(echo)
    call(action, url=web.url_for("/set"))
    assert "cookie" not in call(action, url=web.url_for("/echo"))["json"]["headers"]


# -- no secrets in messages ----------------------------------------------------------------


def test_userinfo_and_query_are_masked_in_messages(action: HttpAction) -> None:
    with pytest.raises(Retry) as caught:
        call(action, url=f"http://alice-user:s3cret@127.0.0.1:{closed_port()}/hook?token=t0psecret", timeout=2)
    message = str(caught.value)
    assert "http://127.0.0.1:" in message
    assert "/hook?****" in message
    assert "s3cret" not in message and "alice-user" not in message and "t0psecret" not in message


def test_auth_and_headers_stay_out_of_failure_messages(web: HTTPServer, action: HttpAction) -> None:
    web.expect_request("/nope").respond_with_data("denied", status=403)
    with pytest.raises(Fail) as caught:
        call(action, url=web.url_for("/nope"), auth={"bearer": "tok-SECRET"}, headers={"X-Api-Key": "key-SECRET"})
    assert "SECRET" not in str(caught.value)
    assert "returned 403 FORBIDDEN: denied" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pass@host.example/p?q=1#frag", "https://****@host.example/p?****"),
        ("https://token@host.example:8443/", "https://****@host.example:8443/"),
        ("http://host.example/path", "http://host.example/path"),
    ],
)
def test_safe_url(url: str, shown: str) -> None:
    assert safe_url(url) == shown
