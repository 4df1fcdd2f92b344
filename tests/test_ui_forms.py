"""engine/ui/forms.py: a dead step's params as form fields, and the edits a person made."""

from __future__ import annotations

import pytest

from engine.errors import UsageError
from engine.ui.forms import Field, Form, edits, fields

PARAMS = {
    "method": "POST",
    "url": "https://crm.example.com/jobs",
    "headers": {"Authorization": "****", "X-Job": "7"},
    "json": {"job": 19402492, "tags": ["a"], "note": None},
    "timeout": 5,
    "labels": {"a.b": 1},
    "empty": {},
}


def test_params_become_one_field_per_leaf() -> None:
    assert fields(PARAMS) == [
        Field("method", "POST", "text"),
        Field("url", "https://crm.example.com/jobs", "text"),
        Field("headers.Authorization", "****", "text"),
        Field("headers.X-Job", "7", "text"),
        Field("json.job", "19402492", "json"),
        Field("json.tags", '[\n  "a"\n]', "json"),
        Field("json.note", "null", "json"),
        Field("timeout", "5", "json"),
        Field("labels", '{\n  "a.b": 1\n}', "json"),
        Field("empty", "{}", "json"),
    ]
    assert fields(None) == [] and fields(["not", "a", "mapping"]) == []


def form(**values: str) -> Form:
    return Form([(k.replace("__", "."), v) for k, v in values.items()])


def test_only_changed_fields_are_edits_and_masked_values_left_alone_are_kept() -> None:
    shown = fields(PARAMS)
    unchanged = Form([(f"p.{f.path}", f.text.replace("\n", "\r\n")) for f in shown])  # as a browser posts textareas
    assert edits(unchanged, shown) == []
    changed = Form(
        [*unchanged.pairs, ("p.url", "https://crm2.example.com/jobs"), ("p.json.job", "42"), ("p.headers.X-Job", "8")]
    )
    assert edits(changed, shown) == [("url", "https://crm2.example.com/jobs"), ("headers.X-Job", "8"), ("json.job", 42)]


def test_a_json_field_must_hold_json() -> None:
    with pytest.raises(UsageError, match=r"json\.job: not valid JSON \(Expecting value at line 1 column 1\)"):
        edits(form(**{"p.json.job": "forty-two"}), fields(PARAMS))


def test_the_extra_row_sets_a_param_as_json_or_text() -> None:
    assert edits(form(new_path="timeout", new_value="30"), fields(PARAMS)) == [("timeout", 30)]
    assert edits(form(new_path="headers.X-New", new_value="a b"), fields(PARAMS)) == [("headers.X-New", "a b")]
    assert edits(form(new_path="", new_value="ignored"), fields(PARAMS)) == []
    for bad in (".x", "x.", "a..b"):
        with pytest.raises(UsageError, match="is not a param path"):
            edits(form(new_path=bad, new_value="1"), fields(PARAMS))


def test_a_form_reads_like_a_browser_sends_it() -> None:
    parsed = Form.parse(b"a=1&b=&a=%3Cscript%3E&c=x+y")
    assert parsed.get("a") == "<script>" and parsed.getlist("a") == ["1", "<script>"] and parsed.get("b") == ""
    assert parsed.text("c") == "x y" and parsed.get("missing") is None and parsed.text("missing") == ""
    with pytest.raises(UsageError, match="not UTF-8"):
        Form.parse(b"a=%ff\xff")
