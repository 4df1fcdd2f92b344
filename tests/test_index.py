"""engine/rules/index.py: the value index never holds back a rule that would match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import Event
from engine.rules.index import LEAF_SIZE, Dispatch
from engine.rules.loader import load

STATES = ["failed", "complete", "3", 3, 3.0, True, None]
REGIONS = ["north", "south", 7]

_pin = st.one_of(
    st.sampled_from(STATES).map(lambda v: ("state", v)),
    st.sampled_from(REGIONS).map(lambda v: ("job.region", v)),
    st.sampled_from(REGIONS).map(lambda v: ("job.region", {"eq": v})),
    st.sampled_from(["a", "b"]).map(lambda v: ("$headers.x-kind", v)),
    st.just(("state", ["failed", "complete"])),
    st.just(("job.region", {"ne": "north"})),
)
_rule = st.lists(_pin, min_size=0, max_size=3)
_event = st.fixed_dictionaries(
    {
        "state": st.sampled_from(STATES + ["other"]),
        "job": st.one_of(st.just({}), st.fixed_dictionaries({"region": st.sampled_from(REGIONS + [[1]])}))
    }
)


def rule_yaml(i: int, pins: list[tuple[str, Any]]) -> str:
    import json

    when = {}
    for path, value in pins:
        when.setdefault(path, value)
    lines = [f"  - name: r{i}", "    event: t", f"    priority: {i % 3}"]
    if when:
        lines.append(f"    when: {json.dumps(when)}")
    lines.append("    actions: [{log: {message: x}}]")
    return "\n".join(lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rules=st.lists(_rule, min_size=LEAF_SIZE * 2, max_size=60), bodies=st.lists(_event, min_size=1, max_size=10),
    kind=st.sampled_from(["a", "b", "c"])
)
def test_indexed_matching_equals_evaluating_every_rule(
    project: Callable[..., Path], rules: list[list[tuple[str, Any]]], bodies: list[dict[str, Any]], kind: str
) -> None:
    text = "rules:\n" + "\n".join(rule_yaml(i, pins) for i, pins in enumerate(rules)) + "\n"
    ruleset = load(project(text), {}).rules
    for body in bodies:
        event = Event(source="hover", type="t", body=body, headers={"x-kind": kind})
        fast = [r.name for r in ruleset.match(event).rules]
        full = [r.name for r in ruleset.match(event, every_rule=True).rules]
        assert fast == full


def test_the_index_splits_on_the_most_pinned_field(project: Callable[..., Path]) -> None:
    rules = "\n".join(rule_yaml(i, [("state", f"s{i % 4}"), ("job.region", f"r{i}")]) for i in range(40))
    text = "rules:\n" + rules + "\n"
    ruleset = load(project(text), {}).rules
    dispatch = ruleset.dispatch("hover", "t")
    assert isinstance(dispatch, Dispatch) and dispatch.root.path in ("state", "job.region")
    chosen = dispatch.select({"state": "s1", "job": {"region": "r5"}}, {})
    assert [r.name for r in chosen] == ["r5"]
