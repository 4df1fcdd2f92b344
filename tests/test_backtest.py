"""engine/rules/backtest.py and ``hookwise backtest``: a store of known events, matched when they
arrived by the rules of that time, backtested with the live rules and with a changed file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import cli
from engine.cli import authoring as cli_authoring
from engine.errors import ConfigError, UsageError
from engine.rules.backtest import BATCH, Backtest, rules_from_path, rules_from_text, window_start
from engine.rules.loader import Loaded, load
from engine.store import Incoming, Matched, Store, open_store

DAY = 86400.0
#: When the events of the test arrived: the window starts at T0 (a fixed time, far past).
T0 = 1_700_000_000.0

LIVE = """
rules:
  - name: failed-jobs
    event: job-state-changed
    when: {state: failed}
    actions:
      - log: {message: "job {{ event.job_id }} failed"}
  - name: completions
    event: job-state-changed
    when: {state: complete}
    actions:
      - log: {message: "job {{ event.job_id }} done"}
"""

CHANGED = """
rules:
  - name: failed-jobs
    event: job-state-changed
    when: {state: [failed, cancelled]}
    actions:
      - log: {message: "job {{ event.job_id }} failed"}
  - name: big-jobs
    event: job-state-changed
    when: {hours: {gt: 5}}
    actions:
      - log: {message: "big job {{ event.job.name }}"}
      - log: {message: "{{ steps.log.anything }}"}
"""

CONFIG = """\
store: sqlite:///store.db
rules: [rules/]
sources:
  hover: {preset: hover, token: t0ken-for-tests}
"""


def put(store: Store, at: float, body: dict[str, Any], type_: str = "job-state-changed") -> str:
    (stored,) = store.put_events([Incoming("hover", type_, json.dumps(body), {}, {}, at)])
    return stored.event_id


def record(store: Store, loaded: Loaded) -> int:
    """Match the pending events as the worker does (the explain record is what it stores),
    without creating runs: what was recorded when they arrived."""
    def matcher(events: list[Any]) -> list[Matched]:
        return [Matched(e.id, loaded.masker.mask_value(loaded.rules.match(e).explain()), [], e) for e in events]

    count, _ = store.match_events(1000, matcher, event_lease=10.0)
    return count


class Known:
    """The store's events, by what they are."""

    def __init__(self, project: Callable[..., Path]) -> None:
        self.config = project(LIVE, CONFIG)
        (self.config.parent / "changed.yaml").write_text(CHANGED)
        self.loaded = load(self.config)
        self.store = open_store(self.loaded.config.store_url(), clock=lambda: T0 + 30 * DAY)
        self.old = put(self.store, T0 - DAY, {"state": "failed", "job_id": 0})  # before the window
        self.failed = [put(self.store, T0 + i, {"state": "failed", "job_id": i, "hours": i}) for i in range(1, 5)]
        self.complete = [put(self.store, T0 + 10 + i, {"state": "complete", "job_id": i}) for i in range(3)]
        self.cancelled = [
            put(self.store, T0 + 20 + i, {"state": "cancelled", "job_id": i, "hours": 9, "job": {"name": f"j{i}"}})
            for i in range(7)
        ]
        self.other = put(self.store, T0 + 40, {"state": "failed"}, type_="model-state-changed")
        assert record(self.store, self.loaded) == 16
        self.pending = put(self.store, T0 + 50, {"state": "failed", "job_id": 99})  # not matched yet


@pytest.fixture
def known(project: Callable[..., Path]) -> Known:
    return Known(project)


def by_rule(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in report["rules"]}


def test_the_live_rules_match_what_they_matched_when_the_events_arrived(known: Known) -> None:
    report = Backtest(known.loaded, known.loaded.rules, known.store, since=T0).run().json()
    assert (report["events"], report["pending"], report["truncated"]) == (16, 1, False)
    rules = by_rule(report)
    assert set(rules) == {"failed-jobs", "completions", "hookwise.hover-verify.hover"}
    failed = rules["failed-jobs"]
    # The pending event would match, but there is nothing recorded to compare it with.
    assert (failed["would"], failed["did"]) == (5, 4)
    assert failed["would_not_did"] == failed["did_not_would"] == {"count": 0, "examples": []}
    assert (rules["completions"]["would"], rules["completions"]["did"]) == (3, 3)
    assert failed["render_errors"] == {"count": 0, "examples": []} and failed["rendered"] == 5


def test_a_changed_rule_file_shows_the_differences_both_ways(known: Known) -> None:
    changed = rules_from_path(known.loaded, known.config.parent / "changed.yaml")[0]
    report = Backtest(known.loaded, changed, known.store, since=T0, until=T0 + 45).run().json()
    assert (report["events"], report["pending"]) == (15, 0)
    rules = by_rule(report)
    failed = rules["failed-jobs"]
    assert (failed["would"], failed["did"], failed["in_set"]) == (11, 4, True)
    assert failed["would_not_did"] == {"count": 7, "examples": known.cancelled[:5]}
    assert failed["did_not_would"] == {"count": 0, "examples": []}
    gone = rules["completions"]  # not in the changed file: known from the records alone
    assert (gone["in_set"], gone["would"], gone["did"]) == (False, 0, 3)
    assert gone["did_not_would"] == {"count": 3, "examples": known.complete}
    big = rules["big-jobs"]  # hours > 5: the seven cancelled jobs; job.name is missing from none of them
    assert (big["would"], big["did"]) == (7, 0)
    assert big["would_not_did"]["count"] == 7
    # Its second step reads an earlier step's output, which a backtest cannot know: no error.
    assert big["render_errors"]["count"] == 0


