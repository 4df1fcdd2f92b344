"""Stateful rules (SPEC 14): the cost of matching with 1,000 throttled rules over 10,000
keys (microseconds per event: the worker's matching and the store applying the throttles,
in the transaction that records the matches), and how many due absence timers one worker
fires per second. SQLite, a file in a temporary folder; the clock is the store's own,
moved by the bench.

    python -m bench.stateful [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.rules.loader import load
from engine.rules.stateful import TimerOp
from engine.run.matching import match_event
from engine.store import Incoming, Matched
from engine.store.sqlite import SQLiteStore

TYPES = 50


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _config(folder: Path, rules: int) -> Path:
    lines = ["rules:"]
    for i in range(rules):
        lines += [
            f"  - name: throttled-{i}",
            "    source: bench",
            f"    event: type-{i % TYPES}",
            f"    when: {{state: s{i % 4}}}",
            '    throttle: {key: "{{ event.key }}", once_within: 1h}',
            "    actions: [{log: {message: x}}]",
        ]
    lines += [
        "  - name: stuck",
        "    absence:",
        "      after: {event: start}",
        "      expect: {event: end}",
        '      key: "{{ event.key }}"',
        "      within: 1s",
        "    actions: [{log: {message: x}}]",
    ]
    (folder / "rules.yaml").write_text("\n".join(lines) + "\n")
    config = folder / "config.yaml"
    config.write_text("rules: [rules.yaml]\nsources:\n  bench: {token: x}\n")
    return config


def matching(events: int, rules: int = 1000, keys: int = 10_000) -> dict[str, Any]:
    """µs per event through match_events with ``rules`` throttled rules over ``keys`` keys:
    a first pass that creates runs (and sets the throttles), then a pass over the same keys
    within the hour, where every match is throttled."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load(_config(Path(tmp), rules), {})
        clock = _Clock()
        store = SQLiteStore(Path(tmp) / "bench.db", clock=clock)
        first = _pass(store, loaded, clock, events, keys)
        runs = sum(store.run_status_counts().values())
        clock.now += 60
        throttled = _pass(store, loaded, clock, events, keys)
        store.close()
    return {"rules": rules, "keys": keys, "events": events, "runs": runs,
            "first_us_per_event": first, "us_per_event": throttled}


def _pass(store: SQLiteStore, loaded: Any, clock: _Clock, events: int, keys: int) -> float:
    bodies = [json.dumps({"state": f"s{n % 4}", "key": f"k{n % keys}"}) for n in range(events)]
    store.put_events([Incoming("bench", f"type-{n % TYPES}", bodies[n], {}, {}, clock()) for n in range(events)])
    started = time.perf_counter()
    matched = 0
    while True:
        count, _ = store.match_events(
            256, lambda batch: [match_event(loaded, e) for e in batch], event_lease=10, serial=True
        )
        if not count:
            break
        matched += count
    return (time.perf_counter() - started) / max(1, matched) * 1e6


def timers(count: int) -> dict[str, Any]:
    """Due absence timers fired per second by one worker (batches of 256, one transaction each)."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = _Clock()
        store = SQLiteStore(Path(tmp) / "bench.db", clock=clock)
        ids = [s.event_id for s in store.put_events(
            [Incoming("bench", "start", json.dumps({"key": f"k{n}"}), {}, {}, clock()) for n in range(count)]
        )]
        events = store.claim_events(count, 60)
        store.record_matches([
            Matched(e.id, [], [], e, [TimerOp("after", "stuck", f"k{n}", 1.0)]) for n, e in enumerate(events)
        ])
        clock.now += 2
        started = time.perf_counter()
        fired = 0
        while n := store.fire_timers(256):
            fired += n
        elapsed = time.perf_counter() - started
        store.close()
    assert fired == len(ids)
    return {"timers": fired, "fired_per_s": fired / elapsed}


def measure(quick: bool = False) -> dict[str, Any]:
    return {"matching": matching(5_000 if quick else 20_000), "timers": timers(5_000 if quick else 20_000)}


def report(result: dict[str, Any]) -> None:
    m, t = result["matching"], result["timers"]
    print("stateful rules (SQLite)")
    print(f"  matching, {m['rules']:,} throttled rules over {m['keys']:,} keys: {m['us_per_event']:.1f} us/event "
          f"with every match throttled ({m['first_us_per_event']:.1f} us/event on the first pass, which created "
          f"{m['runs']:,} runs for {m['events']:,} events)")
    print(f"  due absence timers fired: {t['fired_per_s']:,.0f}/s ({t['timers']:,} timers)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.stateful")
    parser.add_argument("--quick", action="store_true")
    report(measure(parser.parse_args().quick))
