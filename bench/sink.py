"""The target of the end-to-end benchmarks: answers 200 (after ``DELAY`` seconds, default
0, without holding up other requests) and writes ``<idempotency key> <unix time>`` for
every request it gets (the sink's own timestamp).

    python bench/sink.py PORT OUTFILE [DELAY]
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import uvicorn


def make_app(out: Any, delay: float = 0.0) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        key = dict(scope["headers"]).get(b"idempotency-key", b"-").decode()
        if delay:
            await asyncio.sleep(delay)  # a remote target's latency: other requests go on meanwhile
        out.write(f"{key} {time.time():.6f}\n")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


if __name__ == "__main__":
    with open(sys.argv[2], "w", buffering=1) as out:
        delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
        uvicorn.run(
            make_app(out, delay), host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False,
            lifespan="off", backlog=4096, timeout_keep_alive=30,
        )