def test_a_rule_that_would_render_with_errors_is_named_with_examples(known: Known) -> None:
    changed, _ = rules_from_text(known.loaded, """
rules:
  - name: needs-a-name
    event: job-state-changed
    when: {state: failed}
    actions:
      - log: {message: "{{ event.job.name }}"}
""")
    report = Backtest(known.loaded, changed, known.store, since=T0).run().json()
    errors = by_rule(report)["needs-a-name"]["render_errors"]
    assert errors["count"] == 5
    assert [e["event_id"] for e in errors["examples"]] == [*known.failed, known.pending]
    assert errors["examples"][0]["error"].startswith("step 0 (log): message: ")
    assert "job" in errors["examples"][0]["error"]


def test_filters_and_paging(known: Known) -> None:
    only = Backtest(known.loaded, known.loaded.rules, known.store, since=T0, type="model-state-changed").run()
    assert only.events == 1 and only.rules["failed-jobs"].would == 0
    seen: list[int] = []
    capped = Backtest(known.loaded, known.loaded.rules, known.store, since=T0, max_events=6).run(
        lambda n, at: seen.append(n)
    )
    assert (capped.events, capped.truncated, seen) == (6, True, [6])
    assert BATCH >= 1000  # pages are large: matching dominates, not the round trips


def test_a_backtest_changes_nothing_in_the_store(known: Known) -> None:
    before = known.store.list_events(limit=100)
    Backtest(known.loaded, rules_from_path(known.loaded, known.config.parent / "changed.yaml")[0], known.store,
             since=0).run()
    assert known.store.list_events(limit=100) == before
    assert known.store.list_runs() == []
    assert known.store.get_event(known.pending)["status"] == "pending"  # type: ignore[index]


def test_the_command_prints_the_table_and_json(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["backtest", "-c", str(known.config), "--since", "2023-11-14T22:13:20Z", "--rules", "changed.yaml"]
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "backtest of changed.yaml (changed): 16 events from 2023-11-14T22:13:20Z to now" in out
    assert "(1 not matched yet: nothing to compare)" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("RULE"))
    assert lines[header].split() == ["RULE", "WOULD", "DID", "NEW", "GONE", "RENDER", "ERRORS"]
    assert lines[header + 1].split() == ["big-jobs", "7", "0", "7", "0", "0/7"]
    assert lines[header + 2].split() == ["failed-jobs", "12", "4", "7", "0", "0/12"]
    assert f"  would match, did not: {', '.join(known.cancelled[:5])} and 2 more" in out
    assert f"  did match, would not: {', '.join(known.complete)}" in out
    assert cli.run([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert by_rule(report)["completions"]["did_not_would"]["count"] == 3


def test_bad_input_is_one_line_and_an_exit_code(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(known.config)
    assert cli.run(["backtest", "-c", config, "--since", "last tuesday"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --since: expected a duration (7d, 12h) or an ISO-8601 time, got 'last tuesday'"
    )
    assert cli.run(["backtest", "-c", config, "--rules", "nowhere.yaml"]) == 78
    assert "no such file or folder: nowhere.yaml" in capsys.readouterr().err
    (known.config.parent / "bad.yaml").write_text("rules:\n  - name: x\n    event: a\n    whenn: {}\n")
    assert cli.run(["backtest", "-c", config, "--rules", "bad.yaml"]) == 78
    assert capsys.readouterr().err.strip().startswith("bad.yaml:4:5: rules[0].whenn: unknown key")


def test_window_start_reads_durations_and_times() -> None:
    assert window_start("7d", 1000 * DAY) == 993 * DAY
    assert window_start("2023-11-14T22:13:20Z", 0) == T0
    with pytest.raises(UsageError):
        window_start("soon", 0)


def test_a_rule_text_with_problems_is_refused_with_every_problem(known: Known) -> None:
    with pytest.raises(ConfigError) as caught:
        rules_from_text(known.loaded, "rules:\n  - name: x\n  - name: y\n    event: a\n    actions: [{lg: {}}]\n")
    assert [str(p) for p in caught.value.problems] == [
        "<request>:2:5: rules[0]: a rule needs at least one of source, event, when or if "
        '(event: "*" matches everything)',
        "<request>:2:5: rules[0].actions: a rule needs at least one action (or stop: true)",
        "<request>:5:16: rules[1].actions[0].lg: unknown key (did you mean 'log'?)",
    ]


def test_the_progress_line_says_how_far_into_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    show = cli_authoring._progress(T0, T0 + 100)
    show(4000, T0 + 25)
    show(6000, T0 + 200)  # an event past the end (received while the backtest ran) counts as the end
    assert capsys.readouterr().err == (
        "\rbacktest: 4,000 events read, 25% of the window\rbacktest: 6,000 events read, 100% of the window"
    )
