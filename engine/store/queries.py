"""Named SQL queries: the shared ``sql/queries.sql`` and ``sql/state.sql`` (stateful rules')
with a backend's ``sql/<backend>.sql`` over them, each a block headed ``-- name: NAME``
(Procrastinate's ``-- name --`` blocks).

A block of the backend's file adds to the shared ones or replaces the one of its name. A
query may use another block as a fragment by naming it in braces (``{now}``): the
fragment's text is put in its place when the queries are loaded. A name in braces that is
no block (the SQLite store's ``{rows}``) is left for the store to fill in. Whole-line
comments are dropped (they stay in the files, for people).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)
_FRAGMENT = re.compile(r"\{([a-z0-9_]+)\}")
_COMMENT = re.compile(r"^\s*--.*\n?", re.MULTILINE)
#: A named parameter, ``:name`` (not the ``::`` of a PostgreSQL cast).
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _blocks(file: str) -> dict[str, str]:
    text = files("engine.store").joinpath("sql", f"{file}.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {name: _COMMENT.sub("", body).strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def load_queries(backend: str) -> dict[str, str]:
    """The queries of ``backend`` by name, fragments put in place."""
    blocks = {**_blocks("queries"), **_blocks("state"), **_blocks(backend)}

    def expand(text: str) -> str:
        return _FRAGMENT.sub(lambda m: expand(blocks[m.group(1)]) if m.group(1) in blocks else m.group(0), text)

    return {name: expand(body) for name, body in blocks.items()}


def to_pyformat(query: str) -> str:
    """``query`` with its ``:name`` parameters written ``%(name)s`` (psycopg's style)."""
    if not _PARAMETER.search(query):
        return query  # sent as it is: no placeholders are read in it
    return _PARAMETER.sub(r"%(\1)s", query.replace("%", "%%"))
