"""engine/ops/operations.py's overview for the UI: activity by source, runs by status, last
errors, and the Hover account as the store knows it (a real SQLite store)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from engine.ops import operations as ops
from engine.rules.loader import load
from engine.run.runs import StepResult
from engine.store import HoverTokens, Incoming, Matched, NewRun, open_store

NOW = 1_800_000_030.0  # 30 s into a minute


def test_activity_fills_every_minute_of_the_window(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        store.put_events(
            [
                Incoming("shop", "t", "{}", {}, {}, NOW - 3600),  # before the window
                Incoming("shop", "t", "{}", {}, {}, NOW - 5),
                Incoming("shop", "t", "{}", {}, {}, NOW - 70),
                Incoming("hover", "t", "{}", {}, {}, NOW - 59 * 60),
            ]
        )
        found = ops.activity(store, minutes=60, now=NOW)
    finally:
        store.close()
    assert found["minutes"] == 60 and found["start"] == "2027-01-15T07:01:00Z"
    assert list(found["sources"]) == ["hover", "shop"]
    assert (
        found["sources"]["shop"][-1] == 1 and found["sources"]["shop"][-2] == 1 and sum(found["sources"]["shop"]) == 2
    )
    assert found["sources"]["hover"][0] == 1 and sum(found["sources"]["hover"]) == 1


def test_overview_and_last_errors(project: Callable[..., Path]) -> None:
    config = project(
        "rules:\n  - {name: r, event: '*', actions: [{log: {message: hi}}]}\n",
        "store: sqlite:///s.db\nrules: [rules/]\nsources:\n  hover: {preset: hover, token: '${T}'}\n",
    )
    loaded = load(config, {"T": "url-t0ken-secret"})
    store = open_store(loaded.config.store_url())
    try:
        runs = []
        for _ in range(3):
            store.put_events([Incoming("hover", "t", "{}", {}, {}, time.time())])
            (event,) = store.claim_events(1, 60)
            run = NewRun(
                id=f"{event.id}-r", rule="r", version="v", rule_file="f", rule_text="t", steps=[(0, "log", "log")]
            )
            store.record_matches([Matched(event.id, [], [run])])
            runs.append(run.id)
        tasks = {t.run_id: t for t in store.claim_steps(10, 60)}
        store.record_steps(
            [
                StepResult(tasks[runs[0]], "failed", error="token url-t0ken-secret refused", finished_at=time.time()),
                StepResult(tasks[runs[1]], "failed", error="busy", retry_in=30, finished_at=time.time() + 1),
            ]
        )
        found = ops.overview(loaded, store)
    finally:
        store.close()
    assert found["runs"] == {"active": 2, "succeeded": 0, "dead": 1, "waiting": 0, "skipped": 0}
    assert [r["id"] for r in found["dead_runs"]] == [runs[0]]
    assert [(e["state"], e["run_id"], e["error"]) for e in found["errors"]] == [
        ("retrying", runs[1], "busy"),
        ("dead", runs[0], "token **** refused"),
    ]  # newest first, secrets masked
    assert found["errors"][0]["retry_at"] is not None and found["errors"][1]["retry_at"] is None
    assert [s["name"] for s in found["sources"]] == ["hover"] and sum(found["activity"]["sources"]["hover"]) == 3


def test_hover_account(project: Callable[..., Path]) -> None:
    config = project(
        "rules:\n  - {name: r, event: '*', actions: [{log: {message: hi}}]}\n",
        "store: sqlite:///s.db\nrules: [rules/]\nhover: {client_id: c, client_secret: '${S}'}\nsources: {}\n",
    )
    loaded = load(config, {"S": "client-s3cret"})
    store = open_store(loaded.config.store_url())
    try:
        before = ops.hover_account(loaded, store)
        store.save_hover_tokens(HoverTokens("access-t0ken", "refresh-t0ken", NOW))
        store.save_hover_webhook(
            "77", source="hover", url="https://h.example/hooks/hover", verified_at=NOW, verify_method="PUT"
        )
        after = ops.hover_account(loaded, store)
    finally:
        store.close()
    assert (before["connected"], before["expires_at"], before["webhooks"]) == (False, None, [])
    assert before["missing"] == ["redirect_uri"]
    assert after["connected"] and after["expires_at"] == "2027-01-15T08:00:30Z"
    assert after["webhooks"] == [
        {
            "id": "77",
            "url": "https://h.example/hooks/hover",
            "source": "hover",
            "verified_at": "2027-01-15T08:00:30Z",
            "verify_method": "PUT",
            "last_error": None,
            "at_hover": False,
        }
    ]
    assert "access-t0ken" not in str(after) and "client-s3cret" not in str(after)
