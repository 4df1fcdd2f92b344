"""Parameter types shared by the built-in actions' ``Params`` models."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, WithJsonSchema

from engine.rules.validation import key_error


def upper(value: Any) -> Any:
    """``"post"`` -> ``"POST"``; anything else unchanged, for the model to refuse."""
    return value.upper() if isinstance(value, str) else value


def one_or_many(value: Any) -> Any:
    """A single value where a list is expected becomes a list of one."""
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


#: A header name is a token (RFC 9110 5.1): no space, colon or control character in it.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Control characters other than tab: a line break would start a new header (or the
#: body), a NUL cuts the value short for some servers.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _no_newlines(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~ only")
        if _CONTROL.search(value):
            kind = "a line break" if "\r" in value or "\n" in value else "a control character"
            raise ValueError(f"the value of header {name!r} contains {kind}")
    return headers


_QUERY_SCALARS = (str, int, float, bool)


def _query_values(params: dict[str, Any]) -> dict[str, Any]:
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, _QUERY_SCALARS) for v in values):
            raise ValueError(f"query parameter {name!r} must be a string, number, boolean or a list of them")
    return params


_SCALAR_SCHEMA: list[dict[str, Any]] = [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]

#: Header name -> value; line breaks are refused.
Headers = Annotated[dict[str, str], AfterValidator(_no_newlines)]

#: Query parameters: name -> string, number, boolean, or a list of them (repeated).
QueryParams = Annotated[
    dict[str, Any],
    AfterValidator(_query_values),
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": {"anyOf": [*_SCALAR_SCHEMA, {"type": "array", "items": {"anyOf": _SCALAR_SCHEMA}}]},
        },
        mode="validation",
    ),
]


def at_most_one(model: BaseModel, *keys: str) -> None:
    """Refuse ``model`` when more than one of ``keys`` (field aliases or names) is set
    to something other than None."""
    given = [k for k in keys if getattr(model, _attr(model, k)) is not None]
    if len(given) > 1:
        raise key_error(f"give at most one of {', '.join(keys)} (got {' and '.join(given)})")


def at_least_one(model: BaseModel, *keys: str) -> None:
    """Refuse ``model`` when none of ``keys`` is set to something other than None."""
    if all(getattr(model, _attr(model, k)) is None for k in keys):
        raise key_error(f"give at least one of {', '.join(keys)}")


@functools.cache  # a few (model, key) pairs, asked on every validation of a step's params
def _field_name(model: type[BaseModel], key: str) -> str:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return name
    raise KeyError(key)


def _attr(model: BaseModel, key: str) -> str:
    return _field_name(type(model), key)
