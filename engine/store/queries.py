"""Named SQL queries, read from ``sql/<backend>.sql`` blocks headed ``-- name: NAME``.

A query may use another block as a fragment by naming it in braces (``{now}``): the
fragment's text is put in its place when the queries are loaded. A name in braces that is
no block (the SQLite store's ``{rows}``) is left for the store to fill in.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)
_FRAGMENT = re.compile(r"\{([a-z0-9_]+)\}")


@cache
def load_queries(backend: str) -> dict[str, str]:
    """The queries of ``backend`` by name."""
    text = files("engine.store").joinpath("sql", f"{backend}.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    return {name: _FRAGMENT.sub(lambda m: blocks.get(m.group(1), m.group(0)), body) for name, body in blocks.items()}
