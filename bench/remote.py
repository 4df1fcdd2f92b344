"""End to end against a sink that answers after 100 ms, a remote target's latency (SPEC 12):
hookwise at its default settings next to adnanh/webhook running curl per event, against
the same sink.

Each server is pinned to core 0 ("on one core"; webhook's curl processes inherit it); the
sink and the poster share core 1. The poster sends a fixed number of events (1 KiB JSON,
64 keep-alive connections, each waiting for its answer) and the sink writes a line per
call it answered. The rate is calls answered per second, from the first event posted to
the last call answered; an event is lost when its call never reaches the sink.

- hookwise: the default config but for ``http.allow_private`` (the sink is on loopback),
  default log level, one rule with one ``http`` POST of the event to the sink. Its CPU is
  the daemon's user + system time from /proc over the load (start-up excluded), its
  memory the resident set after the load. With ``--workers 128`` (or a list) the same runs
  again with that many step threads (``workers.concurrency``; default 256), for the cost
  of the thread count.
- webhook + curl: one hook whose command is ``curl`` POSTing the whole payload to the
  sink, in webhook's default mode (the answer does not wait for the command) and waiting
  for it (``include-command-output-in-response``).
- the sink alone under 256 connections of wrk, to show it is not the bottleneck.

    python -m bench.remote [EVENTS] [--peer-events N] [--delay 0.1] [--workers 128,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .ingest import HERE, free_port, parse_wrk, pinned, stop, wait_up
from .peer import cpu_ticks, ensure_webhook, version

CONFIG = """\
store: sqlite:///hookwise.db
rules: [rules.yaml]
http: {allow_private: true}
sources:
  bench: {type: "body:event", verify: none}
"""
RULES = """\
rules:
  - name: push
    source: bench
    actions:
      - http: {{method: POST, url: "http://127.0.0.1:{port}/sink", json: "{{{{ event }}}}"}}
"""
BODY = '{{"event":"job-state-changed-v2","webhook_id":230293,"job_id":{n},"state":"processing","note":"{pad}"}}'


class Sink:
    """bench/sink.py answering after ``delay`` seconds, on core 1."""

    def __init__(self, folder: Path, delay: float) -> None:
        self.port = free_port()
        self.out = folder / "sink.txt"
        self.proc = subprocess.Popen(
            pinned([sys.executable, str(HERE / "sink.py"), str(self.port), str(self.out), str(delay)], 1)
        )
        wait_up(self.port, "/")

    def times(self) -> list[float]:
        """When each call was answered, but the start-up probe (no idempotency key)."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return sorted(float(line.rpartition(" ")[2]) for line in lines if line)

    def close(self) -> None:
        stop(self.proc)


async def _post_all(port: int, count: int, connections: int = 64) -> tuple[float, int]:
    """POST ``count`` events over ``connections`` keep-alive connections (closed loop);
    (when the first was sent, how many were answered 2xx)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(10_000_000 + n)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                body = BODY.format(n=queue.get_nowait(), pad="x" * 860).encode()
                writer.write(
                    b"POST /hooks/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                ok += head.split(b" ", 2)[1].startswith(b"2")
        finally:
            writer.close()

    started = time.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return started, ok


def _settle(sink: Sink, expected: int, timeout: float) -> list[float]:
    """The sink's answer times once ``expected`` calls arrived, or when no new one came
    for 5 s (the rest are lost), or at ``timeout``."""
    deadline, last_count, last_change = time.time() + timeout, -1, time.time()
    while time.time() < deadline:
        seen = sink.times()
        if len(seen) >= expected:
            return seen
        if len(seen) != last_count:
            last_count, last_change = len(seen), time.time()
        elif time.time() - last_change > 5.0:
            break
        time.sleep(0.2)
    return sink.times()


def _figures(started: float, answered: int, times: list[float], events: int) -> dict[str, Any]:
    done = len(times)
    seconds = (times[-1] - started) if times else 0.0
    return {
        "events": events,
        "answered_2xx": answered,
        "delivered": done,
        "lost": answered - done,
        "seconds": round(seconds, 2),
        "events_per_s": done / seconds if seconds > 0 else 0.0,
    }


def write_project(folder: Path, sink_port: int, config: str = CONFIG) -> Path:
    """The config and the rule that posts each event to the sink; the config's path."""
    (folder / "config.yaml").write_text(config)
    (folder / "rules.yaml").write_text(RULES.format(port=sink_port))
    return folder / "config.yaml"


