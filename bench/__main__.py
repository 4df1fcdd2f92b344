"""``make bench`` (``python -m bench [--quick]``): every benchmark of SPEC 12, side by side
in one run, printed as a table and written to bench/results.json.

``--quick`` (``make bench QUICK=1``) runs shorter and fewer rounds, in about two minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from . import backtest, e2e, httpclient, ingest, matching, memory, peer, remote, scale, stateful, ui

HERE = Path(__file__).resolve().parent

def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("hookwise", "starlette", "uvicorn", "pydantic", "jinja2"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    for tool, args in (
        ("wrk", ["wrk", "--version"]), ("webhook", ["webhook", "-version"]), ("sqlite", ["sqlite3", "--version"])
    ):
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10)
            found[tool] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return found

def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """SPEC 12's targets against ``results``: (target, figure, met); met is None when the
    run could not decide (memory in a quick run, which stops short of 100,000 events)."""
    ing, top, half = results["ingest"]["64"], results["end_to_end"]["max"], results["end_to_end"]["half_rate"]
    at_10k = next(r["us_per_event"] for r in results["matching"] if r["rules"] == 10000)
    mem = results["memory"]
    far = results.get("remote")
    judged = memory.verdict(mem["rss_mib"], mem["stored"], mem["trend_mib_per_10k"])
    return [
        ("ingest >= 0.8 of bare, 64 connections", f"{ing['rps_ratio']:.2f}", ing["rps_ratio"] >= 0.8),
        ("ingest p99 <= 4x bare", f"{ing['p99_ratio']:.2f}x", ing["p99_ratio"] <= 4),
        ("end to end >= 2,000 events/s", f"{top['events_per_s']:.0f}/s", top["events_per_s"] >= 2000),
        ("p99 < 100 ms at half that rate", f"{half['p99_ms']:.1f} ms", half["p99_ms"] < 100),
        ("matching < 20 us at 10,000 rules", f"{at_10k:.1f} us", at_10k < 20),
        *(_backtest_targets(results["backtest"]) if "backtest" in results else []),
        *(_remote_targets(far) if far else []),
        *(scale.targets(results["scale"]) if "scale" in results else []),
        ("memory < 200 MiB after 100,000 events, flat", f"{mem['rss_mib']:.1f} MiB at {mem['stored']:,}",
         judged["ok"] if judged["conclusive"] else None),
    ]

def _backtest_targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rate = result["match_events_per_s"]
    return [("backtest >= 20,000 events/s at 1,000 rules", f"{rate:,}/s", rate >= backtest.TARGET)]

def _remote_targets(far: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    own = far["hookwise"]
    return [
        ("100 ms sink, defaults: >= 1,000 events/s", f"{own['events_per_s']:.0f}/s", own["events_per_s"] >= 1000),
        ("100 ms sink: >= 6x webhook + curl", f"{far['ratio']:.1f}x", far["ratio"] >= 6),
        ("100 ms sink: none lost", f"{own['lost']} of {own['answered_2xx']}",
         own["lost"] == 0 and own["delivered"] == own["events"]),
    ]

def report_targets(rows: list[tuple[str, str, bool | None]]) -> None:
    print("targets (SPEC 12)")
    for target, figure, met in rows:
        print(
            f"  {target:<46} {figure:<28} {'met' if met else 'not met' if met is False else 'not decided (quick run)'}"
        )

def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="shorter and fewer rounds (under a minute)")
    quick = parser.parse_args().quick
    seconds, rounds = (2.0, 1) if quick else (5.0, 3)
    started = time.time()
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()}, "versions": versions(), "quick": quick
    }

    results["ingest"] = {}
    for connections in (16, 64):
        results["ingest"][str(connections)] = ingest.measure(seconds, rounds, connections)
        ingest.report(results["ingest"][str(connections)])
    results["peer"] = peer.measure(seconds, rounds, 64)
    peer.report(
        results["peer"], results["ingest"]["64"]["hookwise"], "hookwise receiver (commits every event, no rules)"
    )
    results["end_to_end"] = e2e.measure(seconds, rounds)
    e2e.report(results["end_to_end"])
    results["http_client"] = httpclient.measure(2000, 1) if quick else httpclient.measure(5000, 3)
    httpclient.report(results["http_client"])
    results["remote"] = remote.measure(1500, 300) if quick else remote.measure(3000, 600)
    remote.report(results["remote"])
    print("matching (rules over 50 event types, two field conditions each)")
    results["matching"] = matching.main((10, 1000, 10000) if quick else (10, 100, 1000, 10000))
    results["stateful"] = stateful.measure(quick)
    stateful.report(results["stateful"])
    results["backtest"] = backtest.measure(20_000, 1000, 1) if quick else backtest.measure(50_000, 1000, 3)
    backtest.report(results["backtest"])
    results["memory"] = memory.measure(10_000, time_limit=20.0, catch_up_limit=5.0) if quick else memory.measure()
    memory.report(results["memory"])
    results["ui"] = ui.measure(20_000, 10) if quick else ui.measure()
    ui.report(results["ui"])
    if quick:
        print("stores and layouts (PostgreSQL next to SQLite): in the full run only")
    else:
        results["scale"] = scale.measure(seconds)
        scale.report(results["scale"])
    results["targets"] = [{"target": t, "figure": f, "met": m} for t, f, m in targets(results)]
    report_targets(targets(results))
    results["seconds"] = round(time.time() - started, 1)
    out = HERE / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out} ({results['seconds']} s)")

if __name__ == "__main__":
    main()
