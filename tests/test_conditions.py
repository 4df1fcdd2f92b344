"""The condition tree (SPEC 5.1) and its explained outcomes (SPEC 5.4): one table per node
type or operator group, then compile errors, then a property test against a reference."""

from __future__ import annotations

import copy
import fnmatch
import operator
import pickle
import re
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.events import Event
from engine.rules.condition_paths import MISSING, resolve
from engine.rules.conditions import MATCHED, Outcome, compile_when, required_equalities
from engine.rules.operators import OPERATORS

ENV: dict[str, Any] = {
    "headers": {"x-github-event": "push", "content-type": "application/json"},
    "query": {"token": "abc", "Mode": "fast"},
    "source": "github",
    "type": "push",
    "event_id": "ev_1",
    "received_at": "2024-05-01T12:00:00Z",
}


def rows(*table: tuple[Any, ...]) -> list[Any]:
    """Parametrize rows with readable ids."""
    return [pytest.param(*row, id=" | ".join(repr(cell) for cell in row)) for row in table]


def holds(spec: Any, body: Any, envelope: dict[str, Any] = ENV) -> bool:
    return compile_when(spec).evaluate(body, envelope).matched


def explain(spec: Any, body: Any, envelope: dict[str, Any] = ENV, **kwargs: Any) -> str:
    return str(compile_when(spec, **kwargs).evaluate(body, envelope))


def problems(spec: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ConfigError) as info:
        compile_when(spec)
    return [(p.loc, p.message) for p in info.value.problems]


# --- equality ----------------------------------------------------------------------------

SHORTHAND_EQUALITY = rows(
    ("failed", "failed", True),
    ("failed", "completed", False),
    ("failed", "Failed", False),
    ("", "", True),
    (3, 3, True),
    (3, 3.0, True),
    (3.0, 3, True),
    (3, 4, False),
    (1, True, False),
    (True, 1, False),
    (0, False, False),
    (False, 0, False),
    (True, True, True),
    (False, False, True),
    (True, False, False),
    (None, None, True),
    (None, 0, False),
    (None, "", False),
    ("3", 3, False),
    (3, "3", False),
    (["a", "b"], "b", True),
    (["a", "b"], "c", False),
    (["a"], ["a"], False),
    ([1, "x"], 1.0, True),
    ([1, "x"], True, False),
    ([True], 1, False),
    ([True, None], None, True),
    ([None], 0, False),
    ([["a"]], ["a"], True),
    ([{"k": 1}], {"k": 1.0}, True),
)


@pytest.mark.parametrize(("value", "field", "expected"), SHORTHAND_EQUALITY)
def test_shorthand_scalar_and_list_equality(value: Any, field: Any, expected: bool) -> None:
    assert holds({"f": value}, {"f": field}) is expected


EQ_STRUCTURAL = rows(
    ("x", "x", True),
    (None, None, True),
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": 1}, {"a": True}, False),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"a": 1, "b": 2}, {"a": 1}, False),
    ([1, [2]], [1.0, [2.0]], True),
    ([1, 2], [2, 1], False),
    ([1], [1, 1], False),
    ([], [], True),
    ({}, {}, True),
    ({}, [], False),
    ([None], [None], True),
    ({"a": [True]}, {"a": [1]}, False),
    ({"a": {"b": "c"}}, {"a": {"b": "c"}}, True),
    ({"a": {"b": "c"}}, {"a": {"b": "d"}}, False),
)


@pytest.mark.parametrize(("operand", "field", "expected"), EQ_STRUCTURAL)
def test_eq_compares_lists_and_objects_structurally(operand: Any, field: Any, expected: bool) -> None:
    assert holds({"f": {"eq": operand}}, {"f": field}) is expected
    assert holds({"f": {"ne": operand}}, {"f": field}) is not expected


# --- operators ---------------------------------------------------------------------------

OPERATOR_CASES = rows(
    ({"ne": "a"}, "b", True),
    ({"ne": "a"}, "a", False),
    ({"ne": 1}, 1.0, False),
    ({"ne": None}, None, False),
    ({"in": ["a", "b"]}, "a", True),
    ({"in": ["a", "b"]}, "c", False),
    ({"in": [1, 2]}, 2.0, True),
    ({"in": [1]}, True, False),
    ({"in": [True]}, 1, False),
    ({"in": [True]}, True, True),
    ({"in": [None, "a"]}, None, True),
    ({"in": [{"a": 1}]}, {"a": 1.0}, True),
    ({"in": [[1]]}, [1], True),
    ({"in": ["a"]}, ["a"], False),
    ({"not_in": ["a"]}, "b", True),
    ({"not_in": ["a"]}, "a", False),
    ({"not_in": [1]}, True, True),
    ({"not_in": [1]}, 1.0, False),
    ({"lt": 5}, 4, True),
    ({"lt": 5}, 5, False),
    ({"lte": 5}, 5, True),
    ({"lte": 5}, 5.5, False),
    ({"gt": 5}, 6, True),
    ({"gt": 5}, 5, False),
    ({"gte": 5}, 5.0, True),
    ({"gte": 5}, 4.9, False),
    ({"gt": 0.5}, 1, True),
    ({"lt": -1}, -1.5, True),
    ({"regex": "^fa"}, "failed", True),
    ({"regex": "^fa"}, "a failed", False),
    ({"regex": "il"}, "failed", True),
    ({"regex": r"^\d+$"}, "123", True),
    ({"regex": "FAIL"}, "failed", False),
    ({"regex": "(?i)FAIL"}, "failed", True),
    ({"glob": "job-*"}, "job-state-changed", True),
    ({"glob": "job-*"}, "model-created", False),
    ({"glob": "job-?"}, "job-1", True),
    ({"glob": "job-?"}, "job-12", False),
    ({"glob": "Job-*"}, "job-x", False),
    ({"glob": "job"}, "job-x", False),
    ({"glob": "[ab]*"}, "bx", True),
    ({"glob": "*"}, "", True),
    ({"contains": "ail"}, "failed", True),
    ({"contains": "xyz"}, "failed", False),
    ({"contains": "a"}, ["a", "b"], True),
    ({"contains": "a"}, ["ab"], False),
    ({"contains": 1}, [1.0, 2], True),
    ({"contains": 1}, [True], False),
    ({"contains": {"k": 1}}, [{"k": 1}], True),
    ({"contains": "k"}, {"k": 1}, False),
    ({"starts_with": "fa"}, "failed", True),
    ({"starts_with": "il"}, "failed", False),
    ({"ends_with": "ed"}, "failed", True),
    ({"ends_with": "fa"}, "failed", False),
    ({"exists": True}, "x", True),
    ({"exists": True}, None, True),
    ({"exists": False}, None, False),
    ({"exists": False}, "", False),
    ({"empty": True}, None, True),
    ({"empty": True}, "", True),
    ({"empty": True}, [], True),
    ({"empty": True}, {}, True),
    ({"empty": True}, " ", False),
    ({"empty": True}, 0, False),
    ({"empty": True}, False, False),
    ({"empty": True}, [None], False),
    ({"empty": False}, "x", True),
    ({"empty": False}, 0, True),
    ({"empty": False}, [], False),
    ({"empty": False}, None, False),
    ({"type": "string"}, "x", True),
    ({"type": "string"}, 1, False),
    ({"type": "number"}, 1, True),
    ({"type": "number"}, 1.5, True),
    ({"type": "number"}, True, False),
    ({"type": "boolean"}, False, True),
    ({"type": "boolean"}, 0, False),
    ({"type": "list"}, [], True),
    ({"type": "list"}, {}, False),
    ({"type": "object"}, {}, True),
    ({"type": "object"}, [], False),
    ({"type": "null"}, None, True),
    ({"type": "null"}, "", False),
    ({"type": ["string", "null"]}, None, True),
    ({"type": ["string", "null"]}, 3, False),
    ({"gte": 1, "lt": 5}, 3, True),
    ({"gte": 1, "lt": 5}, 5, False),
    ({"gte": 1, "lt": 5}, 0, False),
    ({"exists": True, "ne": "x"}, "y", True),
    ({"exists": True, "ne": "x"}, "x", False),
)


