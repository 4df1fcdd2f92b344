"""Backtest speed (SPEC 15): stored events per second a backtest matches, at 1,000 rules.

A SQLite store is filled with events of 50 types (the matching benchmark's rules and
events, :mod:`bench.matching`), their explain records written as the worker writes them;
then ``engine.rules.backtest.Backtest`` runs the same rules over the window. Two figures: events
per second of matching alone (the target: >= 20,000 on one core) and of the whole backtest
(reading and decoding the pages, comparing, rendering the first 100 matches of each rule).

    python -m bench.backtest [EVENTS] [RULES]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.rules.backtest import Backtest
from engine.rules.loader import load
from engine.store import Incoming, Matched, open_store

from .matching import TYPES, write_rules

#: The target of SPEC 15, events per second of matching on one core.
TARGET = 20_000


def _fill(store: Any, loaded: Any, n: int, start: float) -> None:
    batch: list[Incoming] = []
    for i in range(n):
        body = {"state": f"s{i % 7}", "job": {"id": i, "region": f"r{i % 13}"}}
        batch.append(Incoming("bench", f"type-{i % TYPES}", json.dumps(body), {}, {}, start + i * 0.001))
        if len(batch) == 1000:
            store.put_events(batch)
            batch = []
    if batch:
        store.put_events(batch)

    def matcher(events: list[Any]) -> list[Matched]:
        return [Matched(e.id, loaded.rules.match(e).explain(), [], e) for e in events]

    while store.match_events(1000, matcher, event_lease=10.0)[0]:
        pass


def measure(events: int = 50_000, rules: int = 1000, rounds: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_rules(folder, rules)
        config.write_text(config.read_text() + f"store: sqlite:///{folder / 'store.db'}\n")
        loaded = load(config)
        start = time.time() - 86400
        store = open_store(loaded.config.store_url())
        try:
            _fill(store, loaded, events, start)
            best: dict[str, Any] = {}
            for _ in range(rounds):
                report = Backtest(loaded, loaded.rules, store, since=start).run()
                if not best or report.rate > best["match_events_per_s"]:
                    best = {
                        "rules": rules, "events": report.events,
                        "match_events_per_s": round(report.rate), "events_per_s": round(report.events / report.seconds),
                        "would": sum(r.would for r in report.rules.values()),
                        "differences": sum(r.new.count + r.gone.count for r in report.rules.values()),
                    }
        finally:
            store.close()
    best["met"] = best["match_events_per_s"] >= TARGET
    return best


def report(result: dict[str, Any]) -> None:
    print(f"backtest ({result['events']:,} stored events, {result['rules']:,} rules)")
    print(f"  matching: {result['match_events_per_s']:,} events/s (target >= {TARGET:,}: "
          f"{'met' if result['met'] else 'not met'}); whole backtest: {result['events_per_s']:,} events/s; "
          f"{result['would']:,} matches, {result['differences']} differences")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    report(measure(*args))
