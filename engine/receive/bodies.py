"""Event bodies as SPEC 4 accepts them, and stored bodies as people read them.

A JSON body is strict JSON (``NaN`` and ``Infinity`` are not JSON), an object or an array,
nested no deeper than ``server.max_depth``; a lone surrogate escape (``"\\ud800"``) is
accepted with U+FFFD in its place, so that every accepted body can be stored as UTF-8 and
shown again. A form body's fields become the body; GitHub's ``payload=`` field holds JSON
under the same rules. Anything else is :class:`Malformed`.

:func:`readable` is the other end: a stored body, whatever an older version let in, as a
value that JSON encoders and recursive code can take, or else as its text with a note.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

#: The deepest nesting any body may have (``server.max_depth`` cannot be set higher): the
#: code that shows and masks a body recurses once or twice per level, within Python's
#: recursion limit of 1,000.
DEEPEST = 256

_SURROGATE = re.compile("[\ud800-\udfff]")
#: The escape of a surrogate (\ud800 to \udfff): only such an escape can put one in a
#: string, as UTF-8 cannot encode one. (A search for it costs less than any other test.)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class Malformed(ValueError):
    """The body is not one SPEC 4 accepts; the message says why, to the sender."""


def _not_json(constant: str) -> Any:
    raise Malformed(f"{constant} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_not_json)


def parse(raw: bytes, kind: str, max_depth: int) -> tuple[Any, str]:
    """The body of ``kind`` ("json" or "form") and its text as stored (JSON). Raises
    :class:`Malformed`."""
    text = _utf8(raw)
    if kind == "json":
        return _json_body(text, max_depth, "the body")
    try:
        fields = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise Malformed("a form field is not UTF-8") from None
    if set(fields) == {"payload"}:  # GitHub's form deliveries carry the JSON in payload=
        body, _ = _json_body(fields["payload"], max_depth, "the payload field")
    else:
        body = fields
    return body, json.dumps(body, ensure_ascii=False)


def parse_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """``raw`` as a JSON object, read as a JSON body is (strict, nested no deeper than
    ``max_depth``, lone surrogates replaced): the API's request bodies. Raises
    :class:`Malformed`."""
    body, _ = _json_body(_utf8(raw), max_depth, "the body", array=False)
    assert isinstance(body, dict)
    return body


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8") from None


def _json_body(text: str, max_depth: int, what: str, array: bool = True) -> tuple[Any, str]:
    """An object (or, with ``array``, an array) parsed from ``text``, and the text to
    store: ``text`` itself unless a lone surrogate had to be replaced."""
    try:
        body = _DECODER.decode(text)
    except RecursionError:
        raise Malformed(f"{what} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise Malformed(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(body, (dict, list) if array else dict):
        raise Malformed(f"{what} must be a JSON object{' or an array' if array else ''}")
    # Counting brackets costs next to nothing and bounds the depth: most bodies stop here.
    if text.count("[") + text.count("{") > max_depth and _deeper_than(body, max_depth):
        raise Malformed(f"{what} is nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text):
        clean = _without_surrogates(body)
        if clean != body:
            return clean, json.dumps(clean, ensure_ascii=False)
    return body, text


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels in ``value`` (without recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _without_surrogates(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings and keys replaced by U+FFFD.
    (Called only on a body within the depth limit: recursion is safe.)"""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value


def readable(text: str) -> tuple[Any, str | None]:
    """A stored body as a JSON value and None; or, when it cannot be one (an older
    version stored ``NaN``, a lone surrogate or a body nested deeper than
    :data:`DEEPEST`), its text with lone surrogates replaced and a note saying why."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        return _SURROGATE.sub("\ufffd", text), f"nested deeper than {DEEPEST} levels: shown as stored"
    except ValueError as exc:  # Malformed too: NaN or Infinity
        return _SURROGATE.sub("\ufffd", text), f"not valid JSON ({exc}): shown as stored"
    if isinstance(value, (dict, list)) and _deeper_than(value, DEEPEST):
        return _SURROGATE.sub("\ufffd", text), f"nested deeper than {DEEPEST} levels: shown as stored"
    if _SURROGATE_ESCAPE.search(text):
        value = _without_surrogates(value)
    return value, None


def finite(value: Any) -> Any:
    """``value`` with each float JSON cannot carry (``NaN``, ``Infinity``) as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
