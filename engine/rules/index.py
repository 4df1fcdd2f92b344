"""The value index: among the rules of one (source, type), find those whose required field
values agree with an event, without evaluating the others.

Most rules pin a field to one value (``state: failed``). The index is a small decision
tree over such fields: each node picks the field the most rules pin, sends an event down
the branch of its value, and keeps the rules that do not pin that field aside for every
event. Rules reached this way are only candidates: each is still evaluated in full, so
the index may let a rule through that then fails, but never holds back one that would
match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .condition_paths import MISSING, resolve
from .conditions import required_equalities
from .rules import Rule

#: Below this many rules a node keeps a plain list: evaluating them costs less than a lookup.
LEAF_SIZE = 8


@dataclass(frozen=True)
class Node:
    rules: tuple[Rule, ...] = ()
    path: str | None = None
    branches: Mapping[object, Node] = field(default_factory=dict)
    rest: Node | None = None

    def collect(self, body: Any, envelope: Mapping[str, Any], out: list[Rule]) -> None:
        if self.path is None:
            out.extend(self.rules)
            return
        value = resolve(self.path, body, envelope)
        if value is not MISSING:
            try:
                branch = self.branches.get(value)
            except TypeError:  # a list or object: no pinned scalar can equal it
                branch = None
            if branch is not None:
                branch.collect(body, envelope, out)
        if self.rest is not None:
            self.rest.collect(body, envelope, out)


class Dispatch:
    """The candidates of one (source, type), indexed by the values their rules pin."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.size = len(rules)
        pins = {rule.name: required_equalities(rule.when) if rule.when is not None else {} for rule in rules}
        self.root = _build(list(rules), pins, frozenset())

    def select(self, body: Any, envelope: Mapping[str, Any]) -> list[Rule]:
        """The rules that may match, in priority order."""
        if self.root.path is None:
            return list(self.root.rules)
        out: list[Rule] = []
        self.root.collect(body, envelope, out)
        out.sort(key=_order)
        return out


def _order(rule: Rule) -> tuple[int, int]:
    return (-rule.priority, rule.order)


def _build(rules: list[Rule], pins: Mapping[str, Mapping[str, object]], used: frozenset[str]) -> Node:
    if len(rules) <= LEAF_SIZE:
        return Node(tuple(rules))
    path = _best_path(rules, pins, used)
    if path is None:
        return Node(tuple(rules))
    groups: dict[object, list[Rule]] = {}
    rest: list[Rule] = []
    for rule in rules:
        pinned = pins[rule.name]
        if path in pinned:
            groups.setdefault(pinned[path], []).append(rule)
        else:
            rest.append(rule)
    used = used | {path}
    branches = {value: _build(group, pins, used) for value, group in groups.items()}
    return Node(path=path, branches=branches, rest=_build(rest, pins, used) if rest else None)


def _best_path(rules: Iterable[Rule], pins: Mapping[str, Mapping[str, object]], used: frozenset[str]) -> str | None:
    """The path pinned by the most rules, when enough rules pin it to be worth a lookup."""
    counts: Counter[str] = Counter(path for rule in rules for path in pins[rule.name] if path not in used)
    best = counts.most_common(1)
    return best[0][0] if best and best[0][1] >= LEAF_SIZE else None
