"""Matching cost: microseconds per event against 10 to 10,000 rules.

Rules are spread over 50 event types with two field conditions each, as SPEC 12 says;
events cycle through the types, and a quarter of them match a rule. The rule set is
built through the real loader from generated YAML files.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from engine.events import Event
from engine.rules.loader import load

TYPES = 50


def write_rules(folder: Path, count: int) -> Path:
    lines = ["rules:"]
    for i in range(count):
        lines += [
            f"  - name: rule-{i}",
            "    source: bench",
            f"    event: type-{i % TYPES}",
            "    when:",
            f"      state: s{i % 7}",
            f"      job.region: r{i % 11}",
            "    actions:",
            "      - log: {message: \"{{ event.job.id }}\"}",
        ]
    (folder / "rules").mkdir()
    (folder / "rules" / "bench.yaml").write_text("\n".join(lines) + "\n")
    config = folder / "config.yaml"
    config.write_text("rules: [rules/]\nsources:\n  bench: {token: x}\n")
    return config


def events(n: int) -> list[Event]:
    return [
        Event(
            source="bench", type=f"type-{i % TYPES}",
            body={"state": f"s{i % 7}", "job": {"id": i, "region": f"r{i % 13}"}}
        )
        for i in range(n)
    ]


def measure(count: int, n_events: int = 2000, rounds: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load(write_rules(Path(tmp), count))
    sample = events(n_events)
    best = float("inf")
    matched = 0
    for _ in range(rounds):
        start = time.perf_counter()
        matched = sum(len(loaded.rules.match(e).rules) for e in sample)
        best = min(best, time.perf_counter() - start)
    return {
        "rules": count, "us_per_event": round(best / n_events * 1e6, 2),
        "matches_per_event": round(matched / n_events, 3)
    }


def main(sizes: tuple[int, ...] = (10, 100, 1000, 10000)) -> list[dict[str, Any]]:
    results = [measure(n) for n in sizes]
    print(f"{'rules':>8}  {'us/event':>9}  {'matches/event':>13}")
    for r in results:
        print(f"{r['rules']:>8}  {r['us_per_event']:>9}  {r['matches_per_event']:>13}")
    return results


if __name__ == "__main__":
    main()
