"""engine/rules/shapes.py through ``hookwise check``: warnings for paths no event of the rule's
types has, on the shipped catalogs (Hover's from the fixtures, GitHub, Stripe) and on the
events a store holds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import cli
from engine.rules.shapes import _PARSER, _event_paths, catalog, normal, paths_of
from engine.store import Incoming, open_store

from .conftest import FIXTURES

HOVER = """\
rules:
  - name: typo
    source: hover
    event: job-state-changed-v2
    when:
      job.stat: failed
      any:
        - {state: failed}
        - {job_idd: {exists: true}}
      gone: {exists: false}
      $headers.x-anything: y
    if: "event.job_estimated_hours_to_completion > 1 and event.webhok_id"
    actions:
      - log: {message: "job {{ event.job_ids }} {{ event.missing | default('') }} {{ event.state }}"}
        if: "event.note is defined and event.job_id"
  - name: fine
    source: hover
    event: [job-state-changed, job-state-changed-v2]
    when: {state: failed, job_external_identifier: {exists: true}}
    actions:
      - log: {message: "{{ event.job_id }} {{ event['content-available'] }} {{ steps.x.y | default(1) }}"}
  - name: not-judged
    event: "job-*"
    when: {anything.at.all: 1}
    actions:
      - log: {message: "{{ event.whatever }}"}
"""

CONFIG = """\
store: sqlite:///store.db
rules: [rules/]
sources:
  hover: {preset: hover, token: t0ken-for-tests}
  gh: {preset: github, secret: gh-secret}
  pay: {preset: stripe, secret: whsec_test}
  shop: {token: shop-t0ken, type: "body:kind"}
"""


def check(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = cli.run(["check", "-c", str(config), *args])
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if not line.startswith("note:")], captured.out


def test_hover_paths_are_checked_against_the_fixtures(
    project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = project(HOVER, CONFIG)
    code, warnings, out = check(config, capsys)
    assert code == 0
    assert warnings == [
        "rules/rules.yaml:6:7: rules[0].when.job.stat: warning: "
        "no job-state-changed-v2 event has this path; did you mean state?",
        "rules/rules.yaml:9:12: rules[0].when.any[1].job_idd: warning: "
        "no job-state-changed-v2 event has this path; did you mean job_id?",
        "rules/rules.yaml:12:9: rules[0].if: warning: "
        "event.webhok_id: no job-state-changed-v2 event has this path; did you mean webhook_id?",
        "rules/rules.yaml:14:24: rules[0].actions[0].log.message: warning: "
        "event.job_ids: no job-state-changed-v2 event has this path; did you mean job_id?",
    ]
    assert out.strip().endswith("4 warnings")
    code, _, _ = check(config, capsys, "--strict")
    assert code == 1


def test_github_and_stripe_paths_are_checked_against_their_catalogs(
    project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = project("""\
rules:
  - name: pushes
    source: gh
    event: push
    when: {repository.ful_name: octocat/Hello-World, commits.0.author.email: {ends_with: "@github.com"}}
    actions:
      - log: {message: "{{ event.head_commit.mesage }} by {{ event.pusher.name }}"}
  - name: paid
    source: pay
    event: [payment_intent.succeeded, charge.succeeded]
    when: {data.object.amount_recieved: {gt: 0}, data.object.currency: usd}
    actions:
      - log: {message: "{{ event.data.object.metadata.order_id }}"}
""", CONFIG)
    code, warnings, _ = check(config, capsys, "--strict")
    assert code == 1
    assert warnings == [
        "rules/rules.yaml:5:12: rules[0].when.repository.ful_name: warning: "
        "no push event has this path; did you mean repository.full_name?",
        "rules/rules.yaml:7:24: rules[0].actions[0].log.message: warning: "
        "event.head_commit.mesage: no push event has this path; did you mean head_commit.message?",
        "rules/rules.yaml:11:12: rules[1].when.data.object.amount_recieved: warning: "
        "no charge.succeeded or payment_intent.succeeded event has this path; "
        "did you mean data.object.amount_received?",
    ]


def test_paths_are_checked_against_the_events_the_store_holds(
    project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = project("""\
rules:
  - name: orders
    source: shop
    event: order.created
    when: {order.totl: {gt: 1}, order.items.0.sku: a, order.items.*.qty: 1}
    actions:
      - log: {message: "{{ event.order.itms | length }} {{ event.order.items[0].sku }}"}
  - name: refunds
    source: shop
    event: order.refunded
    when: {nothing.stored: yes}
    actions:
      - log: {message: "{{ event.anything }}"}
""", CONFIG)
    code, warnings, _ = check(config, capsys, "--strict")
    assert (code, warnings) == (0, [])  # no store yet: nothing known of the shop's events
    store = open_store(f"sqlite:///{config.parent / 'store.db'}")
    bodies = [{"kind": "order.created", "order": {"total": 5, "items": [{"sku": "a", "qty": 1}]}},
              {"kind": "order.created", "order": {"total": 7, "items": []}, "note": "first"}]
    store.put_events([Incoming("shop", "order.created", json.dumps(b), {}, {}, 1.0) for b in bodies])
    store.close()
    code, warnings, _ = check(config, capsys)
    assert code == 0
    assert warnings == [
        "rules/rules.yaml:5:12: rules[0].when.order.totl: warning: "
        "no order.created event has this path; did you mean order.total?",
        "rules/rules.yaml:7:24: rules[0].actions[0].log.message: warning: "
        "event.order.itms: no order.created event has this path; did you mean order.items?",
    ]


def test_paths_of_a_body_and_of_a_rule_read_alike() -> None:
    assert paths_of({"a": {"b": [{"c": 1}, {"d": [2]}]}, "e": []}) == {"a", "a.b", "a.b.*", "a.b.*.c", "a.b.*.d",
                                                                       "a.b.*.d.*", "e"}
    assert normal("items.0.sku") == normal("items.*.sku") == "items.*.sku"
    tree = _PARSER.parse("{{ event.a.b }}{{ event['c'][0].d }}{{ event.e | default(1) }}{% if event.f is defined %}"
                         "{{ event.f.g }}{% endif %}{{ other.h }}{{ event[key] }}")
    assert _event_paths(tree) == ["a.b", "c.0.d", "f.g"]


def test_the_hover_catalog_holds_every_fixture() -> None:
    shipped = catalog("hover")
    for fixture in sorted(FIXTURES.glob("hover/*.json")):
        body = json.loads(fixture.read_text())
        assert paths_of(body) <= shipped[body["event"]], fixture.name
    assert {"push", "pull_request", "issues", "workflow_run"} <= set(catalog("github"))
    assert {"payment_intent.succeeded", "invoice.paid", "checkout.session.completed"} <= set(catalog("stripe"))
    assert catalog("slack") == {}
