"""The registry of actions: the built-ins (package ``actions``), the actions advertised by
installed packages (entry-point group ``hookwise.actions``) and the plugins named in the
config (``plugins: {name: "module:Class"}``); each class is imported and type-checked once.

The built-ins register the way plugins do, through this module: ``actions`` imports only the
contract (engine.run.action), and nothing imports this module back.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from actions import BUILTINS

from ..errors import ConfigError, Loc, ParamsError, PluginError, Problem
from ..rules.validation import (
    KEY_ERRORS,
    ModelShape,
    did_you_mean,
    problems_from_errors,
    pydantic_problems,
    unknown_keys,
)
from .action import Action

#: The entry-point group under which installed packages advertise actions.
ENTRY_POINT_GROUP = "hookwise.actions"

_NAME = re.compile(r"[a-z][a-z0-9_]*")


class Registry(Mapping[str, type[Action]]):
    """The actions rules may use, by name. Immutable: a reload builds a new one."""

    def __init__(self, actions: Mapping[str, type[Action]], *, warnings: Iterable[Problem] = ()) -> None:
        self._actions: Mapping[str, type[Action]] = MappingProxyType(dict(actions))
        #: Things worth saying that do not stop loading (e.g. a plugin's ``name`` that
        #: differs from its config key).
        self.warnings: tuple[Problem, ...] = tuple(warnings)

    @classmethod
    def load(cls, plugins: Mapping[str, str] | None = None, *, entry_points: bool = True) -> Registry:
        """The built-in actions, plus those advertised under the ``hookwise.actions``
        entry-point group (unless ``entry_points`` is false), plus ``plugins`` from the
        config (name -> ``"module:Class"``).

        The name an action is registered under is its config key (or entry-point name);
        a plugin class's own ``name``, when it differs, is ignored with a warning. A
        config plugin may replace an entry-point action of the same name (the config is
        explicit), but nothing may replace a built-in. Raises :class:`ConfigError`
        listing every plugin that cannot be used, each at ``("plugins", name)``."""
        actions: dict[str, type[Action]] = {a.name: a for a in BUILTINS}
        builtins = frozenset(actions)
        problems: list[Problem] = []
        warnings: list[Problem] = []
        if entry_points:
            actions.update(_load_entry_points(builtins, problems, warnings))
        for name, path in (plugins or {}).items():
            try:
                actions[name] = _load_plugin(name, path, builtins)
            except PluginError as exc:
                problems.append(Problem(exc.message, ("plugins", name)))
                continue
            warnings.extend(_name_warning(name, actions[name], ("plugins", name)))
        if problems:
            raise ConfigError(problems)
        return cls(actions, warnings=warnings)

    def __getitem__(self, name: str) -> type[Action]:
        return self._actions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def names(self) -> list[str]:
        """The action names, sorted."""
        return sorted(self._actions)

    def check_params(self, name: str, raw: Mapping[str, Any], templated: Iterable[Loc]) -> list[Problem]:
        """Load-time check of a step's params as written, locations relative to the params.

        ``templated`` are the locations of template strings in ``raw``; a template may
        render to any type, so errors at, below or above one are left for :meth:`validate`
        at run time. Errors about keys (unknown, missing, conflicting) are always kept."""
        if name not in self._actions:
            return [Problem(f"unknown action {name!r}{did_you_mean(name, self._actions)}")]
        model = self._actions[name].Params
        try:
            model.model_validate(raw)
        except ValidationError as exc:
            spots = [tuple(loc) for loc in templated]
            shape = ModelShape(model)
            errors = [e for e in exc.errors() if e["type"] in KEY_ERRORS or not _near(shape.clean(e["loc"]), spots)]
            return _with_unknown_keys(problems_from_errors(errors, model), model, raw)
        return unknown_keys(model, raw)

    def validate(self, name: str, rendered: Mapping[str, Any]) -> BaseModel:
        """``rendered`` params as the action's ``Params`` model; raises
        :class:`ParamsError` with one ``action.path: message`` per error, joined by ``; ``."""
        if name not in self._actions:
            raise ParamsError(f"unknown action {name!r}{did_you_mean(name, self._actions)}")
        params, problems = self._validated(name, rendered)
        if params is None or problems:
            raise ParamsError("; ".join(str(p.under((name,))) for p in problems))
        return params

    def params_problems(self, name: str, rendered: Mapping[str, Any]) -> list[Problem]:
        """What :meth:`validate` would refuse in ``rendered``, located relative to the
        params (an unknown action at ``()``); empty when they fit."""
        if name not in self._actions:
            return [Problem(f"unknown action {name!r}{did_you_mean(name, self._actions)}")]
        return self._validated(name, rendered)[1]

    def _validated(self, name: str, rendered: Mapping[str, Any]) -> tuple[BaseModel | None, list[Problem]]:
        model = self._actions[name].Params
        try:
            params = model.model_validate(rendered)
        except ValidationError as exc:
            return None, _with_unknown_keys(pydantic_problems(exc, model), model, rendered)
        return params, unknown_keys(model, rendered)

    def json_schema(self) -> dict[str, Any]:
        """``{action name: JSON Schema of its params}``, for ``hookwise schema``."""
        return {name: self._actions[name].Params.model_json_schema() for name in self.names()}


def resolve(path: str) -> type[Action]:
    """The :class:`Action` subclass at ``"module:Class"`` (``Class`` may be dotted),
    type-checked; raises :class:`PluginError` saying what is wrong."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or ":" in attr:
        raise PluginError(f"{path!r} is not of the form 'module:Class'")
    obj: Any = _import(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no attribute {attr!r}") from None
    return check_action(obj, path)


def check_action(obj: Any, path: str) -> type[Action]:
    """``obj``, the :class:`Action` subclass it is; raises :class:`PluginError` unless it
    keeps the :class:`Action` contract."""
    if not (isinstance(obj, type) and issubclass(obj, Action)) or obj is Action:
        raise PluginError(f"{path!r} is not an Action subclass (got {_describe(obj)})")
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise PluginError(f"{obj.__name__}.Params must be a pydantic BaseModel subclass")
    if obj.run is Action.run:
        raise PluginError(f"{obj.__name__} must override run(self, params, ctx)")
    return obj


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import module {module_name!r}: {exc}") from exc
    except Exception as exc:  # the plugin's own code failed while importing
        raise PluginError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return f"class {obj.__name__}"
    return type(obj).__name__


def _load_plugin(name: str, path: Any, builtins: frozenset[str]) -> type[Action]:
    """The action at ``path``, to be registered as ``name``; raises :class:`PluginError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PluginError(
            f"{name!r} is not a valid action name: use lower-case letters, digits and '_', starting with a letter"
        )
    if name in builtins:
        raise PluginError(f"{name!r} is a built-in action: a plugin cannot replace it; choose another name")
    if not isinstance(path, str):
        raise PluginError(f"expected 'module:Class', got {type(path).__name__}")
    return resolve(path)


def _name_warning(name: str, action: type[Action], loc: Loc) -> list[Problem]:
    own = getattr(action, "name", None)
    if own is None or own == name:
        return []
    return [Problem(f"{action.__name__}.name is {own!r}; it is registered as {name!r}", loc, warning=True)]


def _load_entry_points(
    builtins: frozenset[str], problems: list[Problem], warnings: list[Problem]
) -> dict[str, type[Action]]:
    found: dict[str, type[Action]] = {}
    origin: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        where = f"entry point {ep.name!r} ({ENTRY_POINT_GROUP}) of {dist}"
        if ep.name in origin:
            problems.append(Problem(f"{where}: the name is also advertised by {origin[ep.name]}"))
            continue
        origin[ep.name] = dist
        try:
            found[ep.name] = _load_plugin(ep.name, f"{ep.module}:{ep.attr}", builtins)
        except PluginError as exc:
            problems.append(Problem(f"{where}: {exc.message}"))
            continue
        warnings.extend(_name_warning(ep.name, found[ep.name], ()))
    return found


def _with_unknown_keys(problems: list[Problem], model: type[BaseModel], data: Any) -> list[Problem]:
    """``problems``, then the unknown keys of ``data`` that pydantic let pass."""
    seen = {p.loc for p in problems}
    return problems + [p for p in unknown_keys(model, data) if p.loc not in seen]


def _near(loc: Loc, spots: list[Loc]) -> bool:
    """Whether ``loc`` is at, below or above one of ``spots``."""
    return any(loc[: len(s)] == s or s[: len(loc)] == loc for s in spots)
