"""Bodies as the receiver accepts them (SPEC 4), and stored bodies as people read them: every
stored event shows through the API, the CLI and the web UI, whatever an older version let in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from engine.receive.bodies import DEEPEST, Malformed, parse, parse_object, readable
from engine.store import Incoming, Matched

from .support import post
from .test_receiver import Served
from .test_store import new_run, result

ACCEPTED = [
    # (name, raw, kind, value, stored text)
    ("an object", b'{"a": [1, 2.5, null]}', "json", {"a": [1, 2.5, None]}, '{"a": [1, 2.5, null]}'),
    ("an array", b"[]", "json", [], "[]"),
    ("a surrogate pair stays", b'["\\ud83d\\ude00"]', "json", ["\U0001f600"], '["\\ud83d\\ude00"]'),
    ("a lone surrogate", b'{"\\udc00k": "a\\ud800"}', "json", {"\ufffdk": "a\ufffd"}, '{"\ufffdk": "a\ufffd"}'),
    ("depth 4 within 4", b"[[[[]]]]", "json", [[[[]]]], "[[[[]]]]"),
    ("brackets in strings do not count", b'["[[[[[[[[[["]', "json", ["[[[[[[[[[["], '["[[[[[[[[[["]'),
    ("form fields", b"a=1&b=&a=2", "form", {"a": "2", "b": ""}, '{"a": "2", "b": ""}'),
    ("a form payload", b"payload=%5B%22%5Cud800%22%5D", "form", ["\ufffd"], '["\ufffd"]'),
]

REFUSED = [
    # (name, raw, kind, message part)
    ("NaN", b'{"a": NaN}', "json", "NaN is not a JSON value"),
    ("Infinity", b"[Infinity]", "json", "Infinity is not a JSON value"),
    ("-Infinity", b"[-Infinity]", "json", "-Infinity is not a JSON value"),
    ("depth 5 over 4", b"[[[[[]]]]]", "json", "nested deeper than 4 levels"),
    ("objects too deep", b'{"a": {"b": {"c": {"d": {}}}}}', "json", "nested deeper than 4 levels"),
    ("deeper than Python recurses", b"[" * 5000 + b"]" * 5000, "json", "nested deeper than 4 levels"),
    ("a scalar", b"42", "json", "must be a JSON object or an array"),
    ("not UTF-8", b'["\xff"]', "json", "not UTF-8"),
    ("not JSON", b"{", "json", "not valid JSON"),
    ("a form payload scalar", b"payload=42", "form", "payload field must be a JSON object or an array"),
    ("a form payload too deep", b"payload=[[[[[]]]]]", "form", "payload field is nested deeper than 4 levels"),
    ("a form payload with NaN", b"payload=[NaN]", "form", "NaN is not a JSON value"),
    ("a form field not UTF-8", b"a=%FF", "form", "not UTF-8"),
]


@pytest.mark.parametrize(("name", "raw", "kind", "value", "text"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_bodies(name: str, raw: bytes, kind: str, value: Any, text: str) -> None:
    assert parse(raw, kind, max_depth=4) == (value, text)
    assert json.loads(text) == value  # the stored text is the value, in JSON


@pytest.mark.parametrize(("name", "raw", "kind", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_bodies(name: str, raw: bytes, kind: str, message: str) -> None:
    with pytest.raises(Malformed, match=message.replace("[", r"\[")):
        parse(raw, kind, max_depth=4)


@pytest.mark.parametrize(("raw", "message"), [
    (b"[]", "the body must be a JSON object$"),
    (b"42", "the body must be a JSON object$"),
    (b'{"a": [[[[]]]]}', "the body is nested deeper than 4 levels"),
    (b'{"a": NaN}', "NaN is not a JSON value"),
    (b'{"a": "\xff"}', "the body is not UTF-8"),
])
def test_an_object_body_refuses_what_a_json_body_refuses_and_any_other_value(raw: bytes, message: str) -> None:
    assert parse_object(b'{"a": ["\\ud800"]}', max_depth=4) == {"a": ["\ufffd"]}
    with pytest.raises(Malformed, match=message):
        parse_object(raw, max_depth=4)


ODD = [
    # (name, stored text, note part): what older versions could store
    ("NaN", '{"kind": "odd", "v": NaN}', "NaN is not a JSON value"),
    ("600 deep", "[" * 600 + "]" * 600, f"nested deeper than {DEEPEST} levels"),
    ("a thousand deep", "[" * 1000 + "]" * 1000, f"nested deeper than {DEEPEST} levels"),
]


@pytest.mark.parametrize(("name", "text", "note"), ODD, ids=[o[0] for o in ODD])
def test_an_odd_stored_body_reads_as_its_text_with_a_note(name: str, text: str, note: str) -> None:
    body, why = readable(text)
    assert body == text and why is not None and note in why


def test_plain_stored_bodies_read_as_values() -> None:
    assert readable('{"a": "\\ud800", "b": [1]}') == ({"a": "\ufffd", "b": [1]}, None)
    deepest = "[" * DEEPEST + "]" * DEEPEST
    assert readable(deepest)[1] is None


def store_as_older_versions_did(served: Served, text: str) -> str:
    (stored,) = served.store.put_events([Incoming("open", "odd", text, {}, {}, time.time())])
    return stored.event_id


@pytest.mark.parametrize(("name", "text", "note"), ODD, ids=[o[0] for o in ODD])
def test_odd_stored_events_show_through_the_api_the_cli_and_the_ui(
    tmp_path: Path, name: str, text: str, note: str,
) -> None:
    served = Served(tmp_path)
    try:
        event_id = store_as_older_versions_did(served, text)
        status, answer = post(served.url(f"/api/events/{event_id}"), b"", method="GET")
        assert status == 200 and isinstance(answer, dict)
        assert answer["event"]["body"] == text and note in answer["event"]["body_note"]
        for args in ([], ["--json"]):
            shown = subprocess.run(
                [sys.executable, "-m", "engine", "events", "show", "-c", str(tmp_path / "config.yaml"), event_id,
                 *args],
                capture_output=True, text=True, timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            assert note in shown.stdout and "Traceback" not in shown.stderr
        # The UI shows the stored text as it is, with the note, and the playground starts from it.
        as_html = str(escape(text))
        status, page = post(served.url(f"/ui/events/{event_id}"), b"", method="GET")
        assert status == 200 and isinstance(page, str)
        assert str(escape(note)) in page and f'aria-label="Event body">{as_html}</pre>' in page
        status, page = post(served.url(f"/ui/playground?event={event_id}"), b"", method="GET")
        assert status == 200 and isinstance(page, str) and f">{as_html}</textarea>" in page
    finally:
        served.close()


def test_a_run_whose_step_output_holds_nan_shows_through_the_api(tmp_path: Path) -> None:
    served = Served(tmp_path)
    try:
        event_id = store_as_older_versions_did(served, '{"v": NaN}')
        (event,) = served.store.claim_events(10, 60)
        served.store.record_matches([Matched(event.id, [], [new_run(event.id, steps=1)])])
        (task,) = served.store.claim_steps(10, 60)
        served.store.record_steps([result(task, output={"v": float("nan"), "w": [float("-inf")]})])
        status, answer = post(served.url(f"/api/runs/{task.run_id}"), b"", method="GET")
        assert status == 200 and isinstance(answer, dict)
        assert answer["steps"][0]["output"] == {"v": "NaN", "w": ["-Infinity"]}
        status, answer = post(served.url(f"/api/events/{event_id}"), b"", method="GET")
        assert status == 200 and answer["runs"][0]["steps"][0]["output"]["v"] == "NaN"  # type: ignore[index]
    finally:
        served.close()
