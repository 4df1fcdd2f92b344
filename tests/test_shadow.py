"""``mode: shadow`` (SPEC 15): a shadow rule is matched, rendered and recorded as a shadow
run, and its actions never run. A real worker, a real store, a real sink on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine import cli
from engine.ops.metrics import Metrics

from .support import Sink
from .test_worker import Harness, harness  # noqa: F401  (the fixture)


@pytest.fixture
def sink() -> Iterator[Sink]:
    made = Sink()
    yield made
    made.close()


def rules(url: str) -> str:
    return f"""
rules:
  - name: live-alert
    event: job-failed
    actions:
      - http: {{method: POST, url: "{url}/live", json: {{job: "{{{{ event.job_id }}}}"}}}}
  - name: new-alert
    mode: shadow
    event: job-failed
    stop: true
    actions:
      - id: notify
        http: {{method: POST, url: "{url}/shadow", json: {{job: "{{{{ event.job_id }}}}", who: "{{{{ event.who }}}}"}}}}
      - log: {{message: "sent {{{{ event.job_id }}}}"}}
      - if: "event.job_id == 'never'"
        log: {{message: skipped}}
"""


def test_a_shadow_rule_never_calls_its_sink_but_records_what_it_would_have_sent(
    harness: Callable[..., Harness], sink: Sink  # noqa: F811
) -> None:
    h = harness(rules(sink.url), config="http: {allow_private: true}\n")
    metrics = Metrics()
    h.worker.metrics = metrics
    event_id = h.put("job-failed", {"job_id": 42, "who": "ann"})
    live = h.finished_run(event_id, "live-alert")
    shadow = h.finished_run(event_id, "new-alert")
    assert live["status"] == shadow["status"] == "succeeded"
    assert (live["shadow"], shadow["shadow"]) == (False, True)
    # The live rule ran (a stop: true on a shadow rule changes nothing), the shadow rule's never did.
    assert [hit.path for hit in sink.hits] == ["/live"]
    steps = h.store.steps_of_run(shadow["id"])
    assert [(s["id"], s["status"]) for s in steps] == [("notify", "succeeded"), ("log", "succeeded"),
                                                       ("log_2", "skipped")]
    assert steps[0]["params"]["json"] == {"job": 42, "who": "ann"}
    assert steps[0]["params"]["url"] == f"{sink.url}/shadow"
    assert steps[0]["output"] is None
    assert steps[1]["params"] == {"message": "sent 42"}
    explain = {r["rule"]: r["matched"] for r in h.store.get_event(event_id)["explain"]}  # type: ignore[index]
    assert explain == {"live-alert": True, "new-alert": True}
    assert [r["id"] for r in h.store.list_runs(shadow=True)] == [shadow["id"]]
    assert [r["id"] for r in h.store.list_runs(shadow=False)] == [live["id"]]
    text = metrics.exposition().decode()
    assert 'hookwise_shadow_matches_total{rule="new-alert"} 1.0' in text
    assert 'hookwise_rule_matches_total{rule="live-alert"} 1.0' in text
    assert 'hookwise_rule_matches_total{rule="new-alert"}' not in text


def test_a_shadow_step_that_needs_an_earlier_output_dies_saying_so(
    harness: Callable[..., Harness], sink: Sink  # noqa: F811
) -> None:
    h = harness(f"""
rules:
  - name: chained
    mode: shadow
    event: go
    actions:
      - id: first
        http: {{method: GET, url: "{sink.url}/one"}}
      - http: {{method: POST, url: "{sink.url}/two", json: {{got: "{{{{ steps.first.json.ok }}}}"}}}}
""", config="http: {allow_private: true}\n")
    run = h.finished_run(h.put("go", {}))
    assert (run["status"], run["shadow"]) == ("dead", True)
    assert "steps.first" in run["error"] or "first" in run["error"]
    assert sink.hits == []


def test_runs_list_shows_shadow_runs_apart(
    harness: Callable[..., Harness], sink: Sink, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    h = harness(rules(sink.url), config="http: {allow_private: true}\n")
    event_id = h.put("job-failed", {"job_id": 7, "who": "bo"})
    h.finished_run(event_id, "live-alert")
    shadow = h.finished_run(event_id, "new-alert")
    config = str(Path(h.root) / "config.yaml")
    assert cli.run(["runs", "list", "-c", config, "--shadow", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["id"], r["shadow"]) for r in listed] == [(shadow["id"], True)]
    assert cli.run(["runs", "list", "-c", config]) == 0
    table = capsys.readouterr().out
    assert "succeeded (shadow)" in table and "new-alert" in table and "live-alert" in table
    assert cli.run(["runs", "list", "-c", config, "--live"]) == 0
    assert "new-alert" not in capsys.readouterr().out

