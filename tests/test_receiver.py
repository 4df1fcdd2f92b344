"""The receiver over real HTTP: every status of SPEC 4's table, and what the store holds."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import uvicorn

from engine.receive.connections import uvicorn_options
from engine.receive.ingest import Ingest
from engine.receive.server import Health, create_app
from engine.receive.verify import sign
from engine.rules.loader import Current, load
from engine.store import open_store

from .support import free_port, post
from .test_postgres_store import pg_database, pg_url  # noqa: F401  (fixtures)

CONFIG = """\
server: {max_body: 2KiB}
rules: []
sources:
  gh: {preset: github, secret: gh-secret-1}
  open: {type: "body:kind", id: "header:X-Delivery", verify: none}
  tok: {token: [old-token, new-token], response: {status: 200, body: '{"thanks": true}', headers: {X-Thanks: "yes"}}}
  office: {token: t0ken-x, allow_ips: [203.0.113.0/24]}
"""


class Served:
    def __init__(self, tmp: Path, store_url: str | None = None, config: str = CONFIG) -> None:
        (tmp / "config.yaml").write_text(config)
        loaded = self.loaded = load(tmp / "config.yaml", {})
        self.store = open_store(store_url or loaded.config.store_url())
        self.ingest = Ingest(self.store)
        self.ingest.start()
        self.port = free_port()
        app = create_app(Current(loaded), self.ingest, Health(), self.store)
        options = uvicorn_options(loaded.config.settings.server)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="error", access_log=False, lifespan="off", **options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self) -> list[dict[str, Any]]:
        return [e for e in (self.store.get_event(x["id"]) for x in self.store.list_events(1000)) if e is not None]

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.ingest.stop()
        self.store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("receiver"))
    yield s
    s.close()


def github_headers(body: bytes, secret: str = "gh-secret-1", event: str = "push") -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": signature, "X-GitHub-Event": event, "X-GitHub-Delivery": f"d-{time.time_ns()}"}


def test_an_accepted_event_is_committed_with_its_envelope(served: Served) -> None:
    body = b'{"ref": "main"}'
    status, answer = post(served.url("/hooks/gh?x=1"), body, github_headers(body))
    assert status == 202 and isinstance(answer, dict)
    stored = served.store.get_event(answer["event_id"])
    assert stored is not None
    assert (stored["source"], stored["type"], stored["body"], stored["query"]) == (
        "gh", "push", {"ref": "main"}, {"x": "1"}
    )
    assert stored["headers"]["x-github-event"] == "push"


def test_a_duplicate_delivery_is_answered_200_and_stored_once(served: Served) -> None:
    before = len(served.events())
    headers = {"X-Delivery": "same-id"}
    first = post(served.url("/hooks/open"), '{"kind": "a"}', headers)
    second = post(served.url("/hooks/open"), '{"kind": "a", "changed": true}', headers)
    assert first[0] == 202 and second == (200, {"event_id": first[1]["event_id"], "duplicate": True})  # type: ignore[index]
    assert len(served.events()) == before + 1


def test_an_event_without_a_readable_type_is_stored_as_unknown(served: Served) -> None:
    status, answer = post(served.url("/hooks/open"), "[1, 2, 3]", {"X-Delivery": "arr"})
    assert status == 202
    stored = served.store.get_event(answer["event_id"])  # type: ignore[index]
    assert stored is not None and (stored["type"], stored["body"]) == ("unknown", [1, 2, 3])


def test_form_bodies_and_githubs_payload_field(served: Served) -> None:
    form = b"payload=%7B%22zen%22%3A%22hi%22%7D"
    headers = {**github_headers(form, event="ping"), "Content-Type": "application/x-www-form-urlencoded"}
    status, answer = post(served.url("/hooks/gh"), form, headers)
    assert status == 202
    assert served.store.get_event(answer["event_id"])["body"] == {"zen": "hi"}  # type: ignore[index]
    status, answer = post(
        served.url("/hooks/open"), "kind=k&a=1&a=2&empty=",
        {"Content-Type": "application/x-www-form-urlencoded", "X-Delivery": "form"}
    )
    assert status == 202
    assert served.store.get_event(answer["event_id"])["body"] == {"kind": "k", "a": "2", "empty": ""}  # type: ignore[index]


def test_tokens_rotate_are_masked_when_stored_and_the_custom_response_is_sent(served: Served) -> None:
    for token in ("old-token", "new-token"):
        request = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        body = json.dumps({"sent_with": token[:3]}).encode()  # different bodies: the body's hash is the delivery id
        request.request("POST", f"/hooks/tok?token={token}", body=body, headers={"Content-Type": "application/json"})
        response = request.getresponse()
        assert (response.status, response.read(), response.getheader("X-Thanks")) == (200, b'{"thanks": true}', "yes")
        request.close()
    assert all(e["query"].get("token") in (None, "****") for e in served.events())
    assert not any("old-token" in json.dumps(e) or "new-token" in json.dumps(e) for e in served.events())


def chunked_post(port: int, path: str, chunks: list[bytes]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        "POST", path, body=iter(chunks), headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        encode_chunked=True
    )
    status = conn.getresponse().status
    conn.close()
    return status


FORM = {"Content-Type": "application/x-www-form-urlencoded"}

BAD = [
    # (name, method, path, body, headers, status, error)
    ("malformed JSON", "POST", "/hooks/open", b'{"kind": ', {}, 400, "bad_request"),
    ("a JSON scalar", "POST", "/hooks/open", b'"text"', {}, 400, "bad_request"),
    ("not UTF-8", "POST", "/hooks/open", b'{"kind": "\xff"}', {}, 400, "bad_request"),
    (
        "wrong content type", "POST", "/hooks/open", b"<xml/>", {"Content-Type": "application/xml"}, 415,
        "unsupported_media_type"
    ),
    ("too large", "POST", "/hooks/open", b'{"kind": "' + b"x" * 3000 + b'"}', {}, 413, "payload_too_large"),
    ("unknown source", "POST", "/hooks/nope", b"{}", {}, 404, "not_found"),
    ("wrong method", "GET", "/hooks/open", None, {}, 405, "method_not_allowed"),
    ("no signature", "POST", "/hooks/gh", b"{}", {"X-GitHub-Event": "push"}, 401, "unauthorized"),
    ("bad signature", "POST", "/hooks/gh", b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "unauthorized"),
    ("garbled signature", "POST", "/hooks/gh", b"{}", {"X-Hub-Signature-256": "nonsense"}, 401, "unauthorized"),
    ("wrong token", "POST", "/hooks/tok?token=guess", b"{}", {}, 401, "unauthorized"),
    ("sender not allowed", "POST", "/hooks/office?token=t0ken-x", b"{}", {}, 403, "forbidden"),
    ("no such endpoint", "POST", "/elsewhere", b"{}", {}, 404, "not_found"),
    ("nested deeper than max_depth", "POST", "/hooks/open", b"[" * 129 + b"]" * 129, {}, 400, "bad_request"),
    ("nested a thousand deep", "POST", "/hooks/open", b"[" * 1000 + b"]" * 1000, {}, 400, "bad_request"),
    ("objects nested too deep", "POST", "/hooks/open", b'{"a":' * 200 + b"1" + b"}" * 200, {}, 400, "bad_request"),
    ("NaN", "POST", "/hooks/open", b'{"kind": NaN}', {}, 400, "bad_request"),
    ("Infinity", "POST", "/hooks/open", b"[1, -Infinity]", {}, 400, "bad_request"),
    ("a form payload holding a JSON scalar", "POST", "/hooks/open", b"payload=42", FORM, 400, "bad_request"),
    ("a form payload nested too deep", "POST", "/hooks/open", b"payload=" + b"%5B" * 200 + b"%5D" * 200, FORM, 400,
     "bad_request"),
    ("a form field not UTF-8", "POST", "/hooks/open", b"kind=%FF%FE", FORM, 400, "bad_request"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "status", "error"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_nothing_is_stored(
    served: Served, name: str, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int,
    error: str
) -> None:
    before = len(served.events())
    got, answer = post(served.url(path), body or b"", headers, method=method)
    assert got == status and isinstance(answer, dict)
    assert answer["error"] == error and answer["message"]
    if status == 401:
        assert answer["message"] == "verification failed"  # never which secret or part
    assert len(served.events()) == before


def test_an_oversized_body_without_content_length_is_refused_while_streaming(served: Served) -> None:
    before = len(served.events())
    assert chunked_post(served.port, "/hooks/open", [b'{"kind": "', b"x" * 1500, b"y" * 1500, b'"}']) == 413
    assert chunked_post(served.port, "/hooks/open", [b'{"kind": ', b'"small"}']) == 202
    assert len(served.events()) == before + 1


def test_health_endpoints(served: Served) -> None:
    assert post(served.url("/livez"), b"", method="GET") == (200, {"status": "ok"})
    status, answer = post(served.url("/readyz"), b"", method="GET")
    assert status == 200 and answer["checks"]["store"] == "writable"  # type: ignore[index]


def test_a_store_that_cannot_take_the_event_answers_503(tmp_path: Path) -> None:
    served = Served(tmp_path)
    try:
        served.store.close()
        db = Path(served.store.path)  # type: ignore[attr-defined]
        db.chmod(0o400)
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        served.store.path = tmp_path / "missing-dir" / "x" / "no.db"  # type: ignore[attr-defined]
        (tmp_path / "missing-dir").mkdir()
        (tmp_path / "missing-dir").chmod(0o500)
        status, answer = post(served.url("/hooks/open"), '{"kind": "a"}', {"X-Delivery": "503"})
        assert status == 503 and answer["error"] == "unavailable"  # type: ignore[index]
    finally:
        (tmp_path / "missing-dir").chmod(0o700)
        served.close()


def test_json_nested_as_deep_as_max_depth_is_accepted(served: Served) -> None:
    status, answer = post(served.url("/hooks/open"), b"[" * 128 + b"]" * 128, {"X-Delivery": "deep-128"})
    assert status == 202
    stored = served.store.get_event(answer["event_id"])  # type: ignore[index]
    assert stored is not None
    node = stored["body"]
    for _ in range(127):
        node = node[0]
    assert node == []


@pytest.fixture(params=["sqlite", "postgres"])
def on_each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, None if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    yield s
    s.close()


def test_a_lone_surrogate_is_stored_as_a_replacement_character_and_harms_no_other_event(on_each_store: Served) -> None:
    served = on_each_store
    requests: list[tuple[bytes, dict[str, str]]] = [(json.dumps({"n": n}).encode(), {}) for n in range(40)]
    requests.append((b'{"kind": "\\ud800", "n": "json"}', {}))
    requests.append((b"payload=" + quote('{"kind": "x\\udfff", "n": "form"}').encode(), FORM))
    barrier = threading.Barrier(len(requests))

    def send(i: int) -> tuple[int, Any]:
        body, headers = requests[i]
        barrier.wait(10)
        return post(served.url("/hooks/open"), body, {**headers, "X-Delivery": f"surrogate-{i}"})

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(send, range(len(requests))))
    assert [status for status, _ in answers] == [202] * len(requests)
    stored = {e["body"]["n"]: e for e in served.events()}
    assert len(stored) == len(requests)
    assert (stored["json"]["type"], stored["json"]["body"]["kind"]) == ("\ufffd", "\ufffd")
    assert (stored["form"]["type"], stored["form"]["body"]["kind"]) == ("x\ufffd", "x\ufffd")


SIGNED = """\
rules: []
sources:
  github: {preset: github, secret: gh-secret-1}
  stripe: {preset: stripe, secret: whsec_test_secret}
  standard: {preset: standard, secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
  slack: {preset: slack, secret: slack-secret-1}
  custom: {type: "body:kind", verify: {hmac: {header: X-Signature, secret: custom-secret-1, prefix: "sha256="}}}
  header-token: {token: header-t0ken, token_header: X-Token}
  hover: {preset: hover, hmac_secret: hover-hmac-secret-1, token: hover-t0ken}
"""


def send_with_headers(port: int, path: str, body: bytes, headers: list[tuple[str, str]]) -> int:
    """A POST whose headers may repeat a name (http.client sends each as given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        given = {name.lower() for name, _ in headers}
        usual = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        defaults = [(k, v) for k, v in usual if k.lower() not in given]
        for name, value in [*defaults, *headers]:
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("source", ["github", "stripe", "standard", "slack", "custom", "header-token", "hover"])
def test_a_header_verification_reads_sent_twice_is_refused_401(tmp_path: Path, source: str) -> None:
    served = Served(tmp_path, config=SIGNED)
    try:
        settings = served.loaded.config.settings.sources[source]
        body = json.dumps({"kind": source, "type": source}).encode()
        path = f"/hooks/{source}"
        headers, query = sign(settings, body, path=path)
        path += "?" + urlencode(query) if query else ""
        signed = [(name, value) for name, value in headers.items()]
        assert send_with_headers(served.port, path, body, [*signed, ("X-Other", "a"), ("X-Other", "b")]) == 202
        # Each header the scheme reads, twice with the same value (GitHub's delivery id
        # is not part of its signature).
        for name, value in [(n, v) for n, v in signed if n != "x-github-delivery"]:
            assert send_with_headers(served.port, path, body, [*signed, (name, value)]) == 401, name
    finally:
        served.close()


def test_a_token_sent_twice_in_the_query_is_refused_401(served: Served) -> None:
    for query in ("token=old-token&token=new-token", "token=guess&token=new-token", "token=new-token&token=guess"):
        assert post(served.url(f"/hooks/tok?{query}"), '{"n": 1}')[0] == 401


def test_a_trailing_slash_is_not_found_and_never_redirected(served: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Host": "evil.example"}
        conn.request("POST", "/hooks/tok/?token=new-token", body=b"{}", headers=headers)
        response = conn.getresponse()
        assert (response.status, response.getheader("Location")) == (404, None)
        assert b"new-token" not in response.read()
    finally:
        conn.close()
