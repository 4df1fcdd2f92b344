"""The receiver against arbitrary requests (hypothesis): bytes, JSON of every shape (deep,
NaN, lone surrogates), content types, query strings and headers (repeated ones too), sent
over real HTTP to the app on a real SQLite store. Whatever arrives, the answer is never a
5xx, and every 2xx names an event that is stored and reads back through the store and the
API's event detail."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .test_receiver import Served

# --- what a sender may send -----------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\ufffd", "\x00", "kind", math.nan, math.inf, -math.inf]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    objects = st.dictionaries(st.sampled_from(["kind", "type", "id", "x"]), json_values, max_size=5)
    value = draw(st.one_of(objects, json_values))
    if isinstance(value, dict) and draw(st.booleans()):  # the open source's event type: stored in a column of its own
        value["kind"] = draw(st.sampled_from(["\ud800", "x\udfff", "\x00", "", "k" * 300]))
    depth = draw(st.sampled_from([0, 0, 0, 127, 128, 129, 1000]))  # around max_depth (128), and far past it
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return ("[" * depth + text + "]" * depth).encode("utf-8", "surrogatepass")  # lone surrogates as raw bytes too


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return b"payload=" + quote(draw(json_bodies())).encode()
    fields = draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=5))
    raw = "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in fields)
    return raw.encode() + draw(st.sampled_from([b"", b"&bad=%FF", b"&%E2%82", b"&&=="]))


def _quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"))


# Weighted towards what gets through (JSON to the open source), where storing can go wrong.
bodies = st.one_of(  # (max_body is 2KiB)
    json_bodies(), json_bodies(), json_bodies(), form_bodies(), st.binary(max_size=300), st.just(b"x" * 2100),
)
content_types = st.sampled_from([
    *["application/json"] * 6, "application/json; charset=utf-8", "text/json", "application/vnd.api+json",
    "APPLICATION/JSON",
    *["application/x-www-form-urlencoded"] * 3, "text/plain", "multipart/form-data; boundary=x", "", "other",
])
header_names = st.sampled_from(
    ["x-delivery", "x-github-event", "x-github-delivery", "x-hub-signature-256", "x-token", "x-other"],
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40).map(str.strip)
paths = st.sampled_from([
    *["/hooks/open"] * 8, "/hooks/gh", "/hooks/tok?token=new-token", "/hooks/tok?token=new-token&token=new-token",
    "/hooks/office?token=t0ken-x", "/hooks/open?q=%FF%00&token=x", "/hooks/nope", "/hooks/open/", "/hooks/",
    "/hooks/%2e%2e",
])


# --- the property -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("properties"))
    yield s
    s.close()


def send(port: int, method: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in [("Content-Length", str(len(body))), *headers]:
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expected_body(raw: bytes) -> Any:
    """A JSON body as it must be stored, found without the receiver's code: parsed, and
    each lone surrogate replaced by U+FFFD."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    return clean(json.loads(raw))


DELIVERIES = itertools.count()

SETTINGS = settings(
    max_examples=100, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(
    method=st.sampled_from([*["POST"] * 8, "PUT", "GET"]), path=paths, body=bodies, content_type=content_types,
    extra=st.lists(st.tuples(header_names, header_values), max_size=3), sign=st.booleans(),
    delivery=st.one_of(st.uuids().map(str), st.sampled_from(["same-1", "same-2"])),
)
def test_no_request_gets_a_5xx_and_every_2xx_event_is_stored_and_readable(
    served: Served, method: str, path: str, body: bytes, content_type: str, extra: list[tuple[str, str]], sign: bool,
    delivery: str,
) -> None:
    headers = [("Content-Type", content_type), ("X-Delivery", delivery), *extra]
    if sign:  # the gh source verifies GitHub's signature: let some requests through it
        headers.append(("X-Hub-Signature-256", "sha256=" + hmac.new(b"gh-secret-1", body, hashlib.sha256).hexdigest()))
    status, answer = send(served.port, method, path, body, headers)
    assert status < 500, answer
    if not 200 <= status < 300:
        assert json.loads(answer)["error"]
    elif not path.startswith("/hooks/tok"):  # that source answers with its own body
        assert_stored_and_readable(served, json.loads(answer)["event_id"])


@SETTINGS
@given(body=st.one_of(json_bodies(), form_bodies()), form=st.booleans())
def test_every_body_accepted_is_stored_as_parsed_and_reads_back(served: Served, body: bytes, form: bool) -> None:
    """Every JSON (and form) body sent to an open source: refused 400, or stored as JSON
    parses it (lone surrogates as U+FFFD) and readable."""
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    headers = [("Content-Type", content_type), ("X-Delivery", f"unique-{next(DELIVERIES)}")]
    status, answer = send(served.port, "POST", "/hooks/open", body, headers)
    assert status in (202, 400, 413), answer
    if status != 202:
        return
    stored = assert_stored_and_readable(served, json.loads(answer)["event_id"])
    if not form:
        assert _same(stored["body"], expected_body(body))


def assert_stored_and_readable(served: Served, event_id: str) -> dict[str, Any]:
    stored = served.store.get_event(event_id)
    assert stored is not None and "body_note" not in stored
    detail_status, detail = send(served.port, "GET", f"/api/events/{event_id}", b"", [])
    assert detail_status == 200 and json.loads(detail)["event"]["body"] == stored["body"]
    return stored


def _same(a: Any, b: Any) -> bool:
    """Equal, with -0.0 == 0.0 and floats compared as floats (never NaN: it is refused)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)
