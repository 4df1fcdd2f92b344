"""engine/rules/rules.py: rule loading, its errors, the index, matching and explain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.events import Event
from engine.rules.loader import load
from engine.rules.ruleset import RuleSet
from engine.run.registry import Registry

from .conftest import FIXTURES

Project = Callable[..., Path]


def hover_event(name: str) -> Event:
    body = json.loads((FIXTURES / "hover" / f"{name}.json").read_text())
    return Event(source="hover", type=body["event"], body=body)


def errors(project: Project, rules: str | dict[str, str], **config: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(project(rules, **config), {})
    return [str(p) for p in info.value.problems]


RULE = """\
rules:
  - name: failed
    source: hover
    event: [job-state-changed, job-state-changed-v2]
    when: {state: failed}
    actions:
      - requeue: {queue: field-techs, key: "{{ event.job_id }}"}
"""


def test_a_rule_loads_with_its_version_file_and_line(project: Project) -> None:
    loaded = load(project(RULE), {})
    rule = loaded.rules.get("failed")
    assert rule is not None
    assert (rule.file, rule.line, len(rule.version)) == ("rules/rules.yaml", 2, 12)
    assert rule.steps[0].id == "requeue" and rule.steps[0].retry.attempts == 5


def test_the_version_changes_with_the_rule_text_only(project: Project) -> None:
    first = load(project(RULE), {}).rules.get("failed")
    same = load(project("# a comment above\n" + RULE), {}).rules.get("failed")
    changed = load(project(RULE.replace("failed}", "failed, job_id: {exists: true}}")), {}).rules.get("failed")
    assert first and same and changed
    assert first.version == same.version != changed.version


def test_misspelled_action_parameter(project: Project) -> None:
    rules = RULE.replace("- requeue: {queue: field-techs, key", "- requeue: {queue: field-techs, kee")
    assert errors(project, rules) == [
        "rules/rules.yaml:7:18: rules[0].actions[0].requeue.key: required",
        "rules/rules.yaml:7:39: rules[0].actions[0].requeue.kee: unknown key (did you mean 'key'?)",
    ]


def test_misspelled_action_and_step_keys(project: Project) -> None:
    rules = """\
rules:
  - name: a
    event: x
    actions:
      - htp: {url: "https://example.com"}
      - log: {message: hi}
        continue_on_eror: true
"""
    assert errors(project, rules) == [
        "rules/rules.yaml:5:9: rules[0].actions[0].htp: unknown key (did you mean 'http'?)",
        "rules/rules.yaml:7:9: rules[0].actions[1].continue_on_eror: unknown key (did you mean 'continue_on_error'?)",
    ]


def test_several_errors_in_several_files_at_once(project: Project) -> None:
    found = errors(
        project,
        {
            "a.yaml": "rules:\n  - name: a\n    actions: [{log: {message: x}}]\n",
            "b.yaml": "rules:\n  - name: b\n    event: x\n    when: {}\n    actions: [{log: {message: x}}]\n"
            "  - name: c\n    event: x\n    when: {state: {regex: '('}}\n    actions: [{log: {message: '{{ oops'}}]\n",
        },
    )
    assert found[0].startswith("rules/a.yaml:2:5: rules[0]: a rule needs at least one of source, event, when or if")
    assert found[1].startswith("rules/b.yaml:4:11: rules[0].when: ") and "empty" in found[1]
    assert found[2].startswith("rules/b.yaml:8:27: rules[1].when.state.regex: ")
    assert found[3].startswith("rules/b.yaml:9:31: rules[1].actions[0].log.message: template syntax error: ")
    assert len(found) == 4


def test_duplicate_names_across_files(project: Project) -> None:
    one = "rules:\n  - name: same\n    event: x\n    actions: [{log: {message: x}}]\n"
    found = errors(project, {"a.yaml": one, "b.yaml": one})
    assert found == [
        "rules/b.yaml:2:11: rules[0].name: duplicate rule name 'same' (first defined at rules/a.yaml:2:11)"
    ]


def test_step_problems(project: Project) -> None:
    rules = """\
