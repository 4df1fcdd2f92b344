"""The jsonl action: run with a real context, and the example's rule cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hookwise_jsonl import JsonlAction

from engine import Fail
from engine.errors import ParamsError
from engine.testing import assert_cases_pass, context, event, render_steps, run_action

EXAMPLE = Path(__file__).resolve().parent.parent / "example" / "hookwise.yaml"


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_appends_one_line_per_step(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    out = run_action(JsonlAction, {"path": str(target), "record": {"job": 7}}, event=event({"job": 7}))
    assert out == {"path": str(target), "written": True}
    run_action(JsonlAction, {"path": str(target), "record": [1, 2]}, ctx=context(run_id="other"))
    assert lines(target) == [{"key": "test-run-0", "record": {"job": 7}}, {"key": "other-0", "record": [1, 2]}]


def test_a_retried_step_writes_its_line_once(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    first = run_action(JsonlAction, {"path": str(target), "record": "a"}, ctx=context(attempt=1))
    again = run_action(JsonlAction, {"path": str(target), "record": "a"}, ctx=context(attempt=2))
    assert (first["written"], again["written"]) == (True, False)
    assert len(lines(target)) == 1


def test_bad_params_and_a_missing_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"jsonl\.recrd: unknown key"):
        run_action(JsonlAction, {"path": "x", "record": 1, "recrd": 2})
    with pytest.raises(ParamsError, match=r"jsonl\.path: String should have at least 1 character"):
        run_action(JsonlAction, {"path": "", "record": 1})
    with pytest.raises(Fail, match="does not exist"):
        run_action(JsonlAction, {"path": str(tmp_path / "no" / "out.jsonl"), "record": 1})


def test_a_rule_renders_its_params() -> None:
    (step,) = render_steps(EXAMPLE, {"kind": "order.paid", "id": "o-1", "total": 12.5})
    assert step["params"] == {"path": "data/orders.jsonl", "record": {"order": "o-1", "total": 12.5}}


def test_the_example_rule_cases_pass() -> None:
    assert_cases_pass(EXAMPLE)
