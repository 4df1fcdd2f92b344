"""Lint against what events look like (SPEC 15): warnings for a rule's ``when`` path, or an
``event.x`` path of a template or an ``if:``, that no event of the rule's types has.

What events look like is learnt from two places: the events of that source and type the
store holds (the latest :data:`SAMPLE` of each), and the catalog of event shapes shipped in
``engine/catalog/`` (Hover from the test fixtures; common GitHub and Stripe events), picked
by the source's preset. A path is known when any event of a type the rule names has it;
list elements are one path (``items.*.sku``; ``items.0.sku`` reads the same). A rule naming
no exact type, or types nothing is known about, is not judged. Paths a rule expects may be
missing are left alone (``exists: false``, ``empty: true``, ``| default``, ``is defined``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from difflib import get_close_matches
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import TemplateError

from ..errors import ConfigError, Loc, Problem, StoreError
from ..store import BacktestStore
from . import yamlfile
from .loader import Loaded
from .rule_loader import display_path, rule_files
from .rules import INTERNAL_SOURCE, STEP_KEYS, Rule

#: Stored events read per source and type.
SAMPLE = 100
#: The keys of a ``when`` that combine conditions rather than name a path.
_COMBINERS = ("all", "any", "not")
#: Filters and tests that say the template expects a path may be missing.
_LENIENT_FILTERS = frozenset({"default", "d"})
_LENIENT_TESTS = frozenset({"defined", "undefined", "none"})
#: A deeper body is not walked further (the receiver refuses deeper than 256 anyway).
_MAX_DEPTH = 64


def paths_of(value: Any, prefix: str = "", depth: int = 0) -> set[str]:
    """Every path into a JSON value: mapping keys joined with dots, list elements as ``*``."""
    found: set[str] = set()
    if depth > _MAX_DEPTH:
        return found
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            found.add(path)
            found |= paths_of(item, path, depth + 1)
    elif isinstance(value, list):
        path = f"{prefix}.*" if prefix else "*"
        for item in value:
            found.add(path)
            found |= paths_of(item, path, depth + 1)
    return found


def normal(path: str) -> str:
    """A rule's path as :func:`paths_of` writes paths: list indexes become ``*``."""
    return ".".join("*" if part.isdigit() or part == "*" else part for part in path.split("."))


@functools.cache
def catalog(preset: str) -> Mapping[str, frozenset[str]]:
    """The paths of each event type of a preset's catalog (empty when there is none)."""
    resource = files("engine").joinpath("catalog", f"{preset}.json")
    if not resource.is_file():
        return {}
    types = json.loads(resource.read_text(encoding="utf-8"))["types"]
    return {type_: frozenset(set().union(*(paths_of(e) for e in examples))) for type_, examples in types.items()}


class Shapes:
    """The known paths of (source, type) pairs: the catalog's and the store's."""

    def __init__(self, loaded: Loaded, store: BacktestStore | None = None) -> None:
        self.loaded = loaded
        self.store = store
        self._known: dict[tuple[str, str], frozenset[str] | None] = {}

    def known(self, source: str, type_: str) -> frozenset[str] | None:
        """The paths events of ``source`` and ``type_`` have, or None when nothing is known."""
        key = (source, type_)
        if key not in self._known:
            self._known[key] = self._learn(source, type_)
        return self._known[key]

    def _learn(self, source: str, type_: str) -> frozenset[str] | None:
        paths: set[str] = set()
        seen = False
        settings = self.loaded.config.settings.sources.get(source)
        if settings is not None and settings.preset is not None and type_ in catalog(settings.preset):
            paths |= catalog(settings.preset)[type_]
            seen = True
        if self.store is not None:
            bodies = self.store.sample_bodies(source, type_, SAMPLE)
            for body in bodies:
                paths |= paths_of(body)
            seen = seen or bool(bodies)
        return frozenset(paths) if seen else None


def shape_warnings(loaded: Loaded, store: BacktestStore | None = None) -> list[Problem]:
    """The warnings of every rule file the config names, located in their files."""
    shapes = Shapes(loaded, store)
    found: list[Problem] = []
    files_, _ = rule_files(loaded.config)
    for path in files_:
        found.extend(file_warnings(loaded, shapes, path))
    return found


def file_warnings(loaded: Loaded, shapes: Shapes, path: Path) -> list[Problem]:
    try:
        doc = yamlfile.load(path, display=display_path(path), collect=True)
    except ConfigError:
        return []  # check reports it
    entries = doc.data.get("rules") if isinstance(doc.data, dict) else None
    found: list[Problem] = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        name = entry.get("name") if isinstance(entry, dict) else None
        rule = loaded.rules.get(name) if isinstance(name, str) else None
        if rule is None or rule.file != doc.file:
            continue
        for problem, at_key in rule_warnings(rule, entry, ("rules", i), shapes):
            found.append(doc.locate(problem, key=at_key))
    return found