def measure_hookwise(events: int, delay: float, config: str = CONFIG) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sink = Sink(folder, delay)
        write_project(folder, sink.port, config)
        cmd = [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "-c",
            str(folder / "config.yaml"),
            "--port",
            str(port := free_port()),
            "--log-format",
            "text",
        ]
        daemon = subprocess.Popen(pinned(cmd, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE.parent)
        try:
            wait_up(port, "/livez")
            before = sink.times()
            idle_cpu = _cpu_seconds(daemon.pid)  # start-up (imports, loading) is not an event's
            idle_rss = _rss_mib(daemon.pid)
            started, answered = asyncio.run(_post_all(port, events))
            times = [t for t in _settle(sink, events + len(before), timeout=120) if t >= started]
            cpu = _cpu_seconds(daemon.pid) - idle_cpu
            rss = _rss_mib(daemon.pid)
        finally:
            stop(daemon)
            sink.close()
    figures = _figures(started, answered, times, events)
    figures["cpu_ms_per_event"] = cpu / max(1, len(times)) * 1000
    figures["rss_mib"], figures["idle_rss_mib"] = round(rss, 1), round(idle_rss, 1)
    return figures


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")


def peer_hooks(sink_port: int, wait: bool) -> list[dict[str, Any]]:
    """webhook's hooks file: curl POSTs the whole payload to the sink."""
    hook: dict[str, Any] = {
        "id": "bench",
        "http-methods": ["POST"],
        "execute-command": shutil.which("curl") or "/usr/bin/curl",
        "pass-arguments-to-command": [
            {"source": "string", "name": "-s"},
            {"source": "string", "name": "-o"},
            {"source": "string", "name": "/dev/null"},
            {"source": "string", "name": "-H"},
            {"source": "string", "name": "Content-Type: application/json"},
            {"source": "string", "name": "--data-binary"},
            {"source": "entire-payload"},
            {"source": "string", "name": f"http://127.0.0.1:{sink_port}/sink"},
        ],
    }
    if wait:
        hook["include-command-output-in-response"] = True
    return [hook]


def measure_peer(events: int, delay: float, wait: bool) -> dict[str, Any]:
    binary = ensure_webhook()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sink = Sink(folder, delay)
        hooks = folder / "hooks.json"
        hooks.write_text(json.dumps(peer_hooks(sink.port, wait)))
        port = free_port()
        proc = subprocess.Popen(
            pinned([binary, "-hooks", str(hooks), "-ip", "127.0.0.1", "-port", str(port)], 0),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_up(port, "/hooks/bench")
            before = sink.times()
            started, answered = asyncio.run(_post_all(port, events))
            times = [t for t in _settle(sink, events + len(before), timeout=120) if t >= started]
        finally:
            stop(proc)
            sink.close()
    return _figures(started, answered, times, events)


def sink_alone(delay: float, seconds: float = 2.0, connections: int = 256) -> dict[str, float]:
    """The delayed sink's own rate under wrk: the ceiling it puts on every figure here."""
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(Path(tmp), delay)
        try:
            cmd = [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(HERE / "post.lua"),
                f"http://127.0.0.1:{sink.port}/sink",
            ]
            out = subprocess.run(pinned(cmd, 0), capture_output=True, text=True, timeout=seconds + 30).stdout
        finally:
            sink.close()
    figures = parse_wrk(out)
    return {"connections": connections, "rps": figures["rps"], "p50_ms": figures["p50_ms"]}


def workers_config(threads: int) -> str:
    """The bench's config with ``workers.concurrency: threads``."""
    http = "http: {allow_private: true}\n"
    return CONFIG.replace(http, f"workers: {{concurrency: {threads}}}\n{http}")


def measure(
    events: int = 3000, peer_events: int = 600, delay: float = 0.1, workers: tuple[int, ...] = ()
) -> dict[str, Any]:
    hookwise = measure_hookwise(events, delay)
    threads = {str(n): measure_hookwise(events, delay, workers_config(n)) for n in workers}
    peers = {
        "curl-async": measure_peer(peer_events, delay, wait=False),
        "curl-sync": measure_peer(peer_events, delay, wait=True),
    }
    best_peer = max(p["events_per_s"] for p in peers.values())
    return {
        "delay_s": delay,
        "hookwise": hookwise,
        "hookwise_workers": threads,
        "peer": peers,
        "peer_version": version(ensure_webhook()),
        "ratio": hookwise["events_per_s"] / best_peer if best_peer else 0.0,
        "sink_alone": sink_alone(delay),
    }


def report(result: dict[str, Any]) -> None:
    delay_ms = result["delay_s"] * 1000
    print(f"end to end against a sink answering after {delay_ms:.0f} ms (server on one core; default settings)")
    rows = [("hookwise (default settings)", result["hookwise"])]
    rows += [(f"hookwise, workers.concurrency {n}", f) for n, f in result.get("hookwise_workers", {}).items()]
    rows += [
        (f"{result['peer_version']} + curl, {'answer waits' if k == 'curl-sync' else 'answer first'}", f)
        for k, f in result["peer"].items()
    ]
    print(f"  {'':44} {'events/s':>9} {'delivered':>10} {'lost':>5} {'CPU/event':>10} {'RSS after':>10}")
    for label, f in rows:
        own = (f"{f['cpu_ms_per_event']:>7.2f} ms {f['rss_mib']:>6.1f} MiB") if "cpu_ms_per_event" in f else ""
        print(f"  {label:44} {f['events_per_s']:>9.0f} {f['delivered']:>5}/{f['events']:<4} {f['lost']:>5} {own}")
    print(f"  hookwise at defaults: {result['ratio']:.1f}x the better peer variant")
    alone = result["sink_alone"]
    print(
        f"  the sink alone: {alone['rps']:.0f} calls/s at {alone['connections']} connections"
        f" (p50 {alone['p50_ms']:.0f} ms)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.remote")
    parser.add_argument("events", nargs="?", type=int, default=3000)
    parser.add_argument("--peer-events", type=int, default=600)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument(
        "--workers", default="", help="also run hookwise with these workers.concurrency values (e.g. 128,512)"
    )
    args = parser.parse_args(argv)
    workers = tuple(int(n) for n in args.workers.split(",") if n.strip())
    result = measure(args.events, args.peer_events, args.delay, workers)
    report(result)
    return result


if __name__ == "__main__":
    main()