rules:
  - name: a
    event: x
    actions:
      - {log: {message: x}, http: {url: "https://e.com"}}
      - {id: same, log: {message: x}}
      - {id: same, log: {message: x}}
      - {retry: {attempts: 0}, log: {message: x}}
      - {if: "steps.a ==", log: {message: x}}
      - {log: "not a map"}
      - {id: x}
"""
    found = errors(project, rules)
    assert found[0] == "rules/rules.yaml:5:9: rules[0].actions[0]: a step takes one action; found 'log', 'http'"
    assert found[1] == "rules/rules.yaml:7:14: rules[0].actions[2].id: duplicate step id 'same'"
    assert found[2].startswith("rules/rules.yaml:8:28: rules[0].actions[3].retry.attempts: ")
    assert found[3].startswith("rules/rules.yaml:9:14: rules[0].actions[4].if: template syntax error")
    assert found[4] == "rules/rules.yaml:10:15: rules[0].actions[5].log: the log action takes a mapping of parameters"
    assert found[5].startswith("rules/rules.yaml:11:9: rules[0].actions[6]: a step needs an action: one of ")
    assert len(found) == 6


def test_rule_keys_are_validated(project: Project) -> None:
    rules = "rules:\n  - name: Bad Name\n    event: x\n    priority: high\n    stopp: true\n    actions: []\n"
    found = errors(project, rules)
    assert found[0].startswith("rules/rules.yaml:2:11: rules[0].name: ")
    assert found[1].startswith("rules/rules.yaml:4:15: rules[0].priority: ")
    assert found[2] == "rules/rules.yaml:5:5: rules[0].stopp: unknown key (did you mean 'stop'?)"


def test_a_rule_without_actions_must_stop(project: Project) -> None:
    found = errors(project, "rules:\n  - name: a\n    event: x\n    actions: []\n")
    assert found == ["rules/rules.yaml:4:14: rules[0].actions: a rule needs at least one action (or stop: true)"]
    assert load(project("rules:\n  - name: a\n    event: x\n    stop: true\n"), {}).rules.get("a")


def test_unknown_source_is_a_warning(project: Project) -> None:
    loaded = load(project(RULE.replace("source: hover", "source: hovr")), {})
    assert [str(w) for w in loaded.warnings if "source" in w.message] == [
        "rules/rules.yaml:3:13: rules[0].source: warning: no source named 'hovr' is configured (did you mean 'hover'?)"
    ]


def test_missing_rules_folder_is_reported_in_the_config(project: Project, tmp_path: Path) -> None:
    config = project(RULE, config="rules: [rules/, nowhere/]\n")
    with pytest.raises(ConfigError) as info:
        load(config, {})
    (problem,) = info.value.problems
    assert problem.file == str(config) and problem.line == 1 and problem.loc == ("rules", 1)


def test_tests_folders_are_not_rules(project: Project) -> None:
    loaded = load(project({"a.yaml": RULE, "tests/cases.yaml": "cases: []\n"}), {})
    assert [r.name for r in loaded.rules] == ["failed", "hookwise.hover-verify.hover"]  # the second is built in


# --- matching and explain -------------------------------------------------------------

MANY = """\
rules:
  - name: low
    source: hover
    event: job-*
    actions: [{log: {message: low}}]
  - name: high
    priority: 10
    source: hover
    event: [job-state-changed-v2]
    when: {state: failed}
    actions: [{log: {message: high}}]
  - name: stopper
    priority: 5
    event: "*"
    when: {state: failed}
    stop: true
  - name: github-only
    source: github
    event: push
    actions: [{log: {message: gh}}]
  - name: off
    enabled: false
    event: "*"
    actions: [{log: {message: off}}]
  - name: expensive
    if: "event.job_estimated_hours_to_completion > 1"
    actions: [{log: {message: slow}}]
