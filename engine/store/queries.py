"""Named SQL queries, read from ``sql/<backend>.sql`` blocks headed ``-- name: NAME``."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)


@lru_cache(maxsize=None)
def load_queries(backend: str) -> dict[str, str]:
    """The queries of ``backend`` by name."""
    text = files("engine.store").joinpath("sql", f"{backend}.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}
