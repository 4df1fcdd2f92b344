"""adnanh/webhook side by side: the same load as bench/ingest.py (wrk with bench/post.lua,
server pinned to core 0 and wrk to core 1, medians of rounds) against webhook 2.8 (the
Debian package ``webhook``) serving one hook ``bench`` whose trigger rule checks two JSON
fields of the posted body: ``event == "job-state-changed-v2" and state == "processing"``.

webhook has no hook without a command (``execute-command`` is required), so "no command"
is measured as the closest thing it offers:

- ``no-command``: ``execute-command`` is a path that does not exist. The rule is evaluated
  and the hook answers 200 at once; the goroutine it starts fails to find the command (one
  ``stat``) and starts no process.
- ``true-async``: ``/bin/true`` per event, webhook's default: the answer does not wait for
  the command (a goroutine forks and waits for it). The load can outrun the commands; the
  time the server keeps burning CPU after the load ends is reported as ``drain_s``.
- ``true-sync``: ``/bin/true`` per event with ``include-command-output-in-response: true``:
  the answer waits for the command, so every answered event has run its command.

A body that fails the rule is answered 422 (``trigger-rule-mismatch-http-response-code``;
webhook's default would be 200), so wrk's non-2xx count shows any event the rule refused,
and before each measurement the server must answer 200 to a matching body and 422 to one
that is not.

    python -m bench.peer [SECONDS] [--rounds N] [--with-hookwise]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .ingest import free_port, load, pinned, stop, wait_up

MISMATCH_STATUS = 422
NO_COMMAND = "/nonexistent/hookwise-bench-no-command"
# One body of bench/post.lua's shape (it sends this with a new job id each time).
MATCHING_BODY = {
    "event": "job-state-changed-v2", "webhook_id": 230293, "job_external_identifier": "order1", "job_id": 1,
    "state": "processing", "content-available": 1, "job_estimated_hours_to_completion": 1.39, "thread": "1",
    "note": "x" * 760,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "no-command": {"execute-command": NO_COMMAND},
    "true-async": {"execute-command": "/bin/true"},
    "true-sync": {"execute-command": "/bin/true", "include-command-output-in-response": True},
}
LABELS = {
    "no-command": "rule only (command path missing: no process)",
    "true-async": "/bin/true per event, answer not waiting (default)",
    "true-sync": "/bin/true per event, answer after it exits",
}
FIGURES = ("rps", "p50_ms", "p99_ms")


def hooks_file(variant: str) -> list[dict[str, Any]]:
    """webhook's hooks file (JSON) for one variant."""
    def field(name: str, value: str) -> dict[str, Any]:
        return {"match": {"type": "value", "value": value, "parameter": {"source": "payload", "name": name}}}

    return [{
        "id": "bench",
        "response-message": "ok",
        "http-methods": ["POST"],
        "trigger-rule-mismatch-http-response-code": MISMATCH_STATUS,
        "trigger-rule": {"and": [field("event", "job-state-changed-v2"), field("state", "processing")]},
        **VARIANTS[variant],
    }]


def ensure_webhook() -> str:
    """The webhook binary; installs the Debian package when it is missing."""
    found = shutil.which("webhook")
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "webhook"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        subprocess.run(install, capture_output=True, timeout=300, check=True)
    found = shutil.which("webhook")
    if not found:
        raise RuntimeError("webhook is not installed (Debian package webhook)")
    return found


def version(binary: str) -> str:
    out = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip()