def rule_warnings(rule: Rule, entry: Mapping[str, Any], loc: Loc, shapes: Shapes) -> list[tuple[Problem, bool]]:
    """The warnings of one rule (``entry`` is the rule as written, at ``loc``), each with
    whether it sits at a key (a ``when`` path) rather than a value (a template)."""
    types = sorted(rule.events or ())
    sources = sorted(rule.sources) if rule.sources is not None else sorted(shapes.loaded.config.settings.sources)
    pairs = [(s, t) for s in sources if s != INTERNAL_SOURCE for t in types]
    known = {pair: k for pair in pairs if (k := shapes.known(*pair)) is not None}
    if not known:
        return []
    every = frozenset().union(*known.values())
    out = []
    for where, path, templated in references(entry, loc):
        if normal(path) not in every:
            message = _message(path, sorted({t for _, t in known}), every)
            text = f"event.{path}: {message}" if templated else message
            out.append((Problem(text, where, warning=True), not templated))
    return out


def _message(path: str, types: list[str], every: Iterable[str]) -> str:
    names = " or ".join(types)
    close = get_close_matches(normal(path), sorted(every), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"no {names} event has this path{hint}"


# --- the paths a rule reads -------------------------------------------------------------------


def references(entry: Mapping[str, Any], loc: Loc) -> Iterator[tuple[Loc, str, bool]]:
    """(where, path, templated) for each body path the rule as written reads: its ``when``
    keys, and the ``event.x`` paths of its ``if:`` and its steps' templates and ``if:``s
    (templated: the problem sits at the string, and names the path)."""
    when = entry.get("when")
    if isinstance(when, dict):
        yield from _when_paths(when, loc + ("when",))
    if isinstance(entry.get("if"), str):
        yield from _located(loc + ("if",), _expression_paths(entry["if"]))
    for i, step in enumerate(entry.get("actions") or []):
        if not isinstance(step, dict):
            continue
        if isinstance(step.get("if"), str):
            yield from _located(loc + ("actions", i, "if"), _expression_paths(step["if"]))
        for key, params in step.items():
            if key not in STEP_KEYS:
                yield from _params_paths(params, loc + ("actions", i, key))


def _located(where: Loc, paths: Iterable[str]) -> Iterator[tuple[Loc, str, bool]]:
    for path in paths:
        yield where, path, True


def _when_paths(when: Mapping[str, Any], loc: Loc) -> Iterator[tuple[Loc, str, bool]]:
    for key, value in when.items():
        if key in _COMBINERS:
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(item, dict):
                    yield from _when_paths(item, loc + ((key, i) if isinstance(value, list) else (key,)))
        elif isinstance(key, str) and not key.startswith("$") and not _may_be_missing(value):
            yield loc + (key,), key, False


def _may_be_missing(value: Any) -> bool:
    return isinstance(value, dict) and (value.get("exists") is False or value.get("empty") is True)


def _params_paths(value: Any, loc: Loc) -> Iterator[tuple[Loc, str, bool]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _params_paths(item, loc + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _params_paths(item, loc + (i,))
    elif isinstance(value, str) and ("{{" in value or "{%" in value):
        yield from _located(loc, _template_paths(value))


_PARSER = Environment()  # parsing only: templates render in engine.rules.templates' sandbox


def _template_paths(source: str) -> list[str]:
    try:
        return _event_paths(_PARSER.parse(source))
    except TemplateError:
        return []  # check reports it


def _expression_paths(source: str) -> list[str]:
    return _template_paths("{{ " + source + " }}")


def _event_paths(tree: nodes.Node) -> list[str]:
    """The ``event.a.b`` paths ``tree`` reads whole (not those it expects may be missing)."""
    lenient = {id(n) for n in _lenient_operands(tree)}
    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        parts = _chain(node)
        if parts is None or id(node) in lenient or _inside_chain(node, tree):
            continue
        path = ".".join(parts)
        if path not in found:
            found.append(path)
    return found


def _chain(node: nodes.Node) -> list[str] | None:
    """``["job", "id"]`` for ``event.job.id`` or ``event["job"]["id"]``; else None."""
    parts: list[str] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            parts.append(str(node.arg.value))
        else:
            return None
        node = node.node
    if not (isinstance(node, nodes.Name) and node.name == "event") or not parts:
        return None
    return parts[::-1]


def _inside_chain(node: nodes.Node, tree: nodes.Node) -> bool:
    """Whether ``node`` is the inner part of a longer ``event.`` chain (that one is checked)."""
    chains = tree.find_all((nodes.Getattr, nodes.Getitem))
    return any(getattr(outer, "node", None) is node for outer in chains)


def _lenient_operands(tree: nodes.Node) -> Iterator[nodes.Node]:
    """The chains a ``default`` filter or a ``defined`` test is applied to, and their parts."""
    for node in tree.find_all((nodes.Filter, nodes.Test)):
        assert isinstance(node, (nodes.Filter, nodes.Test))
        if node.name in (_LENIENT_FILTERS if isinstance(node, nodes.Filter) else _LENIENT_TESTS):
            operand: nodes.Node | None = node.node
            while isinstance(operand, (nodes.Getattr, nodes.Getitem)):
                yield operand
                operand = operand.node


def stored_events(loaded: Loaded) -> Any:
    """The config's store, to sample events from, or None when it does not exist yet or
    does not answer (then only the catalog is used)."""
    from ..store import open_store

    url = loaded.config.store_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        return None
    try:
        return open_store(url)
    except StoreError:
        return None
