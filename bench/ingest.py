"""Ingest: requests per second and latency of ``POST /hooks/<source>`` against a bare
Starlette endpoint, side by side, under the same uvicorn settings and the same load.

Load comes from wrk (closed loop, keep-alive) with bench/post.lua, pinned to another core
than the server when the machine has two or more.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CONFIG = """\
store: sqlite:///hookwise.db
rules: []
sources:
  bench: {type: "body:event", verify: none}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], core: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


def wait_up(port: int, path: str, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def start_bare(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        pinned([sys.executable, str(HERE / "bare.py"), str(port)], 0), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL
    )
    wait_up(port, "/hooks/x")
    return proc


def start_hookwise(port: int, folder: Path) -> subprocess.Popen[bytes]:
    (folder / "config.yaml").write_text(CONFIG)
    cmd = [
        sys.executable, "-m", "engine", "serve", "-c", str(folder / "config.yaml"), "--port", str(port), "--role",
        "receiver", "--log-level", "warning"
    ]
    proc = subprocess.Popen(pinned(cmd, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE.parent)
    wait_up(port, "/livez")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_RESULT = re.compile(r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+) non2xx=(\d+)")


def parse_wrk(output: str) -> dict[str, float]:
    """The figures of bench/post.lua's RESULT line."""
    match = _RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{output}")
    requests, duration, p50, p99, errors, non2xx = (int(g) for g in match.groups())
    return {
        "rps": requests / (duration / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "errors": errors,
        "non2xx": non2xx, "requests": requests
    }


def load(port: int, seconds: float, connections: int) -> dict[str, float]:
    cmd = [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(HERE / "post.lua"),
        f"http://127.0.0.1:{port}/hooks/bench"
    ]
    out = subprocess.run(pinned(cmd, 1), capture_output=True, text=True, timeout=seconds + 30)
    return parse_wrk(out.stdout)


def measure(seconds: float = 5.0, rounds: int = 3, connections: int = 64) -> dict[str, Any]:
    """Alternate rounds of bare and hookwise; medians and ratios."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    bare_runs, hook_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            port = free_port()
            proc = start_bare(port)
            try:
                bare_runs.append(load(port, seconds, connections))
            finally:
                stop(proc)
            port = free_port()
            folder = Path(tempfile.mkdtemp(dir=tmp))
            proc = start_hookwise(port, folder)
            try:
                hook_runs.append(load(port, seconds, connections))
            finally:
                stop(proc)
            stored = count_events(folder / "hookwise.db")
            hook_runs[-1]["stored"] = stored
    bare = {k: statistics.median(r[k] for r in bare_runs) for k in ("rps", "p50_ms", "p99_ms")}
    hook = {k: statistics.median(r[k] for r in hook_runs) for k in ("rps", "p50_ms", "p99_ms")}
    return {
        "connections": connections, "seconds": seconds, "rounds": rounds,
        "bare": bare, "hookwise": hook,
        "rps_ratio": hook["rps"] / bare["rps"], "p99_ratio": hook["p99_ms"] / bare["p99_ms"],
        "acknowledged_all_stored": all(r["stored"] >= r["requests"] - r["non2xx"] - r["errors"] for r in hook_runs),
        "runs": {"bare": bare_runs, "hookwise": hook_runs},
    }


def count_events(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def report(result: dict[str, Any]) -> None:
    b, h = result["bare"], result["hookwise"]
    print(f"ingest, {result['connections']} connections, median of {result['rounds']} rounds of {result['seconds']:g}s")
    print(f"  {'':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  {'bare':10} {b['rps']:>9.0f} {b['p50_ms']:>8.2f} {b['p99_ms']:>8.2f}")
    print(f"  {'hookwise':10} {h['rps']:>9.0f} {h['p50_ms']:>8.2f} {h['p99_ms']:>8.2f}")
    print(f"  ratio: {result['rps_ratio']:.2f} of the bare req/s, p99 {result['p99_ratio']:.2f}x;"
          f" every 2xx stored: {result['acknowledged_all_stored']}")


if __name__ == "__main__":
    report(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