@pytest.mark.parametrize(("ops", "field", "expected"), OPERATOR_CASES)
def test_operator(ops: dict[str, Any], field: Any, expected: bool) -> None:
    assert holds({"f": ops}, {"f": field}) is expected


# Every operator (and both sides of the boolean ones), against a field that is not there.
ON_MISSING = rows(
    ("eq", "x", False),
    ("eq", None, False),
    ("ne", "x", False),
    ("ne", None, False),
    ("in", ["x"], False),
    ("in", [None], False),
    ("not_in", ["x"], False),
    ("lt", 1, False),
    ("lte", 1, False),
    ("gt", 1, False),
    ("gte", 1, False),
    ("lt", "2999-01-01T00:00:00Z", False),
    ("regex", ".*", False),
    ("glob", "*", False),
    ("contains", "", False),
    ("starts_with", "", False),
    ("ends_with", "", False),
    ("exists", True, False),
    ("exists", False, True),
    ("empty", True, True),
    ("empty", False, False),
    ("type", "null", False),
    ("type", ["string", "number", "boolean", "list", "object", "null"], False),
)


def test_the_missing_table_covers_every_operator() -> None:
    assert {param.values[0] for param in ON_MISSING} == set(OPERATORS)


MISSING_PLACES = [
    pytest.param({}, "f", id="empty body"),
    pytest.param({"other": 1}, "f", id="other key"),
    pytest.param({"f": "scalar"}, "f.g", id="through a scalar"),
    pytest.param({"f": {"g": None}}, "f.h", id="absent key"),
    pytest.param({"f": []}, "f.0", id="past the list end"),
    pytest.param(["x"], "f", id="key on a list body"),
]


@pytest.mark.parametrize(("op", "operand", "expected"), ON_MISSING)
@pytest.mark.parametrize(("body", "path"), MISSING_PLACES)
def test_a_missing_field_satisfies_only_exists_false_and_empty_true(
    op: str, operand: Any, expected: bool, body: Any, path: str
) -> None:
    outcome = compile_when({path: {op: operand}}).evaluate(body, ENV)
    assert outcome.matched is expected
    if not expected:
        assert outcome.got is MISSING


@pytest.mark.parametrize("value", ["x", None, 0, False, [None, "x"]])
def test_a_missing_field_fails_shorthand_equality(value: Any) -> None:
    assert holds({"f": value}, {}) is False


CROSS_TYPE = rows(
    ({"lt": 5}, "4", False),
    ({"gt": 5}, "6", False),
    ({"lt": 5}, True, False),
    ({"gte": 1}, True, False),
    ({"gt": 0}, [1], False),
    ({"lt": 5}, None, False),
    ({"eq": 3}, "3", False),
    ({"ne": 3}, "3", True),
    ({"contains": 3}, "a3", False),
    ({"contains": "3"}, [3], False),
    ({"eq": True}, 1, False),
    ({"eq": 1}, True, False),
    ({"eq": False}, 0, False),
    ({"ne": False}, 0, True),
    ({"ne": 0}, False, True),
    ({"lt": "2024-01-01T00:00:00Z"}, 5, False),
    ({"gt": 5}, "2024-01-01", False),
    ({"regex": "1"}, 1, False),
    ({"glob": "*"}, 1, False),
    ({"glob": "*"}, None, False),
    ({"starts_with": "1"}, 123, False),
    ({"ends_with": "a"}, ["a"], False),
    ({"type": "number"}, "1", False),
    ({"in": ["1"]}, 1, False),
    ({"not_in": ["1"]}, 1, True),
    ({"eq": [1]}, 1, False),
    ({"eq": {"a": 1}}, [["a", 1]], False),
)


@pytest.mark.parametrize(("ops", "field", "expected"), CROSS_TYPE)
def test_a_comparison_across_types_is_false_never_an_error(ops: dict[str, Any], field: Any, expected: bool) -> None:
    assert holds({"f": ops}, {"f": field}) is expected


