"""The filters and globals hookwise adds to Jinja's (SPEC 5.3): JSON, base64, hashes, HMAC,
path segments, date-times.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from jinja2.runtime import Undefined

from .template_limits import Refused

# --- filters and globals ----------------------------------------------------------------


def _to_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"{what} expects text, got {type(value).__name__} (use |tojson first for a list or object)")


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, range, KeysView, ValuesView, ItemsView, Iterator)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _filter_tojson(value: Any, indent: int | None = None) -> str:
    """JSON text, keys in their order, non-ASCII kept (Jinja's own escapes for HTML)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _filter_b64encode(value: Any) -> str:
    return base64.b64encode(_to_bytes(value, "b64encode")).decode("ascii")


def _filter_b64decode(value: Any) -> str:
    return base64.b64decode(_to_bytes(value, "b64decode"), validate=True).decode("utf-8")


def _filter_sha256(value: Any) -> str:
    return hashlib.sha256(_to_bytes(value, "sha256")).hexdigest()


def _filter_hmac_sha256(value: Any, key: Any) -> str:
    return hmac.new(_to_bytes(key, "hmac_sha256 key"), _to_bytes(value, "hmac_sha256"), hashlib.sha256).hexdigest()


def _filter_path_segment(value: Any) -> str:
    """``value`` as one segment of a URL path: everything but letters, digits and ``-._~``
    percent-encoded, ``/``, ``?``, ``#`` and ``%`` included (Jinja's ``urlencode`` leaves
    ``/`` alone). ``""``, ``.`` and ``..`` are refused: they are no segment of their own
    and would move the path elsewhere."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"path_segment expects text or a number, got {type(value).__name__}")
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"path_segment: {text!r} cannot be a path segment")
    return quote(text, safe="")


def _filter_to_datetime(value: Any) -> datetime:
    """An aware UTC datetime from an ISO-8601 string (``Z`` allowed; naive means UTC) or
    from seconds since the epoch."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())
    else:
        raise TypeError(f"to_datetime expects an ISO-8601 string or epoch seconds, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# C strftime pads to any width given (``%1000000000Y``), so widths are refused.
_STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d")


def _filter_strftime(value: Any, fmt: str) -> str:
    if _STRFTIME_WIDTH.search(fmt):
        raise Refused("strftime: field widths are not supported")
    moment = value if isinstance(value, datetime) else _filter_to_datetime(value)
    return moment.strftime(fmt)


def now_utc() -> datetime:
    return datetime.now(UTC)


FILTERS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "tojson": _filter_tojson,
        "b64encode": _filter_b64encode,
        "b64decode": _filter_b64decode,
        "sha256": _filter_sha256,
        "hmac_sha256": _filter_hmac_sha256,
        "path_segment": _filter_path_segment,
        "to_datetime": _filter_to_datetime,
        "strftime": _filter_strftime,
    }
)