def post(port: int, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/hooks/bench", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def check_rule(port: int) -> None:
    """The rule is really evaluated: 200 to the matching body, 422 to one that is not."""
    status, text = post(port, MATCHING_BODY)
    if status != 200:
        raise RuntimeError(f"webhook answered {status} to the matching body: {text!r}")
    status, text = post(port, {**MATCHING_BODY, "state": "failed"})
    if status != MISMATCH_STATUS:
        raise RuntimeError(
            f"webhook answered {status} to a body its rule refuses (expected {MISMATCH_STATUS}): {text!r}"
        )


def start_webhook(binary: str, port: int, hooks: Path) -> subprocess.Popen[bytes]:
    cmd = [binary, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)]  # not -verbose: logs discarded
    proc = subprocess.Popen(pinned(cmd, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port, "/hooks/bench")
    except BaseException:
        stop(proc)
        raise
    return proc


def cpu_ticks(stat: str) -> int:
    """utime + stime + cutime + cstime from the text of /proc/PID/stat (the fields after
    the parenthesised command name, which may itself hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is the state (field 3 of proc(5)); utime..cstime are fields 14..17.
    return sum(int(fields[i]) for i in range(11, 15))


def drain(pid: int, timeout: float = 10.0, quiet: float = 0.3) -> float:
    """Seconds until the process (with its waited-for children) stops using CPU."""
    start = time.monotonic()
    stat = Path(f"/proc/{pid}/stat")
    last = cpu_ticks(stat.read_text())
    still_since = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(0.05)
        now = cpu_ticks(stat.read_text())
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return max(0.0, still_since - start)
    return timeout


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in FIGURES}


def measure(seconds: float = 2.0, rounds: int = 3, connections: int = 64) -> dict[str, Any]:
    """Rounds of every variant in turn (a fresh server each); medians per variant."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package wrk)")
    binary = ensure_webhook()
    load_before = float(Path("/proc/loadavg").read_text().split()[0])
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            (Path(tmp) / f"{variant}.json").write_text(json.dumps(hooks_file(variant), indent=2))
        for _ in range(rounds):
            for variant in VARIANTS:
                port = free_port()
                proc = start_webhook(binary, port, Path(tmp) / f"{variant}.json")
                try:
                    check_rule(port)
                    run = load(port, seconds, connections)
                    if variant == "true-async":
                        run["drain_s"] = drain(proc.pid)
                finally:
                    stop(proc)
                runs[variant].append(run)
    variants = {}
    for variant, rs in runs.items():
        figures: dict[str, Any] = medians(rs)
        figures["non2xx"] = sum(int(r["non2xx"]) for r in rs)
        figures["errors"] = sum(int(r["errors"]) for r in rs)
        if variant == "true-async":
            figures["drain_s"] = statistics.median(r["drain_s"] for r in rs)
        variants[variant] = figures
    return {
        "peer": version(binary), "connections": connections, "seconds": seconds, "rounds": rounds,
        "loadavg_before": load_before, "variants": variants, "runs": runs
    }


def report(
    result: dict[str, Any], hookwise: dict[str, float] | None = None, label: str = "hookwise (same load)"
) -> None:
    """Print the variants, with hookwise's figures (rps, p50_ms, p99_ms, e.g. bench.ingest's
    ``result["hookwise"]`` at the same connections) beside them, as ``label``, when given."""
    print(f"{result['peer']} (adnanh/webhook), {result['connections']} connections,"
          f" median of {result['rounds']} rounds of {result['seconds']:g}s"
          f" (load average before: {result['loadavg_before']:.2f})")
    print(f"  {'':54} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    rows = [(LABELS.get(v, v), f) for v, f in result["variants"].items()]
    if hookwise is not None:
        rows.append((label, hookwise))
    for label, f in rows:
        print(f"  {label:54} {f['rps']:>9.0f} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f}")
    for variant, f in result["variants"].items():
        if f["non2xx"] or f["errors"]:
            print(f"  {variant}: {f['non2xx']} answers were not 2xx, {f['errors']} socket errors")
    if "true-async" in result["variants"]:
        drain = result["variants"]["true-async"]["drain_s"]
        print(f"  true-async: the server went idle {drain:.2f}s after the load ended"
              " (a backlog of commands shows here; near 0: the commands kept up with the answers)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer", description="adnanh/webhook under bench/ingest.py's load"
    )
    parser.add_argument("seconds", nargs="?", type=float, default=2.0, help="seconds per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[64, 16])
    parser.add_argument(
        "--with-hookwise", action="store_true",
        help="also measure hookwise's ingest (bench.ingest) at each connection count"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for connections in args.connections:
        result = measure(args.seconds, args.rounds, connections)
        hookwise = None
        if args.with_hookwise:
            from . import ingest

            result["hookwise"] = hookwise = ingest.measure(args.seconds, args.rounds, connections)["hookwise"]
        report(result, hookwise, "hookwise receiver (bench.ingest: commits, no rules)")
        results[str(connections)] = result
    return results


if __name__ == "__main__":
    main()
