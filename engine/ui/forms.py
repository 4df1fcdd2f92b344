"""The UI's forms: reading a posted form, and the retry-with-edits form of a dead step.

A dead step's params become one field per leaf (``url``, ``headers.X-Token``,
``json.job``): text fields for strings, JSON fields for everything else (numbers,
booleans, lists, null). A mapping whose keys hold a dot is one JSON field: a dotted path
could not name them. Only the fields a person changed become edits, so a masked value
(``****``) left alone is never sent back in place of the secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from ..errors import UsageError


class Form:
    """A posted ``application/x-www-form-urlencoded`` form."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    @classmethod
    def parse(cls, body: bytes) -> Form:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the form is not UTF-8") from None
        return cls(parse_qsl(text, keep_blank_values=True))

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in reversed(self.pairs):
            if key == name:
                return value
        return default

    def text(self, name: str) -> str:
        """The field's value without surrounding blanks ("" when absent)."""
        return (self.get(name) or "").strip()

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


@dataclass(frozen=True)
class Field:
    """One editable param of a dead step."""

    path: str
    #: the value as shown in the form
    text: str
    #: "text" (a string) or "json" (anything else)
    kind: str

    @property
    def multiline(self) -> bool:
        return "\n" in self.text or len(self.text) > 80


def fields(params: Any) -> list[Field]:
    """The fields of a step's recorded params (none when they are not a mapping)."""
    if not isinstance(params, Mapping):
        return []
    out: list[Field] = []
    _flatten(params, "", out)
    return out


def _flatten(value: Mapping[str, Any], prefix: str, out: list[Field]) -> None:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item and all("." not in str(k) for k in item):
            _flatten(item, path + ".", out)
        elif isinstance(item, str):
            out.append(Field(path, item, "text"))
        else:
            out.append(
                Field(
                    path,
                    json.dumps(item, indent=2 if isinstance(item, (dict, list)) else None, ensure_ascii=False),
                    "json",
                )
            )


def edits(form: Form, shown: list[Field]) -> list[tuple[str, Any]]:
    """(param path, value) for every field changed from what was shown, and for the extra
    row (``new_path``/``new_value``: JSON when it parses as JSON, else text, as
    ``runs retry --set``)."""
    changed: list[tuple[str, Any]] = []
    for field in shown:
        given = form.get(f"p.{field.path}")
        if given is None or _same(given, field.text):
            continue
        changed.append((field.path, given if field.kind == "text" else _json(field.path, given)))
    new_path, new_value = form.text("new_path"), form.get("new_value") or ""
    if new_path:
        if new_path.startswith(".") or new_path.endswith(".") or ".." in new_path:
            raise UsageError(f"{new_path!r} is not a param path such as url or headers.X-Token")
        changed.append((new_path, _json_or_text(new_value)))
    return changed


def _same(given: str, shown: str) -> bool:
    # Browsers send a textarea's line breaks as CRLF.
    return given.replace("\r\n", "\n") == shown


def _json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