DATE_TIMES = rows(
    ({"lt": "2024-05-01T12:00:00Z"}, "2024-05-01T11:59:59Z", True),
    ({"lt": "2024-05-01T12:00:00Z"}, "2024-05-01T12:00:00Z", False),
    ({"lte": "2024-05-01T12:00:00Z"}, "2024-05-01T12:00:00+00:00", True),
    ({"lte": "2024-05-01T12:00:00Z"}, "2024-05-01T14:00:00+02:00", True),
    ({"lt": "2024-05-01T12:00:00Z"}, "2024-05-01T14:00:00+02:00", False),
    ({"gt": "2024-05-01T12:00:00Z"}, "2024-05-01T13:00:00+02:00", False),
    ({"gt": "2024-05-01T12:00:00+05:30"}, "2024-05-01T07:00:00Z", True),
    ({"gte": "2024-05-01T12:00:00-03:00"}, "2024-05-01T14:59:59Z", False),
    ({"gte": "2024-05-01"}, "2024-05-01T00:00:00Z", True),
    ({"gt": "2024-05-01"}, "2024-04-30T23:59:59Z", False),
    ({"lt": "2024-05-01T12:00:00"}, "2024-05-01T11:00:00Z", True),
    ({"lt": "2024-05-01T12:00:00Z"}, "2024-05-01T13:00:00", False),
    ({"gt": "2024-05-01T12:00:00Z"}, "2024-05-01T12:00:00.001Z", True),
    ({"lt": "2024-05-01T12:00:00z"}, "2024-05-01T11:00:00z", True),
    ({"gte": datetime(2024, 5, 1, tzinfo=UTC)}, "2024-05-01T00:00:00Z", True),
    ({"gte": datetime(2024, 5, 1)}, "2024-04-30T23:59:59Z", False),
    ({"lt": date(2024, 5, 1)}, "2024-04-30T23:00:00-02:00", False),
    ({"lt": date(2024, 5, 1)}, "2024-04-30T23:00:00+02:00", True),
    ({"lt": "2024-05-01T12:00:00Z"}, "not a date", False),
    ({"lt": "2024-05-01T12:00:00Z"}, "", False),
)


@pytest.mark.parametrize(("ops", "field", "expected"), DATE_TIMES)
def test_iso_date_times_compare_as_instants(ops: dict[str, Any], field: Any, expected: bool) -> None:
    assert holds({"at": ops}, {"at": field}) is expected


# --- paths -------------------------------------------------------------------------------

ORDERS = {"orders": [{"items": [{"sku": "A"}]}, {"items": [{"sku": "B"}, {"sku": "C"}]}]}

PATHS = rows(
    ("job.address.city", "Paris", {"job": {"address": {"city": "Paris"}}}, True),
    ("job.address.city", "Paris", {"job": {"address": "Paris"}}, False),
    ("items.0.sku", "A", {"items": [{"sku": "A"}]}, True),
    ("items.1.sku", "B", {"items": [{"sku": "A"}, {"sku": "B"}]}, True),
    ("items.1.sku", "A", {"items": [{"sku": "A"}]}, False),
    ("items.0", "x", {"items": {"0": "x"}}, True),
    ("items.-1", "a", {"items": ["a"]}, False),
    ("items.-1", "a", {"items": {"-1": "a"}}, True),
    ("0", "x", ["x"], True),
    ("a.b", {"exists": False}, {"a": None}, True),
    ("items.*.sku", "B", {"items": [{"sku": "A"}, {"sku": "B"}]}, True),
    ("items.*.sku", "B", {"items": [{"sku": "A"}]}, False),
    ("items.*.sku", "B", {"items": []}, False),
    ("items.*.sku", "B", {}, False),
    ("items.*.sku", "B", {"items": "B"}, False),
    ("items.*", "b", {"items": ["a", "b"]}, True),
    ("items.*", "b", {"items": {"x": "a", "y": "b"}}, True),
    ("items.*.sku", "A", {"items": {"x": {"sku": "A"}}}, True),
    ("orders.*.items.*.sku", "C", ORDERS, True),
    ("orders.*.items.*.sku", "D", ORDERS, False),
    ("orders.*.items.*.sku", "A", {"orders": [{"items": []}, {}]}, False),
    ("orders.*.items.0.sku", "B", ORDERS, True),
    ("orders.*.items.1.sku", "A", ORDERS, False),
    ("*.state", "y", {"a": {"state": "x"}, "b": {"state": "y"}}, True),
    ("items.*", {"gte": 2, "lte": 3}, {"items": [1, 4]}, False),
    ("items.*", {"gte": 2, "lte": 3}, {"items": [1, 2.5, 4]}, True),
    ("items.*.sku", {"exists": False}, {"items": [{"sku": "A"}, {}]}, True),
    ("items.*.sku", {"exists": False}, {"items": [{"sku": "A"}]}, False),
    ("items.*.sku", {"exists": False}, {"items": []}, False),
    ("items.*.qty", {"gt": 2}, {"items": [{"qty": 1}, {"qty": 3}]}, True),
    ("items.*.qty", {"gt": 2}, {"items": [{"qty": 1}, {"qty": "3"}]}, False),
)


@pytest.mark.parametrize(("key", "value", "body", "expected"), PATHS)
def test_paths_index_lists_and_fan_out_with_star(key: str, value: Any, body: Any, expected: bool) -> None:
    assert holds({key: value}, body) is expected


ENVELOPE_PATHS = rows(
    ("$headers.x-github-event", "push", True),
    ("$headers.X-GitHub-Event", "push", True),
    ("$headers.X-GitHub-Event", "Push", False),
    ("$headers.x-missing", {"exists": False}, True),
    ("$headers.content-type", {"starts_with": "application/"}, True),
    ("$headers", {"type": "object"}, True),
    ("$headers.*", "push", True),
    ("$query.token", "abc", True),
    ("$query.token", "xyz", False),
    ("$query.Mode", "fast", True),
    ("$query.mode", {"exists": False}, True),
    ("$source", "github", True),
    ("$source", ["hover", "stripe"], False),
    ("$type", {"glob": "pu*"}, True),
    ("$type", "pull", False),
    ("$event_id", "ev_1", True),
    ("$received_at", {"gt": "2024-05-01T11:00:00Z"}, True),
    ("$received_at", {"lt": "2024-05-01T13:00:00+02:00"}, False),
    ("source", {"exists": False}, True),
)


