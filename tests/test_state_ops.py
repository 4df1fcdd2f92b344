"""Stateful rules as people see them: the API (waiting runs and their reason, skip, the
rules' state), the rule page of the UI, and the command line (explain, runs skip), over a
real server on loopback and a real SQLite store."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli
from engine.run.matching import match_event
from engine.run.runs import StepResult
from engine.run.worker import Worker
from engine.store import Incoming

from .support import post
from .test_receiver import Served

CONFIG = """\
store: sqlite:///data/h.db
rules: [rules.yaml]
sources:
  open: {type: 'body:type', id: 'body:id', verify: none}
"""

RULES = """\
rules:
  - name: mail
    event: done
    throttle: {key: "{{ event.email }}", once_within: 1h}
    actions: [{log: {message: mail}}]
  - name: crm
    event: job
    order_by: "{{ event.job_id }}"
    actions: [{log: {message: push}}]
"""


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules.yaml").write_text(RULES)
    s = Served(tmp_path, config=CONFIG)
    yield s
    s.close()


def get(served: Served, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(served.url(path), timeout=10) as r:
        text = r.read().decode()
        return r.status, json.loads(text) if r.headers.get_content_type() == "application/json" else text


def send(served: Served, body: dict[str, Any]) -> str:
    (stored,) = served.store.put_events([Incoming("open", body["type"], json.dumps(body), {}, {}, time.time())])
    return stored.event_id


def match(served: Served) -> Worker:
    worker = Worker(served.store, lambda: served.loaded)
    served.store.match_events(
        100, lambda events: [match_event(served.loaded, e) for e in events], event_lease=10, serial=True
    )
    return worker


def fail_first(served: Served, worker: Worker) -> None:
    (task,) = served.store.claim_steps(10, 60)
    served.store.record_steps([StepResult(task=task, outcome="failed", error="crm down", step_count=1, ordered=True)])


def test_a_waiting_run_names_the_dead_run_and_skipping_that_one_lets_it_start(served: Served) -> None:
    first, second = send(served, {"type": "job", "job_id": 1}), send(served, {"type": "job", "job_id": 1})
    fail_first(served, match(served))
    (dead,), (waiting,) = served.store.runs_of_event(first), served.store.runs_of_event(second)
    status, run = get(served, f"/api/runs/{waiting['id']}")
    assert status == 200 and run["status"] == "waiting"
    assert run["waiting_for"]["run_id"] == dead["id"] and run["waiting_for"]["status"] == "dead"
    assert f"hookwise runs skip {dead['id']}" in run["error"]
    status, answer = post(served.url(f"/api/runs/{waiting['id']}x/skip"), b"")
    assert status == 404
    status, answer = post(served.url(f"/api/runs/{dead['id']}/skip"), b"")
    assert status == 200 and isinstance(answer, dict) and answer["status"] == "skipped"
    assert served.store.get_run(waiting["id"])["status"] == "active"  # type: ignore[index]
    status, answer = post(served.url(f"/api/runs/{dead['id']}/skip"), b"")
    assert status == 409 and isinstance(answer, dict) and "only a dead or waiting run" in answer["message"]


def test_runs_skip_on_the_command_line(served: Served) -> None:
    first, second = send(served, {"type": "job", "job_id": 1}), send(served, {"type": "job", "job_id": 1})
    fail_first(served, match(served))
    (dead,) = served.store.runs_of_event(first)
    runner = CliRunner()
    shown = runner.invoke(cli, ["explain", "-c", "config.yaml", second])
    assert shown.exit_code == 0 and f"waiting: run {dead['id']} of order_by key '1' is dead" in shown.output
    done = runner.invoke(cli, ["runs", "skip", "-c", "config.yaml", dead["id"]])
    assert done.exit_code == 0 and f"run {dead['id']} skipped" in done.output
    again = runner.invoke(cli, ["runs", "skip", "-c", "config.yaml", dead["id"]])
    assert again.exit_code != 0 and "only a dead or waiting run can be skipped" in str(again.exception)


def test_explain_the_api_and_the_rule_page_show_a_throttle(served: Served) -> None:
    send(served, {"type": "done", "email": "ada@example.com"})
    second = send(served, {"type": "done", "email": "ada@example.com"})
    match(served)
    shown = CliRunner().invoke(cli, ["explain", "-c", "config.yaml", second])
    assert "mail  no: throttled until " in shown.output
    status, rules = get(served, "/api/rules")
    (mail,) = [r for r in rules["rules"] if r["name"] == "mail"]
    assert mail["stateful"] == ["throttle: once per key {{ event.email }} within 1h"]
    assert [t["key"] for t in mail["state"]["throttled"]] == ["ada@example.com"]
    status, html = get(served, "/ui/rules/mail")
    assert status == 200 and "Throttled keys" in html and "ada@example.com" in html


def test_dry_run_says_what_state_a_rule_would_consult(served: Served) -> None:
    from engine.rules.dryrun import dry_run, format_text

    result = dry_run(served.loaded, {"type": "done", "email": "ada@example.com"}, "open", {})
    assert result["state"] == [{"rule": "mail", "consults": "the throttle of key 'ada@example.com': skipped if a "
                                                            "run of it started within 1h"}]
    assert "state (not read by a dry-run):" in format_text(result)


def test_a_case_time_that_is_no_time_is_a_located_error(served: Served, tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "cases.yaml").write_text(
        "cases:\n  - name: bad\n    source: open\n    event: {type: done, email: a}\n    at: tomorrow\n"
        "    expect: {rules: []}\n"
    )
    result = CliRunner().invoke(cli, ["test", "-c", "config.yaml", "tests/cases.yaml"])
    assert result.exit_code != 0
    assert "cases.yaml:5:9: cases[0].at: expected +DURATION (e.g. +2h) or an ISO time" in (
        result.output + str(result.exception)
    )