"""


def test_priority_stop_and_explain(project: Project) -> None:
    rules = load(project(MANY), {}).rules
    match = rules.match(hover_event("job-state-changed-v2_failed"), every_rule=True)
    assert [r.name for r in match.rules] == ["high", "stopper"]
    reasons = {v.rule.name: v.reason() for v in match.verdicts if v.rule.file != "<built-in>"}
    assert reasons == {
        "high": "yes",
        "stopper": "yes",
        "low": "no: skipped, rule 'stopper' matched first and has stop: true",
        "github-only": "no: skipped, rule 'stopper' matched first and has stop: true",
        "off": "no: skipped, rule 'stopper' matched first and has stop: true",
        "expensive": "no: skipped, rule 'stopper' matched first and has stop: true",
    }


def test_explain_names_the_failing_selector_or_condition(project: Project) -> None:
    rules = load(project(MANY), {}).rules
    match = rules.match(hover_event("job-state-changed_complete"), every_rule=True)
    reasons = {v.rule.name: v.reason() for v in match.verdicts}
    assert reasons["high"] == "no: event: expected 'job-state-changed-v2', got 'job-state-changed'"
    assert reasons["stopper"] == "no: when.state: expected 'failed', got 'complete'"
    assert reasons["low"] == "yes"
    assert reasons["github-only"] == "no: source: expected 'github', got 'hover'"
    assert reasons["off"].startswith("no: enabled")
    assert reasons["expensive"].startswith("no: if: expected 'event.job_estimated_hours_to_completion > 1' to be true")


def test_if_that_fails_to_evaluate_does_not_match(project: Project) -> None:
    text = "rules:\n  - name: a\n    if: 'event.missing.deeper > 1'\n    actions: [{log: {message: x}}]\n"
    rules = load(project(text), {}).rules
    (verdict,) = rules.match(hover_event("job-state-changed_complete")).verdicts
    assert not verdict.matched and "failed" in verdict.reason()


def test_candidates_leave_out_rules_that_cannot_match(project: Project) -> None:
    rules = load(project(MANY), {}).rules
    names = [r.name for r in rules.candidates("hover", "job-state-changed-v2")]
    assert names == ["high", "stopper", "low", "off", "expensive"]
    assert [r.name for r in rules.candidates("github", "push")] == ["stopper", "github-only", "off", "expensive"]
    # a glob is checked at evaluation: "low" (job-*) is a candidate for every hover type
    assert [r.name for r in rules.candidates("hover", "model-state-changed")] == ["stopper", "low", "off", "expensive"]


def test_candidates_agree_with_evaluating_every_rule(project: Project) -> None:
    rules = load(project(MANY), {}).rules
    for path in sorted((FIXTURES / "hover").glob("*.json")):
        event = hover_event(path.stem)
        fast = [r.name for r in rules.match(event).rules]
        full = [r.name for r in rules.match(event, every_rule=True).rules]
        assert fast == full, path.name


def test_an_empty_rule_set_matches_nothing() -> None:
    assert RuleSet([]).match(hover_event("job-state-changed_complete")).rules == []


def test_one_refused_key_hides_nothing_else(project: Project) -> None:
    # A misspelled rule key, a bad rule name, a refused priority and a broken step each
    # leave the rest of their rule and the other rules checked.
    rules = """\
rules:
  - name: a
    evnt: x
    actions:
      - log: {message: hi, levl: info}
  - name: Bad Name
    event: x
    actions:
      - http: {url: "https://example.com", metod: GET}
  - event: x
    priority: high
    actions:
      - "log"
      - log: {message: "{{ oops"}
        retry: {attempts: 0}