@pytest.mark.parametrize(("key", "value", "expected"), ENVELOPE_PATHS)
def test_dollar_paths_address_the_envelope(key: str, value: Any, expected: bool) -> None:
    assert holds({key: value}, {"body": "only"}) is expected


def test_envelope_of_a_real_event() -> None:
    event = Event(
        source="hover",
        type="job-state-changed",
        body={"state": "failed"},
        headers={"x-hover-event": "job"},
        query={"k": "v"},
        id="e1",
        received_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
    )
    cond = compile_when(
        {
            "state": "failed",
            "$source": "hover",
            "$type": {"glob": "job-*"},
            "$headers.X-Hover-Event": "job",
            "$query.k": "v",
            "$event_id": "e1",
            "$received_at": {"gte": "2024-05-01T14:00:00+02:00"},
        }
    )
    assert cond.evaluate(event.body, event.envelope()) is MATCHED
    later = Event(source="hover", type="job-state-changed", body={"state": "failed"}, headers={"x-hover-event": "job"})
    outcome = cond.evaluate(later.body, later.envelope())
    assert (outcome.matched, outcome.path) == (False, "when.$query.k")


# --- combinators -------------------------------------------------------------------------

NESTED = {"any": [{"all": [{"a": 1}, {"b": 2}]}, {"not": {"c": {"exists": True}}}]}

COMBINATORS = rows(
    ({"a": 1, "b": 2}, {"a": 1, "b": 2}, True),
    ({"a": 1, "b": 2}, {"a": 1, "b": 3}, False),
    ({"all": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 2}, True),
    ({"all": [{"a": 1}, {"b": 2}]}, {"a": 0, "b": 2}, False),
    ({"any": [{"a": 1}, {"b": 2}]}, {"a": 0, "b": 2}, True),
    ({"any": [{"a": 1}, {"b": 2}]}, {"a": 1, "b": 0}, True),
    ({"any": [{"a": 1}, {"b": 2}]}, {"a": 0, "b": 0}, False),
    ({"any": [{"a": 1}]}, {"a": 1}, True),
    ({"any": [{"a": 1}]}, {"a": 2}, False),
    ({"not": {"a": 1}}, {"a": 2}, True),
    ({"not": {"a": 1}}, {"a": 1}, False),
    ({"not": {"a": 1}}, {}, True),
    ({"not": {"a": 1, "b": 1}}, {"a": 1, "b": 2}, True),
    ({"not": {"a": 1, "b": 1}}, {"a": 1, "b": 1}, False),
    ({"not": {"not": {"a": 1}}}, {"a": 1}, True),
    ({"not": {"not": {"a": 1}}}, {"a": 2}, False),
    (NESTED, {"a": 1, "b": 2, "c": 0}, True),
    (NESTED, {"a": 1, "b": 0}, True),
    (NESTED, {"a": 1, "b": 0, "c": 0}, False),
    ({"not": {"any": [{"a": 1}, {"a": 2}]}}, {"a": 3}, True),
    ({"not": {"any": [{"a": 1}, {"a": 2}]}}, {"a": 2}, False),
    ({"all": [{"any": [{"a": 1}, {"a": 2}]}, {"not": {"b": 1}}]}, {"a": 2, "b": 0}, True),
    ({"all": [{"any": [{"a": 1}, {"a": 2}]}, {"not": {"b": 1}}]}, {"a": 2, "b": 1}, False),
    ({"state": "failed", "any": [{"x": 1}, {"y": 1}]}, {"state": "failed", "y": 1}, True),
    ({"state": "failed", "any": [{"x": 1}, {"y": 1}]}, {"state": "done", "y": 1}, False),
)


@pytest.mark.parametrize(("spec", "body", "expected"), COMBINATORS)
def test_all_any_not_combine_and_nest(spec: dict[str, Any], body: Any, expected: bool) -> None:
    assert holds(spec, body) is expected


# --- explain -----------------------------------------------------------------------------

