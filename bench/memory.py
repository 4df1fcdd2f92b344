"""Memory: resident memory of the hookwise daemon after N events (default 100,000), and
whether it grows with the count.

The daemon (``serve``, role all: receiver and worker in one process) runs pinned to core 0
with SQLite in a temporary folder and one rule that matches every event and runs one step:
``log`` at level debug (the daemon logs at warning, so nothing is written), the cheapest
step that still makes a run, a step row and a rendered template per event. ``--action
http`` makes the step an ``http`` POST to a local sink (bench/bare.py, pinned to core 1
with wrk) instead.

Events are posted by wrk (bench/post.lua, 64 connections, pinned to core 1) in ten chunks;
each chunk is one wrk run, stopped (SIGINT) once the store holds the chunk's count, and
tags the bodies with its number so that no body repeats an earlier chunk's (post.lua's
counter starts again with every run, and a repeated body would be a duplicate delivery).
After each chunk the daemon's VmRSS (from /proc/PID/status; its children too, if it had
any) and the counts of events stored, events matched, runs and finished runs are sampled.
At the end the worker is given a bounded time to catch up, and a last sample is taken.

The trend is the least-squares slope of RSS over the samples of the second half (events
at least half the final count), in MiB per 10,000 events.

    python -m bench.memory [--quick] [--events N] [--time-limit S] [--action log|http]
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .ingest import HERE, free_port, parse_wrk, pinned, stop, wait_up

TARGET_MIB = 200.0
TARGET_EVENTS = 100_000
# "Not growing": at most this many MiB per 10,000 events over the second half (a leak of
# about 100 bytes per event; 10 MiB more after a million events).
FLAT_MIB_PER_10K = 1.0
CHUNKS = 10

CONFIG = """\
store: sqlite:///hookwise.db
rules: [rules.yaml]
sources:
  bench: {{type: "body:event", verify: none}}
{http}"""
RULE_LOG = """\
rules:
  - name: every-event
    event: "*"
    actions:
      - log: {message: "event {{ event.job_id }} is {{ event.state }}", level: debug}
"""
RULE_HTTP = """\
rules:
  - name: every-event
    event: "*"
    actions:
      - http:
          method: POST
          url: "http://127.0.0.1:{port}/hooks/sink"
          json: {{job: "{{{{ event.job_id }}}}", state: "{{{{ event.state }}}}"}}
"""
# Wraps bench/post.lua: the same requests, with the first 8 characters of the body's
# padding replaced by the chunk number (same length, so Content-Length stays right).
PAD = "xxxxxxxx"
CHUNK_LUA = """\
dofile("{post}")
local post_request = request
request = function()
  return (post_request():gsub("{pad}", "{tag}", 1))
end
"""


def chunk_tag(chunk: int) -> str:
    """What replaces the first ``PAD`` of every body of a chunk: as long as ``PAD``."""
    tag = f"c{chunk:07d}"
    if len(tag) != len(PAD):
        raise ValueError(f"chunk number too large: {chunk}")
    return tag


def chunk_script(post: Path, chunk: int) -> str:
    """The wrk script of one chunk: bench/post.lua with the bodies tagged."""
    return CHUNK_LUA.format(post=post, pad=PAD, tag=chunk_tag(chunk))


def loadavg() -> float:
    """The 1-minute load average: other work on the machine shows here."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def parse_status(text: str) -> dict[str, int]:
    """The ``Vm*`` and ``Rss*`` sizes (KiB) of a /proc/PID/status text."""
    sizes = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if (key.startswith("Vm") or key.startswith("Rss")) and len(parts) == 2 and parts[1] == "kB":
            sizes[key] = int(parts[0])
    return sizes


def parse_children(text: str) -> list[int]:
    """The pids in a /proc/PID/task/TID/children text."""
    return [int(p) for p in text.split()]


