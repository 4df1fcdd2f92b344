"""End to end: events per second from request to a completed ``http`` step against a local
sink, and the time from receipt (the store's ``received_at``) to the sink's receipt of the
step's request, at half the maximum rate.

The daemon (receiver and worker in one process) is pinned to core 0; wrk, the paced poster
and the sink share core 1.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .ingest import HERE, free_port, pinned, stop, wait_up

CONFIG = """\
store: sqlite:///hookwise.db
rules: [rules.yaml]
http: {{allow_private: true}}
workers: {{concurrency: 16}}
sources:
  bench: {{type: "body:event", verify: none}}
"""
RULES = """\
rules:
  - name: push
    source: bench
    actions:
      - http: {{method: POST, url: "http://127.0.0.1:{port}/sink", json: {{job: "{{{{ event.job_id }}}}"}}}}
"""


class Setup:
    """A sink and a daemon in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sink_port, self.port = free_port(), free_port()
        (folder / "config.yaml").write_text(CONFIG.format())
        (folder / "rules.yaml").write_text(RULES.format(port=self.sink_port))
        self.sink = subprocess.Popen(
            pinned([sys.executable, str(HERE / "sink.py"), str(self.sink_port), str(folder / "sink.txt")], 1)
        )
        cmd = [
            sys.executable, "-m", "engine", "serve", "-c", str(folder / "config.yaml"), "--port", str(self.port),
            "--log-level", "warning", "--log-format", "text"
        ]
        self.daemon = subprocess.Popen(
            pinned(cmd, 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE.parent
        )
        wait_up(self.sink_port, "/")
        wait_up(self.port, "/livez")

    def close(self) -> None:
        stop(self.daemon)
        stop(self.sink)

    def counts(self) -> tuple[int, int]:
        """(events stored, runs succeeded)."""
        db = sqlite3.connect(self.folder / "hookwise.db")
        try:
            events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            done = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]
            return int(events), int(done)
        finally:
            db.close()

    def wait_done(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            events, done = self.counts()
            if events and done >= events:
                return True
            time.sleep(0.2)
        return False

    def latencies(self) -> list[float]:
        """Seconds from each event's receipt to the sink's receipt of its step's request."""
        seen: dict[str, float] = {}
        for line in (self.folder / "sink.txt").read_text().splitlines():
            key, _, at = line.partition(" ")
            seen.setdefault(key, float(at))  # the first delivery counts
        db = sqlite3.connect(self.folder / "hookwise.db")
        try:
            rows = db.execute("SELECT r.id, e.received_at FROM runs r JOIN events e ON e.id = r.event_id").fetchall()
        finally:
            db.close()
        return [seen[f"{run_id}-0"] - received for run_id, received in rows if f"{run_id}-0" in seen]


def max_rate(seconds: float, connections: int = 64) -> dict[str, Any]:
    """Flood the daemon for ``seconds`` with wrk, then wait for every step to complete."""
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(Path(tmp))
        try:
            cmd = [
                "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(HERE / "post.lua"),
                f"http://127.0.0.1:{setup.port}/hooks/bench"
            ]
            subprocess.run(pinned(cmd, 1), capture_output=True, text=True, timeout=seconds + 30)
            complete = setup.wait_done(timeout=120)
            db = sqlite3.connect(setup.folder / "hookwise.db")
            try:
                first, last, done = db.execute(
                    "SELECT MIN(e.received_at), MAX(r.updated_at), COUNT(*)"
                    " FROM runs r JOIN events e ON e.id = r.event_id WHERE r.status = 'succeeded'"
                ).fetchone()
            finally:
                db.close()
        finally:
            setup.close()
    return {"events": done, "seconds": last - first, "events_per_s": done / (last - first), "all_completed": complete}


BODY = '{{"event":"job-state-changed-v2","job_id":{n},"state":"processing","note":"{pad}"}}'


async def _paced(port: int, rate: float, seconds: float, connections: int = 16) -> int:
    """Post at ``rate`` events per second (open loop) over keep-alive connections."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    sent = 0

    async def one(n: int) -> None:
        reader, writer = await pool.get()
        body = BODY.format(n=n, pad="x" * 800).encode()
        writer.write(b"POST /hooks/bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        pool.put_nowait((reader, writer))

    start = time.perf_counter()
    tasks = []
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(10_000_000 + n)))
        sent += 1
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return sent


def latency_at(rate: float, seconds: float) -> dict[str, Any]:
    """p50/p99 from receipt to step completion with events posted at ``rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(Path(tmp))
        try:
            sent = asyncio.run(_paced(setup.port, rate, seconds))
            setup.wait_done(timeout=60)
            time.sleep(0.5)
            lat = sorted(setup.latencies())
        finally:
            setup.close()
    if not lat:
        raise RuntimeError("no step reached the sink")
    return {
        "rate": rate, "sent": sent, "measured": len(lat), "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000
    }


def measure(seconds: float = 5.0, rounds: int = 1) -> dict[str, Any]:
    """The median of ``rounds`` floods, then the latency at half that rate."""
    runs = [max_rate(seconds) for _ in range(rounds)]
    top = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2]
    paced = latency_at(max(50.0, round(top["events_per_s"] / 2)), seconds)
    return {"max": top, "rounds": [r["events_per_s"] for r in runs], "half_rate": paced}


def report(result: dict[str, Any]) -> None:
    top, half = result["max"], result["half_rate"]
    rounds = result.get("rounds", [top["events_per_s"]])
    print("end to end (one http step to a local sink; daemon on one core)")
    print(f"  max: {top['events_per_s']:.0f} events/s, median of {len(rounds)} rounds"
          f" ({', '.join(f'{r:.0f}' for r in rounds)});"
          f" {top['events']} events in {top['seconds']:.1f}s, all completed: {top['all_completed']}")
    print(f"  at {half['rate']:.0f} events/s: p50 {half['p50_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms"
          f" from receipt to the sink ({half['measured']} events)")


if __name__ == "__main__":
    report(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, int(sys.argv[2]) if len(sys.argv) > 2 else 3))