EXPLAINED = rows(
    ({"state": "failed"}, {"state": "completed"}, "when.state: expected 'failed', got 'completed'"),
    ({"state": "failed"}, {}, "when.state: expected 'failed', got missing"),
    ({"state": ["a", "b"]}, {"state": "c"}, "when.state: expected one of ['a', 'b'], got 'c'"),
    ({"flag": True}, {"flag": None}, "when.flag: expected true, got null"),
    ({"n": 3}, {"n": False}, "when.n: expected 3, got false"),
    (
        {"job.city": {"regex": "^Par"}}, {"job": {"city": "Lyon"}},
        "when.job.city.regex: expected to match /^Par/, got 'Lyon'"
    ),
    ({"n": {"gte": 1, "lt": 5}}, {"n": 7}, "when.n.lt: expected < 5, got 7"),
    ({"n": {"gte": 1, "lt": 5}}, {"n": 0}, "when.n.gte: expected >= 1, got 0"),
    ({"n": {"lte": 1.5}}, {"n": 2}, "when.n.lte: expected <= 1.5, got 2"),
    ({"n": {"gt": 1}}, {"n": "2"}, "when.n.gt: expected > 1, got '2'"),
    ({"a": 1, "b": 2}, {"a": 0, "b": 0}, "when.a: expected 1, got 0"),
    ({"b": 2, "a": 1}, {"a": 0, "b": 0}, "when.b: expected 2, got 0"),
    (
        {"all": [{"a": 1}, {"state": "failed"}]},
        {"a": 1, "state": "completed"},
        "when.all[1].state: expected 'failed', got 'completed'",
    ),
    (
        {"any": [{"state": "failed"}, {"x": {"exists": True}}]},
        {"state": "completed"},
        "when.any: expected any of 2 conditions to hold, got (when.any[0].state: expected 'failed', "
        "got 'completed'; when.any[1].x.exists: expected to exist, got missing)",
    ),
    (
        {"any": [{"a": 1}, {"any": [{"b": 1}, {"c": 1}]}]},
        {},
        "when.any: expected any of 2 conditions to hold, got (when.any[0].a: expected 1, got missing; "
        "when.any[1].any: expected any of 2 conditions to hold, got (when.any[1].any[0].b: expected 1, "
        "got missing; when.any[1].any[1].c: expected 1, got missing))",
    ),
    ({"any": [{"a": 1}]}, {"a": 2}, "when.any[0].a: expected 1, got 2"),
    (
        {"not": {"state": "failed", "n": {"gt": 1}}},
        {"state": "failed", "n": 2},
        "when.not: expected not to match, got {'state': 'failed', 'n': 2}",
    ),
    (
        {"not": {"any": [{"x": {"exists": False}}, {"y": 1}]}},
        {"y": 1},
        "when.not: expected not to match, got {'x': missing, 'y': 1}",
    ),
    (
        {"all": [{"a": 1}, {"not": {"a": 1}}]},
        {"a": 1},
        "when.all[1].not: expected not to match, got {'a': 1}",
    ),
    (
        {"items.*.sku": "C"},
        {"items": [{"sku": "A"}, {}]},
        "when.items.*.sku: expected 'C' for some element, got ['A', missing]",
    ),
    ({"items.*.sku": "C"}, {"items": []}, "when.items.*.sku: expected 'C' for some element, got []"),
    (
        {"items.*": {"gte": 2, "lte": 3}},
        {"items": [1, 4]},
        "when.items.*: expected >= 2 and <= 3 for some element, got [1, 4]",
    ),
    (
        {"n": {"type": ["string", "null"]}},
        {"n": 1},
        "when.n.type: expected type one of ['string', 'null'], got 1",
    ),
    ({"n": {"type": "object"}}, {"n": [1]}, "when.n.type: expected type object, got [1]"),
    ({"$headers.X-Hook": "a"}, {}, "when.$headers.X-Hook: expected 'a', got missing"),
    ({"state": {"ne": "x"}}, {}, "when.state.ne: expected not 'x', got missing"),
    ({"state": {"in": ["a"]}}, {"state": "b"}, "when.state.in: expected one of ['a'], got 'b'"),
    ({"state": {"not_in": ["a"]}}, {"state": "a"}, "when.state.not_in: expected none of ['a'], got 'a'"),
    ({"state": {"eq": {"a": [1, None]}}}, {"state": {}}, "when.state.eq: expected {'a': [1, null]}, got {}"),
    (
        {"at": {"lt": "2024-01-01T00:00:00Z"}},
        {"at": "2025-01-01T00:00:00Z"},
        "when.at.lt: expected < '2024-01-01T00:00:00Z', got '2025-01-01T00:00:00Z'",
    ),
    (
        {"at": {"lt": datetime(2024, 1, 1, tzinfo=UTC)}},
        {"at": "2025-01-01"},
        "when.at.lt: expected < '2024-01-01T00:00:00+00:00', got '2025-01-01'",
    ),
    ({"x": {"exists": False}}, {"x": 0}, "when.x.exists: expected to be absent, got 0"),
    ({"x": {"empty": False}}, {"x": []}, "when.x.empty: expected not to be empty, got []"),
    ({"x": {"empty": True}}, {"x": " "}, "when.x.empty: expected to be empty, got ' '"),
    ({"t": {"glob": "job-*"}}, {"t": "model"}, "when.t.glob: expected to match glob 'job-*', got 'model'"),
    ({"t": {"contains": "x"}}, {"t": ["y"]}, "when.t.contains: expected to contain 'x', got ['y']"),
    ({"t": {"starts_with": "a"}}, {"t": "b"}, "when.t.starts_with: expected to start with 'a', got 'b'"),
    ({"t": {"ends_with": "a"}}, {"t": "b"}, "when.t.ends_with: expected to end with 'a', got 'b'"),
    ({"t": "x"}, {"t": "it's"}, "when.t: expected 'x', got \"it's\""),
    ({"blob": "x"}, {"blob": "y" * 200}, "when.blob: expected 'x', got '" + "y" * 76 + "..."),
)


@pytest.mark.parametrize(("spec", "body", "text"), EXPLAINED)
def test_a_failure_explains_where_what_and_the_value_seen(spec: dict[str, Any], body: Any, text: str) -> None:
    assert explain(spec, body) == text


def test_long_values_are_cut_to_eighty_characters() -> None:
    big = {f"key{i}": list(range(i)) for i in range(200)}
    text = explain({"job": {"exists": False}}, {"job": big})
    got = text.removeprefix("when.job.exists: expected to be absent, got ")
    assert got.startswith("{'key0': [], 'key1': [0], 'key2': [0, 1], ")
    assert len(got) == 80 and got.endswith("...")


@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("when", "when.a: expected 1, got 2"), ("rules[3].when", "rules[3].when.a: expected 1, got 2"),
        ("", "a: expected 1, got 2")
    ],
)
def test_where_prefixes_outcome_paths(where: str, text: str) -> None:
    assert explain({"a": 1}, {"a": 2}, where=where) == text