"""
    assert errors(project, rules) == [
        "rules/rules.yaml:3:5: rules[0].evnt: unknown key (did you mean 'event'?)",
        "rules/rules.yaml:5:28: rules[0].actions[0].log.levl: unknown key (did you mean 'level'?)",
        "rules/rules.yaml:6:11: rules[1].name: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'",
        "rules/rules.yaml:9:44: rules[1].actions[0].http.metod: unknown key (did you mean 'method'?)",
        "rules/rules.yaml:10:5: rules[2].name: required",
        "rules/rules.yaml:11:15: rules[2].priority: Input should be a valid integer, "
        "unable to parse string as an integer",
        "rules/rules.yaml:13:9: rules[2].actions[0]: a step is a mapping with one action key "
        f"({', '.join(Registry.load().names())})",  # the built-ins, and installed plugins (examples/)
        "rules/rules.yaml:14:24: rules[2].actions[1].log.message: template syntax error: unexpected end of template, "
        "expected 'end of print statement'. (line 1)",
        "rules/rules.yaml:15:27: rules[2].actions[1].retry.attempts: Input should be greater than or equal to 1",
    ]


def test_config_problems_do_not_hide_the_rule_files_and_all_come_in_file_order(project: Project) -> None:
    config = (
        "rules: [rules/]\n"
        "server: {port: \"${PORT}\"}\n"
        "sources:\n"
        "  hover: {preset: hover, token: \"${HOVER_URL_TOKEN}\"}\n"
        "  github: {preset: github, secret: gh-secret, tolerance: soon}\n"
    )
    found = errors(project, {
        "b.yaml": "rules:\n  - name: b\n    source: github\n    actions: [{log: {mesage: x}}]\n",
        "a.yaml": "rules:\n  - name: a\n    source: hover\n    timeout: 5s\n"
                  "    actions: [{log: {message: \"${NOPE}\"}}]\n",
    }, config=config)
    assert [line.replace(f"{Path.cwd()}/", "") for line in found] == [
        "config.yaml:2:16: server.port: environment variable PORT is not set",
        "config.yaml:4:33: sources.hover.token: environment variable HOVER_URL_TOKEN is not set",
        "config.yaml:5:58: sources.github.tolerance: invalid duration 'soon': use a number of seconds or a number "
        "with a unit ms, s, m, h or d (e.g. '500ms', '10s', '5m', '2h', '7d')",
        "rules/a.yaml:4:5: rules[0].timeout: unknown key",
        "rules/a.yaml:5:31: rules[0].actions[0].log.message: environment variable NOPE is not set",
        "rules/b.yaml:4:21: rules[0].actions[0].log.message: required",
        "rules/b.yaml:4:22: rules[0].actions[0].log.mesage: unknown key (did you mean 'message'?)",
    ]


def test_warnings_are_masked_too(project: Project) -> None:
    config = project(RULE.replace("source: hover", 'source: "${SRC}"'))
    loaded = load(config, {"SRC": "hover-secret-name"})
    assert [str(w) for w in loaded.warnings if "source" in w.message] == [
        "rules/rules.yaml:3:13: rules[0].source: warning: no source named '****' is configured"
    ]


GUARDED = "rules:\n  - name: a\n    event: x\n    actions:\n      - http: {{url: \"{url}\"}}\n"


@pytest.mark.parametrize(
    ("url", "http", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data/", "", "169.254.169.254 (a cloud metadata address)"),
        ("http://localhost:9000/x", "", "localhost (a loopback address)"),
        ("http://[::1]/x", "", "::1 (a loopback address)"),
        ("https://10.0.0.5/x", "", "10.0.0.5 (a private address)"),
        ("http://127.0.0.1/{{ event.path }}", "", "127.0.0.1 (a loopback address)"),  # the host is not templated
        ("https://10.0.0.5/x", "http: {allow_hosts: ['10.0.0.5']}\n", None),
        ("https://10.0.0.5:8443/x", "http: {allow_hosts: ['10.0.0.5:8443']}\n", None),
        ("https://10.0.0.5/x", "http: {allow_hosts: ['10.0.0.5:8443']}\n", "10.0.0.5 (a private address)"),
        ("http://localhost/x", "http: {allow_private: true}\n", None),
        ("http://{{ event.host }}/x", "", None),
        ("https://example.com/x", "", None),
        ("https://93.184.215.14/x", "", None),
    ],
)
def test_check_warns_of_a_literal_url_the_ssrf_guard_will_refuse(
    project: Project, url: str, http: str, refused: str | None
) -> None:
    loaded = load(project(GUARDED.format(url=url), config="rules: [rules/]\n" + http), {})
    found = [str(w) for w in loaded.warnings if "SSRF" in w.message]
    assert found == ([] if refused is None else [
        f"rules/rules.yaml:5:21: rules[0].actions[0].http.url: warning: the SSRF guard will refuse {refused}: "
        "the step will fail unless http.allow_hosts names it or http.allow_private is true"
    ])
