"""Logging setup: text for people, one JSON object per line for machines, secrets masked.

:class:`SecretFilter` sits on the handler, so it sees every record whichever logger made
it, and masks the current config's secrets (it asks for the masker on every record: a
reload brings new secrets) plus credentials that look like credentials wherever they come
from: ``Authorization`` values, bearer and basic tokens, ``password=``/``token=`` values,
and the userinfo of URLs. A record made with ``extra={"reveal": True}`` is left as it is:
the one line that must show a secret (the URL with the token hookwise made, at start).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..run.runs import StepTask
from ..secrets import MASK, Masker

#: Record attributes copied into JSON lines when an adapter or ``extra=`` set them.
FIELDS = ("event", "rule", "run", "step", "attempt", "duration")

FORMATS = ("text", "json")

#: Credentials recognised by their shape, each with what replaces it. Header names count
#: only as header lines or as quoted keys: "malformed authorization: expected ..." (a
#: verification message) stays readable.
PATTERNS = (
    # a header line: "Authorization: Basic dXNlcjpw", "Cookie: a=b; c=d" (to the end of the line)
    (re.compile(r"\b((?:Proxy-)?Authorization|Cookie|Set-Cookie|X-Api-Key|X-API-Key):[ \t]*[^\r\n]+"), rf"\1: {MASK}"),
    # a header as a quoted key (a dict or JSON): "{'authorization': 'Bearer x'}"
    (
        re.compile(r"""(?i)(["'](?:proxy-)?(?:authorization|cookie|set-cookie|x-api-key)["']\s*:\s*["'])[^"']+"""),
        rf"\1{MASK}"
    ),
    # a bearer token anywhere: "Bearer eyJ..."
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}"), rf"\1 {MASK}"),
    # key=value pairs (query strings, forms, DSNs): "password=hunter2", "?token=abc"
    (re.compile(r"(?i)\b((?:pass(?:word|wd)?|pwd|secret|client_secret|token|access_token|refresh_token|api_?key)=)[^&\s\"',;]+"),
     rf"\1{MASK}"),
    # the same keys as JSON or a Python dict: '"password": "hunter2"'
    (re.compile(r"""(?i)(["'](?:pass(?:word|wd)?|secret|client_secret|token|access_token|refresh_token|api_?key)["']\s*:\s*["'])[^"']+"""),
     rf"\1{MASK}"),
    # the userinfo of a URL: "https://user:pass@host" -> "https://****@host"
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@"), rf"\1{MASK}@"),
)


#: A word every one of PATTERNS needs to match: most lines hold none, and one search is
#: cheaper than six substitutions (logging runs on every step thread).
SUSPECT = re.compile(r"(?i)authorization|cookie|bearer|pass|pwd|secret|token|api|@")


def mask_text(text: str, masker: Masker | None = None) -> str:
    """``text`` with the masker's secrets and anything shaped like a credential masked."""
    if masker is not None:
        text = masker.mask(text)
    if SUSPECT.search(text) is None:
        return text
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretFilter(logging.Filter):
    """Masks secrets in a record's message, its extra fields and its traceback.

    ``masker`` returns the masker of the config in use (or None before one is loaded)."""

    def __init__(self, masker: Callable[[], Masker | None] | None = None) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "reveal", False) is True:
            return True
        masker = self.masker() if self.masker is not None else None
        message = record.getMessage()
        masked = mask_text(message, masker)
        if masked != message or record.args:
            # Freeze the formatted text: args could otherwise bring the secret back.
            record.msg, record.args = masked, None
        for key in FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, mask_text(value, masker))
        if record.exc_info and not record.exc_text:
            # Exception messages carry URLs and responses; the formatters use exc_text as is.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text, masker)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info, masker)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the known FIELDS, and the
    traceback as ``error`` for errors."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None})
        if record.exc_info and record.levelno >= logging.ERROR:
            line["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def default_format() -> str:
    """``text`` when a person is watching stderr, else ``json``."""
    try:
        return "text" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):  # replaced or closed stderr
        return "json"


def setup_logging(fmt: str | None = None, level: str = "info") -> None:
    """Log to stderr in ``fmt`` (``None``: :func:`default_format`) at ``level``, through a
    :class:`SecretFilter`; :func:`mask_with` later tells it the config's secrets."""
    fmt = fmt or default_format()
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))


def mask_with(masker: Callable[[], Masker | None]) -> None:
    """Have the :class:`SecretFilter` of every root handler (set up by
    :func:`setup_logging`) mask the secrets ``masker`` returns: the daemon passes the
    current config's masker, which changes on reload."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, SecretFilter):
                found.masker = masker


def step_fields(task: StepTask, started: float | None = None) -> dict[str, Any]:
    """The log fields of a step: event, rule, run, step (its id), attempt, and the
    duration so far when ``started`` is given."""
    fields: dict[str, Any] = {
        "event": task.event.id, "rule": task.rule, "run": task.run_id, "step": task.step_id, "attempt": task.attempt
    }
    if started is not None:
        fields["duration"] = round(time.time() - started, 3)
    return fields