def test_outcome_values() -> None:
    cond = compile_when({"items.*.sku": "C", "any": [{"a": 1}, {"b": 1}]})
    assert cond.evaluate({"items": [{"sku": "C"}], "b": 1}, ENV) is MATCHED
    fan = cond.evaluate({"items": [{}, {"sku": "D"}]}, ENV)
    assert fan == Outcome(False, "when.items.*.sku", "expected 'C' for some element", [MISSING, "D"])
    assert fan.got[0] is MISSING
    branches = cond.evaluate({"items": [{"sku": "C"}], "a": 2}, ENV)
    assert branches.got == (
        Outcome(False, "when.any[0].a", "expected 1", 2),
        Outcome(False, "when.any[1].b", "expected 1", MISSING),
    )


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (MATCHED, "yes"),
        (Outcome(True, "when.a", "ignored", 1), "yes"),
        (Outcome(False, "if", "expected 'x > 1' to be true", False), "if: expected 'x > 1' to be true, got false"),
        (Outcome(False, "source", "expected 'hover'", "github"), "source: expected 'hover', got 'github'"),
        (Outcome(False), "did not hold, got missing"),
        (Outcome(False, "a", "expected 1", 1.5), "a: expected 1, got 1.5"),
        (Outcome(False, "a", "expected 1", {"k": [True, None, "v"]}), "a: expected 1, got {'k': [true, null, 'v']}"),
    ],
)
def test_outcome_text(outcome: Outcome, text: str) -> None:
    assert str(outcome) == text


def test_outcomes_are_frozen_and_missing_is_one_object() -> None:
    failed = compile_when({"a": 1}).evaluate({}, ENV)
    assert failed == Outcome(False, "when.a", "expected 1", MISSING)
    with pytest.raises(FrozenInstanceError):
        failed.matched = True  # type: ignore[misc]
    assert MATCHED == Outcome(True) and MATCHED.matched
    assert repr(MISSING) == "<missing>" and not MISSING
    assert copy.deepcopy(failed).got is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING


def test_evaluation_compiles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    cond = compile_when({"a": {"regex": "^x", "glob": "x*"}, "b.*.c": {"ne": "q"}, "d": ["e", 1]})

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled while evaluating")

    for module, name in [
        (re, "compile"), (re, "search"), (re, "match"), (fnmatch, "translate"), (fnmatch, "fnmatchcase")
    ]:
        monkeypatch.setattr(module, name, forbidden)
    assert cond.evaluate({"a": "xy", "b": [{"c": "r"}], "d": 1}, ENV) is MATCHED
    assert not cond.evaluate({"a": "yx"}, ENV).matched


# --- compile errors ----------------------------------------------------------------------

OPS_LIST = ", ".join(OPERATORS)
ENVELOPE_LIST = "$headers, $query, $source, $type, $event_id, $received_at"
TYPES_LIST = "string, number, boolean, list, object, null"
A_DATETIME = datetime(2024, 1, 1, tzinfo=UTC)

COMPILE_ERRORS = rows(
    ({}, [((), "empty condition: a condition map needs at least one entry")]),
    ([], [((), "expected a map of conditions, got list")]),
    (None, [((), "expected a map of conditions, got null")]),
    ({"all": []}, [(("all",), "empty condition: 'all' needs at least one condition map")]),
    ({"any": []}, [(("any",), "empty condition: 'any' needs at least one condition map")]),
    ({"any": {"a": 1}}, [(("any",), "'any' needs a list of condition maps, got object")]),
    ({"all": [{"a": 1}, "b"]}, [(("all", 1), "expected a map of conditions, got string")]),
    ({"any": [{}]}, [(("any", 0), "empty condition: a condition map needs at least one entry")]),
    ({"not": {}}, [(("not",), "empty condition: a condition map needs at least one entry")]),
    ({"not": [{"a": 1}]}, [(("not",), "expected a map of conditions, got list")]),
    ({"state": {}}, [(("state",), "empty condition: an operator map needs at least one operator")]),
    ({"state": []}, [(("state",), "empty condition: a list of values needs at least one value")]),
    ({"state": {"regx": "^a"}}, [(("state", "regx"), "unknown operator 'regx' (did you mean 'regex'?)")]),
    ({"state": {"nott_in": ["a"]}}, [(("state", "nott_in"), "unknown operator 'nott_in' (did you mean 'not_in'?)")]),
    ({"state": {"not": "a"}}, [(("state", "not"), "unknown operator 'not' (did you mean 'ne'?)")]),
    (
        {"job": {"city": "Paris"}},
        [
            (
                ("job", "city"),
                f"unknown operator 'city': a map value is a map of operators ({OPS_LIST}); write a nested "
                "field as a dotted key ('job.city') and compare with an object using 'eq'",
            )
        ],
    ),
    ({"s": {"regex": "("}}, [(("s", "regex"), "invalid regex '(': missing ), unterminated subpattern at position 0")]),
    ({"s": {"regex": 5}}, [(("s", "regex"), "'regex' needs a string, got number")]),
    ({"s": {"glob": None}}, [(("s", "glob"), "'glob' needs a string, got null")]),
    ({"s": {"starts_with": ["a"]}}, [(("s", "starts_with"), "'starts_with' needs a string, got list")]),
    ({"s": {"ends_with": 1}}, [(("s", "ends_with"), "'ends_with' needs a string, got number")]),
    ({"s": {"in": "a"}}, [(("s", "in"), "'in' needs a list, got string")]),
    ({"s": {"in": []}}, [(("s", "in"), "empty condition: 'in' needs at least one value")]),
    ({"s": {"not_in": []}}, [(("s", "not_in"), "empty condition: 'not_in' needs at least one value")]),
    ({"s": {"exists": "yes"}}, [(("s", "exists"), "'exists' needs true or false, got string")]),
    ({"s": {"empty": 1}}, [(("s", "empty"), "'empty' needs true or false, got number")]),
    ({"s": {"lt": "abc"}}, [(("s", "lt"), "'lt' needs a number or an ISO-8601 date-time, got 'abc'")]),
    ({"s": {"lte": "5"}}, [(("s", "lte"), "'lte' needs a number or an ISO-8601 date-time, got '5'")]),
    ({"s": {"gte": True}}, [(("s", "gte"), "'gte' needs a number or an ISO-8601 date-time, got true")]),
    ({"s": {"gt": None}}, [(("s", "gt"), "'gt' needs a number or an ISO-8601 date-time, got null")]),
    (
        {"s": {"type": "strng"}},
        [(("s", "type"), f"unknown type 'strng' (did you mean 'string'?); types are: {TYPES_LIST}")]
    ),
    (
        {"s": {"type": ["string", "array"]}},
        [(("s", "type"), f"unknown type 'array' (did you mean 'list'?); types are: {TYPES_LIST}")]
    ),
    ({"s": {"type": "xyz"}}, [(("s", "type"), f"unknown type 'xyz'; types are: {TYPES_LIST}")]),
    ({"s": {"type": []}}, [(("s", "type"), "'type' needs a type name or a non-empty list of them")]),
    ({"s": {"type": 3}}, [(("s", "type"), "'type' needs a type name or a non-empty list of them")]),
    (
        {"$header.x": 1},
        [(("$header.x",), f"unknown envelope field '$header' (did you mean '$headers'?); valid: {ENVELOPE_LIST}")],
    ),
    ({"$body.x": 1}, [(("$body.x",), f"unknown envelope field '$body'; valid: {ENVELOPE_LIST}")]),
    ({"$": 1}, [(("$",), f"unknown envelope field '$'; valid: {ENVELOPE_LIST}")]),
    ({"$source.x": 1}, [(("$source.x",), "'$source' is a string and has no fields")]),
    ({"a..b": 1}, [(("a..b",), "empty segment in path 'a..b'")]),
    ({"a.": 1}, [(("a.",), "empty segment in path 'a.'")]),
    ({"": 1}, [(("",), "empty path")]),
    ({1: "x"}, [(("1",), "a condition key must be a string path, got 1")]),
    (
        {"s": {"eq": A_DATETIME}},
        [(("s", "eq"), f"cannot compare with a datetime value ({A_DATETIME!r}); quote it to compare as a string")],
    ),
    (
        {"s": date(2024, 1, 1)},
        [(("s",), "cannot compare with a date value (datetime.date(2024, 1, 1)); quote it to compare as a string")],
    ),
    (
        {"s": {"in": ["a", {1: "b"}]}},
        [(("s", "in"), "cannot compare with a dict value ({1: 'b'}); quote it to compare as a string")],
    ),
    (
        {"a..b": {"regx": 1}},
        [
            (("a..b",), "empty segment in path 'a..b'"),
            (("a..b", "regx"), "unknown operator 'regx' (did you mean 'regex'?)")
        ],
    ),
)


