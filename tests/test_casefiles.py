"""engine/rules/casefiles.py: the subset comparison behind `hookwise test`."""

from __future__ import annotations

import pytest

from engine.rules.casefiles import subset_diff


@pytest.mark.parametrize(
    ("expected", "actual", "diffs"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, []),
        ({"a": 1}, {"a": 1.0}, []),
        ({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 2, "d": 3}]}}, []),
        ({"a": 1}, {"a": 2}, [".a: expected 1, got 2"]),
        ({"a": 1}, {}, [".a: expected 1, got nothing"]),
        ({"a": True}, {"a": 1}, [".a: expected true, got 1"]),
        ({"a": [1, 2]}, {"a": [1]}, [".a: expected [1, 2], got [1]"]),
        ({"a": {"b": 1}}, {"a": "x"}, ['.a: expected a mapping, got "x"']),
        ({"a": "42"}, {"a": 42}, ['.a: expected "42", got 42']),
    ],
)
def test_subset_diff(expected: object, actual: object, diffs: list[str]) -> None:
    assert subset_diff(expected, actual) == diffs