def descendants(pid: int, proc: Path = Path("/proc")) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for children in (proc / str(current) / "task").glob("*/children"):
            try:
                kids = parse_children(children.read_text())
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def rss(pid: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """VmRSS and VmHWM of the process, and VmRSS of it with its descendants (KiB)."""
    status = parse_status((proc / str(pid) / "status").read_text())
    total = status["VmRSS"]
    kids = descendants(pid, proc)
    for kid in kids:
        try:
            total += parse_status((proc / str(kid) / "status").read_text()).get("VmRSS", 0)
        except OSError:
            pass  # gone meanwhile
    return {"rss_kib": status["VmRSS"], "hwm_kib": status.get("VmHWM", 0), "tree_rss_kib": total, "children": len(kids)}


def store_counts(db: Path) -> dict[str, int]:
    """Events stored and matched, runs created and finished (read-only; WAL lets the
    daemon write meanwhile)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM events WHERE status = 'pending'),"
            " (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM runs WHERE status = 'active')"
        ).fetchone()
    finally:
        conn.close()
    events, pending, runs, active = (int(x) for x in row)
    return {"events": events, "matched": events - pending, "runs": runs, "finished": runs - active}


def stored(db: Path) -> int:
    """Events stored so far (cheap: the last sequence number; nothing is deleted here)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return 0
    try:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # schema not there yet
    finally:
        conn.close()


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None without two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def trend(samples: list[dict[str, Any]]) -> float | None:
    """MiB per 10,000 events over the second half: samples with at least half the final
    count of events."""
    if not samples:
        return None
    last = max(s["events"] for s in samples)
    half = [(s["events"], s["rss_kib"] / 1024) for s in samples if s["events"] >= last / 2]
    per_event = slope(half)
    return None if per_event is None else per_event * 10_000


def verdict(rss_mib: float, events: int, per_10k: float | None) -> dict[str, Any]:
    """Against the target: under 200 MiB after 100,000 events, and flat. With fewer events
    the RSS at 100,000 is projected from the trend (never below what was measured) and the
    verdict is not conclusive (the second half of a short run may still be warm-up)."""
    growth = max(0.0, per_10k or 0.0)
    projected = rss_mib + growth * max(0, TARGET_EVENTS - events) / 10_000
    flat = per_10k is not None and per_10k <= FLAT_MIB_PER_10K
    under = projected < TARGET_MIB
    return {
        "projected_mib": projected, "under_target": under, "flat": flat, "ok": under and flat,
        "conclusive": events >= TARGET_EVENTS
    }


def verdict_text(v: dict[str, Any]) -> str:
    size = f"{v['projected_mib']:.1f} MiB ({'under' if v['under_target'] else 'OVER'} {TARGET_MIB:g})"
    shape = "flat" if v["flat"] else "growing"
    if not v["conclusive"]:
        return f"not decided at this count: projected at {TARGET_EVENTS:,} {size}, {shape} so far; a full run decides"
    return f"{'met' if v['ok'] else 'NOT met'}: at {TARGET_EVENTS:,} {size}, {shape}"


def write_project(folder: Path, action: str, sink_port: int | None) -> Path:
    if action == "http":
        (folder / "rules.yaml").write_text(RULE_HTTP.format(port=sink_port))
        http = f'http: {{allow_hosts: ["127.0.0.1:{sink_port}"]}}\n'
    else:
        (folder / "rules.yaml").write_text(RULE_LOG)
        http = ""
    (folder / "config.yaml").write_text(CONFIG.format(http=http))
    return folder / "config.yaml"


def start_daemon(config: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "engine", "serve", "-c", str(config), "--port", str(port), "--role", "all", "--log-level",
        "warning"
    ]
    proc = subprocess.Popen(pinned(cmd, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE.parent)
    try:
        wait_up(port, "/livez")
    except BaseException:
        stop(proc)
        raise
    return proc


def start_sink(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        pinned([sys.executable, str(HERE / "bare.py"), str(port)], 1), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL
    )
    try:
        wait_up(port, "/hooks/sink")
    except BaseException:
        stop(proc)
        raise
    return proc


def post_chunk(port: int, db: Path, lua: Path, until: int, seconds: float, connections: int) -> dict[str, float]:
    """One wrk run, stopped once the store holds ``until`` events or after ``seconds``."""
    cmd = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency", "-s", str(lua),
        f"http://127.0.0.1:{port}/hooks/bench"
    ]
    proc = subprocess.Popen(pinned(cmd, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + seconds
        while proc.poll() is None and time.monotonic() < deadline and stored(db) < until:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # wrk prints its figures and done() on SIGINT
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return parse_wrk(out + err)


def catch_up(db: Path, timeout: float) -> float:
    """Wait (bounded) until every event is matched and every run finished; seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        c = store_counts(db)
        if c["matched"] == c["events"] and c["finished"] == c["runs"]:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def measure(
    events: int = TARGET_EVENTS, time_limit: float = 120.0, connections: int = 64, action: str = "log",
    catch_up_limit: float = 30.0, chunks: int = CHUNKS
) -> dict[str, Any]:
    """Post ``events`` in ``chunks`` (within ``time_limit`` seconds of posting) and sample."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    if action not in ("log", "http"):
        raise ValueError(f"action must be log or http, not {action!r}")
    samples: list[dict[str, Any]] = []
    posted = {"requests": 0, "non2xx": 0, "errors": 0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "hookwise.db"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            sink_port = None
            if action == "http":
                sink_port = free_port()
                procs.append(start_sink(sink_port))
            config = write_project(folder, action, sink_port)
            port = free_port()
            daemon = start_daemon(config, port)
            procs.append(daemon)
            started = time.monotonic()

            def sample(label: str) -> None:
                samples.append(
                    {"label": label, "t": round(time.monotonic() - started, 2), **store_counts(db), **rss(daemon.pid)}
                )

            sample("start")
            load_before = loadavg()
            posting = time.monotonic()
            deadline = posting + time_limit
            for i in range(chunks):
                left = deadline - time.monotonic()
                if left <= 0.5:
                    break
                lua = folder / f"chunk{i}.lua"
                lua.write_text(chunk_script(HERE / "post.lua", i))
                run = post_chunk(port, db, lua, events * (i + 1) // chunks, left, connections)
                for key in posted:
                    posted[key] += int(run[key])
                sample(f"chunk {i + 1}")
            posting_s = time.monotonic() - posting
            waited = catch_up(db, catch_up_limit)
            sample("end")
        finally:
            for proc in reversed(procs):
                stop(proc)
    final = samples[-1]
    per_10k = trend(samples[1:])
    rss_mib = final["rss_kib"] / 1024
    return {
        "events_target": events, "action": action, "connections": connections, "time_limit_s": time_limit,
        "posted": posted, "stored": final["events"], "timed_out": final["events"] < events,
        "posting_s": round(posting_s, 1),
        "catch_up_s": round(waited, 1),
        "caught_up": final["matched"] == final["events"] and final["finished"] == final["runs"],
        "acknowledged_all_stored": final["events"] >= posted["requests"] - posted["non2xx"] - posted["errors"],
        "rss_mib": rss_mib, "hwm_mib": final["hwm_kib"] / 1024, "children": final["children"],
        "tree_rss_mib": final["tree_rss_kib"] / 1024, "start_rss_mib": samples[0]["rss_kib"] / 1024,
        "trend_mib_per_10k": per_10k, "loadavg_before": load_before,
        "verdict": verdict(rss_mib, final["events"], per_10k), "samples": samples,
    }


def report(result: dict[str, Any]) -> None:
    p = result["posted"]
    print(f"memory, {result['action']} step per event, {result['connections']} connections,"
          f" target {result['events_target']:,} events within {result['time_limit_s']:g}s")
    print(f"  posted {p['requests']:,} answers ({p['non2xx']} not 2xx, {p['errors']} socket errors)"
          f" in {result['posting_s']:g}s; stored {result['stored']:,}"
          + ("" if result["acknowledged_all_stored"] else "  (FEWER stored than acknowledged)")
          + ("  (time limit reached)" if result["timed_out"] else ""))
    print(f"  worker caught up: {result['caught_up']} after {result['catch_up_s']:g}s more;"
          f" load average before posting {result['loadavg_before']:.2f} (other work on the machine)")
    print(f"  {'sample':10} {'events':>8} {'matched':>8} {'runs':>8} {'finished':>8} {'RSS MiB':>8} {'peak MiB':>8}")
    for s in result["samples"]:
        print(f"  {s['label']:10} {s['events']:>8} {s['matched']:>8} {s['runs']:>8} {s['finished']:>8}"
              f" {s['rss_kib'] / 1024:>8.1f} {s['hwm_kib'] / 1024:>8.1f}")
    t = result["trend_mib_per_10k"]
    v = result["verdict"]
    kids = (f"with its {result['children']} child processes {result['tree_rss_mib']:.1f} MiB" if result["children"]
            else "no child processes")
    print(f"  RSS after {result['stored']:,} events: {result['rss_mib']:.1f} MiB"
          f" (at start {result['start_rss_mib']:.1f}, peak {result['hwm_mib']:.1f}; {kids})")
    print(f"  trend over the second half: {'n/a' if t is None else f'{t:+.2f}'} MiB per 10,000 events"
          f" (flat: at most {FLAT_MIB_PER_10K:g})")
    print(f"  target under {TARGET_MIB:g} MiB after {TARGET_EVENTS:,} events and not growing: {verdict_text(v)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description="RSS of the daemon after N events, and its trend"
    )
    parser.add_argument("--quick", action="store_true", help="20,000 events within 30s")
    parser.add_argument("--events", type=int)
    parser.add_argument("--time-limit", type=float, help="seconds of posting at most (default 120, quick 30)")
    parser.add_argument("--action", choices=["log", "http"], default="log")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.quick else TARGET_EVENTS)
    limit = args.time_limit or (30.0 if args.quick else 120.0)
    result = measure(
        events, time_limit=limit, connections=args.connections, action=args.action,
        catch_up_limit=5.0 if args.quick else 30.0
    )
    report(result)
    return result


if __name__ == "__main__":
    main()