@pytest.mark.parametrize(("spec", "expected"), COMPILE_ERRORS)
def test_compile_errors_name_the_place_and_the_fix(spec: Any, expected: list[tuple[tuple[Any, ...], str]]) -> None:
    assert problems(spec) == expected


def test_every_problem_in_the_tree_is_reported_at_once() -> None:
    spec = {
        "state": {"regx": "^f"},
        "all": [{"ok": 1}, {"n": {"lt": "soon", "exists": "yes"}}, {}],
        "any": [{"not": {}}, {"job": {"city": {"eq": "x"}}}],
        "not": {"$heders.x": 1, "fine": 2},
        "tags": {"regex": "[", "type": "sting"},
    }
    with pytest.raises(ConfigError) as info:
        compile_when(spec)
    locs = [p.loc for p in info.value.problems]
    assert locs == [
        ("state", "regx"),
        ("all", 1, "n", "lt"),
        ("all", 1, "n", "exists"),
        ("all", 2),
        ("any", 0, "not"),
        ("any", 1, "job", "city"),
        ("not", "$heders.x"),
        ("tags", "regex"),
        ("tags", "type"),
    ]
    text = str(info.value.under(("rules", 3, "when")))
    assert "rules[3].when.all[1].n.lt: 'lt' needs a number or an ISO-8601 date-time, got 'soon'" in text
    assert "rules[3].when.tags.type: unknown type 'sting' (did you mean 'string'?)" in text


# --- required equalities and resolve -----------------------------------------------------

REQUIRED = rows(
    ({"state": "failed"}, {"state": "failed"}),
    ({"n": 3}, {"n": 3}),
    ({"n": 3.0}, {}),
    ({"b": True}, {}),
    ({"a": None}, {}),
    ({"state": {"eq": "x", "ne": "y"}}, {"state": "x"}),
    ({"state": {"ne": "y"}}, {}),
    ({"state": ["a", "b"]}, {}),
    ({"items.*.sku": "A"}, {}),
    ({"any": [{"a": 1}, {"b": 2}]}, {}),
    ({"any": [{"a": 1}]}, {"a": 1}),
    ({"not": {"a": 1}}, {}),
    ({"all": [{"a": 1}, {"all": [{"b": "x"}]}], "c": "y"}, {"a": 1, "b": "x", "c": "y"}),
    ({"$headers.X-Event": "push", "$type": "t"}, {"$headers.x-event": "push", "$type": "t"}),
    ({"a": "x", "all": [{"a": "y"}]}, {"a": "x"}),
)


@pytest.mark.parametrize(("spec", "expected"), REQUIRED)
def test_required_equalities(spec: dict[str, Any], expected: dict[str, object]) -> None:
    assert required_equalities(compile_when(spec)) == expected


RESOLVED = rows(
    ("state", {"state": "x"}, "x"),
    ("missing", {}, MISSING),
    ("a.1", {"a": [0, 1]}, 1),
    ("items.*.sku", {"items": [{"sku": 1}, {}, {"sku": 2}]}, [1, MISSING, 2]),
    ("items.*.sku", {"items": 3}, []),
    ("$headers.X-GitHub-Event", {}, "push"),
    ("$source", {}, "github"),
    ("$query", {}, ENV["query"]),
)


@pytest.mark.parametrize(("path", "body", "expected"), RESOLVED)
def test_resolve(path: str, body: Any, expected: Any) -> None:
    assert resolve(path, body, ENV) == expected


def test_resolve_rejects_a_bad_path() -> None:
    with pytest.raises(ConfigError, match="unknown envelope field '\\$nope'"):
        resolve("$nope", {}, ENV)


# --- the reference implementation --------------------------------------------------------

ABSENT = object()

