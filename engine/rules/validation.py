"""Pydantic validation errors translated into :class:`~engine.errors.Problem` values.

The config loader, the rule loader and the action registry all validate with pydantic;
this module is the one place its errors become what users read: a location in their file
and a message ("unknown key (did you mean 'url'?)", "required").

Models that check how keys combine ("at most one of json, form, body") raise
:func:`key_error`: a problem about which keys are present, which no template can fix, so
the registry reports it even when the values involved are templated.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from difflib import get_close_matches
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from ..errors import Loc, Problem

M = TypeVar("M", bound=BaseModel)

#: Given the location of a mapping, the keys it accepts (or None when unknown).
FieldsOf = Callable[[Loc], Collection[str] | None]

#: The error type of :func:`key_error`.
KEY_ERROR = "key_combination"

#: Errors about keys rather than values: a templated value can never make them go away.
KEY_ERRORS = frozenset({"extra_forbidden", "missing", KEY_ERROR})

# Labels pydantic puts in an error's loc for the member of a union that failed name types,
# not keys of the user's file: "list[str]", "function-after[check(), str]", and "[key]" for
# an invalid dict key. Plain labels ("str", "url", a model's name) look like keys, so they
# are only recognised where a model says a union sits (see ModelShape).
_BRACKETED = re.compile(
    r"\[key\]|(?:function-[a-z]+|list|dict|tuple|set|frozenset|literal|lax-or-strict|json-or-python|nullable"
    r"|tagged-union|union|chain|default|generator|is-instance|is-subclass|definition-ref|constrained-[a-z]+)\[.*\]"
)

_PREFIXES = ("Value error, ", "Assertion failed, ")


def key_error(message: str) -> PydanticCustomError:
    """An error to raise from a model validator when keys do not combine (``"at most one
    of json, form, body"``): reported even when the values involved are templated."""
    return PydanticCustomError(KEY_ERROR, message)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'url'?)"`` for the closest of ``choices``, or ``""``."""
    close = get_close_matches(name, sorted(set(choices)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def pydantic_problems(exc: ValidationError, fields_of: type[BaseModel] | FieldsOf | None = None) -> list[Problem]:
    """One :class:`Problem` per error of ``exc``, located by the error's loc.

    ``fields_of`` is the validated model class, which gives exact locations (without the
    labels pydantic adds for union members) and the keys for the "did you mean" of unknown
    keys; or a callable giving the keys accepted at a location."""
    return problems_from_errors(exc.errors(), fields_of)


def problems_from_errors(
    errors: Iterable[ErrorDetails], fields_of: type[BaseModel] | FieldsOf | None = None
) -> list[Problem]:
    """:func:`pydantic_problems` for errors already taken out of (and perhaps filtered
    from) a ``ValidationError``.

    Where every member of a union failed, the errors of a member that got further into
    the value win ("rules[1]: not a string" rather than also "rules: not a string"), and
    the rest at one place are merged into one problem ("..., or ...")."""
    keys: FieldsOf | None
    if isinstance(fields_of, type):
        shape = ModelShape(fields_of)
        locate, keys = shape.locate, shape.keys
    else:
        locate, keys = _locate_without_model, fields_of
    located = [(error, *locate(error["loc"])) for error in errors]
    merged: dict[Loc, list[str]] = {}
    for error, loc, choices in located:
        if _outdone(loc, choices, located):
            continue
        message = error_message(error, loc, keys)
        messages = merged.setdefault(loc, [])
        if message not in messages:
            messages.append(message)
    return [Problem(_join(messages), loc) for loc, messages in merged.items()]


#: Where a union's member was picked while locating an error: (location of the union, label).
Choice = tuple[Loc, str | int]


def _locate_without_model(loc: Iterable[str | int]) -> tuple[Loc, tuple[Choice, ...]]:
    return clean_loc(loc), ()


def _outdone(
    loc: Loc, choices: tuple[Choice, ...], located: list[tuple[ErrorDetails, Loc, tuple[Choice, ...]]]
) -> bool:
    """Whether this error sits at a union that another member's error got deeper into."""
    for at, label in choices:
        if loc != at:
            continue
        for _, other_loc, other_choices in located:
            if len(other_loc) > len(at) and any(c[0] == at and c[1] != label for c in other_choices):
                return True
    return False


def clean_loc(loc: Iterable[str | int]) -> Loc:
    """``loc`` without the labels pydantic adds that can be told from keys without the
    model (bracketed ones: ``list[str]``, ``[key]``). :meth:`ModelShape.clean` removes
    them all."""
    return tuple(part for part in loc if not (isinstance(part, str) and _BRACKETED.fullmatch(part)))


def error_message(error: ErrorDetails, loc: Loc, fields_of: FieldsOf | None = None) -> str:
    """The readable message of one pydantic error found at (clean) ``loc``."""
    kind = error["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        known = fields_of(loc[:-1]) if fields_of is not None and loc else None
        return "unknown key" + (did_you_mean(str(loc[-1]), known) if known else "")
    message = error["msg"]
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    if error["loc"] and error["loc"][-1] == "[key]":  # the key itself is wrong, not its value
        return f"invalid key: {message}"
    return message


class ModelShape:
    """The type tree of a model, followed along error locations: through nested models
    (by field name or alias), dicts, lists, tuples and unions."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def clean(self, loc: Iterable[str | int]) -> Loc:
        """The user's location of an error at pydantic's ``loc``: union-member labels and
        ``[key]`` removed."""
        return self.locate(loc)[0]

    def locate(self, loc: Iterable[str | int]) -> tuple[Loc, tuple[Choice, ...]]:
        """:meth:`clean`, with the union members picked on the way (by label)."""
        out: list[str | int] = []
        choices: list[Choice] = []
        tp: Any = self.model
        parts = list(loc)
        while parts:
            tp = _unwrap(tp)
            if tp is Any:  # the model says no more: fall back to what labels look like
                return tuple(out) + clean_loc(parts), tuple(choices)
            members = _union_members(tp)
            if members is not None and len(members) > 1:
                label = parts.pop(0)  # pydantic names the member that failed
                choices.append((tuple(out), label))
                tp = _member_for(members, label)
                continue
            part = parts.pop(0)
            if part != "[key]":
                out.append(part)
                tp = _child(tp if members is None else members[0], part)
        return tuple(out), tuple(choices)

    def keys(self, loc: Loc) -> Collection[str] | None:
        """The keys accepted by the mapping at (clean) ``loc``, when a model sits there."""
        found = _walk(self.model, tuple(loc))
        return None if found is None else _keys(found)


def _member_for(members: tuple[Any, ...], label: str | int) -> Any:
    """The union member that pydantic's ``label`` names (Any when unsure)."""
    for member in members:
        bare = _unwrap(member)
        if getattr(bare, "__name__", None) == label or _label_head(label) == _type_name(bare):
            return member
    return Any


def _label_head(label: str | int) -> str:
    return str(label).split("[", 1)[0]


def _type_name(tp: Any) -> str | None:
    origin = get_origin(tp) or tp
    return getattr(origin, "__name__", None)


def _child(tp: Any, part: str | int) -> Any:
    """The type one step below ``tp`` at key or index ``part`` (Any when unknown)."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
        return Any
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is tuple and args and isinstance(part, int):
        return args[0] if args[-1] is Ellipsis else args[part] if part < len(args) else Any
    if origin in (list, set, frozenset) and args:
        return args[0]
    return Any


def _join(messages: list[str]) -> str:
    return messages[0] + "".join(f", or {m[:1].lower()}{m[1:]}" for m in messages[1:])


def _walk(tp: Any, loc: Loc) -> Any:
    """The type found at (clean) ``loc`` below ``tp``, or None."""
    tp = _unwrap(tp)
    members = _union_members(tp)
    if members is not None and loc:
        return _walk_union(members, loc)
    if not loc:
        return tp
    child = _child(tp, loc[0])
    return None if child is Any else _walk(child, loc[1:])


def _walk_union(members: tuple[Any, ...], loc: Loc) -> Any:
    for member in members:
        found = _walk(member, loc)
        if found is not None:
            return found
    return None


def _keys(tp: Any) -> Collection[str] | None:
    tp = _unwrap(tp)
    members = _union_members(tp)
    if members is not None:
        keys = [k for m in members for k in (_keys(m) or ())]
        return keys or None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [field.alias or name for name, field in tp.model_fields.items()]
    return None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(a for a in get_args(tp) if a is not type(None))
    return None


# --- unknown keys, whatever the model says ---------------------------------------------


def unknown_keys(model: type[BaseModel], data: Any) -> list[Problem]:
    """One "unknown key" problem for each key of ``data`` that the model (or a model
    nested in it) has no field for, whatever its ``extra`` setting: a model that ignores
    unknown keys would let a misspelled one pass silently, its default taking its place."""
    if not ignores_unknown_keys(model):
        return []  # pydantic reports them itself
    found: list[Problem] = []
    _unknown_below(model, data, (), found)
    return found


def _unknown_below(model: type[BaseModel], data: Any, loc: Loc, found: list[Problem]) -> None:
    if isinstance(data, dict):
        accepted = _accepted(_walk(model, loc))
        for key, value in data.items():
            if accepted is not None and key not in accepted:
                found.append(Problem("unknown key" + did_you_mean(str(key), accepted), loc + (key,)))
            else:
                _unknown_below(model, value, loc + (key,), found)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _unknown_below(model, value, loc + (i,), found)


def _accepted(tp: Any) -> set[str] | None:
    """The keys a mapping of type ``tp`` takes, or None when it takes any (not a model)."""
    tp = _unwrap(tp)
    members = _union_members(tp)
    if members is not None:
        found = [_accepted(m) for m in members]
        return None if any(f is None for f in found) else set().union(*(f for f in found if f is not None))
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return None
    by_name = bool(tp.model_config.get("populate_by_name") or tp.model_config.get("validate_by_name"))
    keys: set[str] = set()
    for name, field in tp.model_fields.items():
        keys.update(k for k in (field.alias, field.validation_alias) if isinstance(k, str))
        if by_name or field.alias is None:
            keys.add(name)
    return keys


@functools.cache
def ignores_unknown_keys(model: type[BaseModel]) -> bool:
    """Whether ``model`` or a model reachable through its fields lets unknown keys pass
    (``extra`` other than ``"forbid"``)."""
    return any(m.model_config.get("extra") != "forbid" for m in _models_in(model, set()))


def _models_in(tp: Any, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp not in seen:
            seen.add(tp)
            for field in tp.model_fields.values():
                _models_in(field.annotation, seen)
        return seen
    for arg in get_args(tp):
        _models_in(arg, seen)
    return seen


# --- validating what is left ----------------------------------------------------------


def validate_rest(
    model: type[M], data: Any, placeholders: Mapping[str, Any] | None = None, rounds: int = 8
) -> tuple[M | None, list[Problem]]:
    """``data`` validated against ``model``, reporting every problem while still giving
    the caller a model to check further with (``check`` prints every problem, not the
    first one that stops the rest).

    Returns the model and no problems when ``data`` is valid. Otherwise the problems, and
    the model of what is left once every refused value is taken out (the mapping that
    lacks a required key, for a missing one, unless ``placeholders`` gives that key at the
    top level a stand-in), so that defaults take the refused values' places; None when
    nothing valid is left."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems, errors = pydantic_problems(exc, model), exc.errors()
    shape = ModelShape(model)
    for _ in range(rounds):
        left = _without(data, [_refused(shape.clean(e["loc"]), e["type"], placeholders or {}) for e in errors])
        if left is _GONE or left == data:  # nothing left, or nothing more to take out
            return None, problems
        data = left
        try:
            return model.model_validate(data), problems
        except ValidationError as exc:
            errors = exc.errors()
    return None, problems


class _Gone:
    """Marks a value taken out of a copy (see :func:`_without`)."""


_GONE: Any = _Gone()


def _refused(loc: Loc, kind: str, placeholders: Mapping[str, Any]) -> tuple[Loc, Any]:
    """What to do about one error: (where, what to put there), ``_GONE`` to take it out."""
    if kind != "missing":
        return loc, _GONE
    if len(loc) == 1 and loc[0] in placeholders:
        return loc, placeholders[str(loc[0])]
    return loc[:-1], _GONE


def _without(data: Any, changes: list[tuple[Loc, Any]]) -> Any:
    """A copy of JSON-like ``data`` with each change made (``_GONE`` marks a value taken
    out; marked first and taken out after, so list indexes stay right meanwhile)."""
    if any(not loc and value is _GONE for loc, value in changes):
        return _GONE
    copy = json_copy(data)
    for loc, value in changes:
        parent = _find(copy, loc[:-1]) if loc else None
        if isinstance(parent, dict) and (loc[-1] in parent or value is not _GONE):
            parent[loc[-1]] = value
        elif isinstance(parent, list) and isinstance(loc[-1], int) and loc[-1] < len(parent):
            parent[loc[-1]] = value
    return _drop_gone(copy)


def _find(data: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def json_copy(data: Any) -> Any:
    """A deep copy of JSON-like ``data`` (dicts and lists copied, scalars shared)."""
    if isinstance(data, dict):
        return {k: json_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [json_copy(v) for v in data]
    return data


def _drop_gone(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_gone(v) for k, v in data.items() if v is not _GONE}
    if isinstance(data, list):
        return [_drop_gone(v) for v in data if v is not _GONE]
    return data