# Date-time texts with their instants worked out by hand, not by the parser under test.
DATES: dict[str, datetime] = {
    "2024-05-01T12:00:00Z": datetime(2024, 5, 1, 12, tzinfo=UTC),
    "2024-05-01T14:00:00+02:00": datetime(2024, 5, 1, 12, tzinfo=UTC),
    "2024-05-01T12:00:01": datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC),
    "2024-05-01": datetime(2024, 5, 1, tzinfo=UTC),
    "2024-04-30T20:30:00-04:00": datetime(2024, 5, 1, 0, 30, tzinfo=UTC),
    "2023-12-31T23:59:59.500+00:00": datetime(2023, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
}
ORDER = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
TYPE_NAMES = {
    bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object", type(None): "null"
}


def ref_equal(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if type(a) in (int, float) and type(b) in (int, float):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(ref_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return set(a) == set(b) and all(ref_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_operator(op: str, x: Any, v: Any) -> bool:
    if v is ABSENT:
        return (op, x) in (("exists", False), ("empty", True))
    if op == "eq":
        return ref_equal(v, x)
    if op == "ne":
        return not ref_equal(v, x)
    if op == "in":
        return any(ref_equal(v, item) for item in x)
    if op == "not_in":
        return not any(ref_equal(v, item) for item in x)
    if op in ORDER:
        if type(x) in (int, float):
            return type(v) in (int, float) and ORDER[op](v, x)
        return type(v) is str and v in DATES and ORDER[op](DATES[v], DATES[x])
    if op == "regex":
        return type(v) is str and re.search(x, v) is not None
    if op == "glob":
        return type(v) is str and fnmatch.fnmatchcase(v, x)
    if op == "contains":
        if type(v) is str:
            return type(x) is str and x in v
        return type(v) is list and any(ref_equal(item, x) for item in v)
    if op == "starts_with":
        return type(v) is str and v.startswith(x)
    if op == "ends_with":
        return type(v) is str and v.endswith(x)
    if op == "exists":
        return x is True
    if op == "empty":
        return (v is None or (v in ("", [], {}) and type(v) in (str, list, dict))) is x
    assert op == "type"
    return TYPE_NAMES[type(v)] in ([x] if type(x) is str else x)


def ref_value(spec: Any, v: Any) -> bool:
    if type(spec) is dict:
        return all(ref_operator(op, x, v) for op, x in spec.items())
    if type(spec) is list:
        return ref_operator("in", spec, v)
    return ref_operator("eq", spec, v)


def ref_holds(when: dict[str, Any], body: dict[str, Any]) -> bool:
    for key, spec in when.items():
        if key == "items.*":
            items = body.get("items", ABSENT)
            values = items if type(items) is list else list(items.values()) if type(items) is dict else []
            if not any(ref_value(spec, v) for v in values):
                return False
        elif not ref_value(spec, body.get(key, ABSENT)):
            return False
    return True


# --- strategies --------------------------------------------------------------------------

texts = st.text(alphabet="ab*?", max_size=3)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, float("inf")]),
    texts,
    st.sampled_from(sorted(DATES)),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.sampled_from(["k", "j"]), scalars, max_size=2),
)
value_lists = st.lists(values, min_size=1, max_size=3)
numbers = st.one_of(st.integers(-2, 2), st.sampled_from([0.5, 1.0, -1.5]))
type_names = st.sampled_from(["string", "number", "boolean", "list", "object", "null"])

OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "eq": values,
    "ne": values,
    "in": value_lists,
    "not_in": value_lists,
    "lt": st.one_of(numbers, st.sampled_from(sorted(DATES))),
    "lte": st.one_of(numbers, st.sampled_from(sorted(DATES))),
    "gt": st.one_of(numbers, st.sampled_from(sorted(DATES))),
    "gte": st.one_of(numbers, st.sampled_from(sorted(DATES))),
    "regex": st.sampled_from(["a", "^a", "b$", "a*b", "^$", "[ab]{2}", r"\*", r"\?."]),
    "glob": texts,
    "contains": values,
    "starts_with": texts,
    "ends_with": texts,
    "exists": st.booleans(),
    "empty": st.booleans(),
    "type": st.one_of(type_names, st.lists(type_names, min_size=1, max_size=3)),
}


@st.composite
def operator_maps(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(OPERANDS)), min_size=1, max_size=2, unique=True))
    return {name: draw(OPERANDS[name]) for name in names}


value_specs = st.one_of(scalars, st.lists(scalars, min_size=1, max_size=3), operator_maps())
bodies = st.dictionaries(st.sampled_from(["a", "b", "c", "items"]), values, max_size=4)
whens = st.dictionaries(st.sampled_from(["a", "b", "d", "items.*"]), value_specs, min_size=1, max_size=3)


def test_the_reference_knows_every_operator() -> None:
    assert set(OPERANDS) == set(OPERATORS)


@settings(max_examples=400, deadline=None, database=None)
@given(when=whens, body=bodies)
def test_evaluate_agrees_with_a_reference_implementation(when: dict[str, Any], body: dict[str, Any]) -> None:
    cond = compile_when(when)
    outcome = cond.evaluate(body, ENV)
    assert outcome.matched is ref_holds(when, body)
    assert (outcome is MATCHED) is outcome.matched
    if outcome.matched:
        for path, value in required_equalities(cond).items():
            assert ref_equal(resolve(path, body, ENV), value)
    else:
        assert outcome.path.startswith("when.") and outcome.expected.startswith("expected ")
        assert str(outcome).startswith(outcome.path + ": ")


offsets = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets)


def iso(moment: datetime, zulu: bool) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


@settings(max_examples=200, deadline=None, database=None)
@given(field=moments, operand=moments, op=st.sampled_from(sorted(ORDER)), zulu=st.booleans())
def test_date_times_order_like_the_instants_they_name(field: datetime, operand: datetime, op: str, zulu: bool) -> None:
    def instant(moment: datetime) -> datetime:
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    expected = ORDER[op](instant(field), instant(operand))
    assert holds({"t": {op: iso(operand, zulu)}}, {"t": iso(field, zulu)}) is expected
