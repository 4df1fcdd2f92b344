"""The RuleSet: rules in priority order, indexed by source and event type (engine.rules.index narrows
them by field values), and what matching said of each rule (:class:`Verdict`, :class:`Match`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..events import Event
from .conditions import MATCHED, Outcome
from .index import Dispatch
from .rules import Rule


@dataclass(frozen=True)
class Verdict:
    """What matching said of one rule for one event."""

    rule: Rule
    outcome: Outcome
    #: the name of a matched ``stop`` rule that kept this one from being considered
    stopped_by: str | None = None

    @property
    def matched(self) -> bool:
        return self.outcome.matched and self.stopped_by is None

    def reason(self) -> str:
        """"yes", or why not: the explain text of SPEC 5.4."""
        if self.stopped_by is not None:
            return f"no: skipped, rule {self.stopped_by!r} matched first and has stop: true"
        return "yes" if self.outcome.matched else f"no: {self.outcome}"

    def record(self) -> dict[str, Any]:
        """The explain record stored with the event."""
        return {"rule": self.rule.name, "version": self.rule.version, "matched": self.matched, "reason": self.reason()}


@dataclass(frozen=True)
class Match:
    """The result of matching one event: a verdict for every rule considered."""

    verdicts: tuple[Verdict, ...]

    @property
    def rules(self) -> list[Rule]:
        return [v.rule for v in self.verdicts if v.matched]

    def explain(self) -> list[dict[str, Any]]:
        return [v.record() for v in self.verdicts]


class RuleSet:
    """An immutable set of rules in priority order, indexed by source, event type and the
    field values rules pin.

    The first level maps ``(source, type)`` to the rules that name both, name only one of
    them, or name neither (globs are checked at evaluation); the second
    (:mod:`engine.rules.index`) narrows those down by the values of fields such as ``state``. So
    matching one event costs the rules that could match it, not all of them.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(sorted(rules, key=lambda r: (-r.priority, r.order)))
        self._by_name = {r.name: r for r in self.rules}
        self._buckets: dict[tuple[str | None, str | None], list[Rule]] = {}
        for rule in self.rules:
            for key in _index_keys(rule):
                self._buckets.setdefault(key, []).append(rule)
        self._dispatch: dict[tuple[str, str], Dispatch] = {}
        #: whether any rule keeps state (SPEC 14): then matching is serialised across workers
        self.stateful = any(r.state is not None for r in self.rules)
        self.absences = [r for r in self.rules if r.state is not None and r.state.absence is not None]

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def get(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def candidates(self, source: str, type_: str) -> tuple[Rule, ...]:
        """The rules that may match an event of ``source`` and ``type_``, in priority order."""
        merged: dict[str, Rule] = {}
        for bucket in ((source, type_), (None, type_), (source, None), (None, None)):
            for rule in self._buckets.get(bucket, ()):
                merged[rule.name] = rule
        return tuple(sorted(merged.values(), key=lambda r: (-r.priority, r.order)))

    def dispatch(self, source: str, type_: str) -> Dispatch:
        key = (source, type_)
        found = self._dispatch.get(key)
        if found is None:
            found = Dispatch(self.candidates(source, type_))
            # Bounded: types come from senders. Past the bound, build per event (slower, same result).
            if len(self._dispatch) < 10_000:
                self._dispatch[key] = found
        return found

    def match(self, event: Event, *, every_rule: bool = False) -> Match:
        """Match ``event``. Only the candidates the index finds are considered unless
        ``every_rule`` (dry-run explains every rule, with what each one failed on)."""
        envelope = event.envelope()
        if every_rule:
            rules: Iterable[Rule] = self.rules
        else:
            rules = self.dispatch(event.source, event.type).select(event.body, envelope)
        verdicts = []
        stopped_by: str | None = None
        for rule in rules:
            if stopped_by is not None:
                verdicts.append(Verdict(rule, MATCHED, stopped_by=stopped_by))
                continue
            outcome = rule.evaluate(event, envelope)
            verdicts.append(Verdict(rule, outcome))
            if outcome.matched and rule.stop and not rule.shadow:  # a shadow rule never changes what runs
                stopped_by = rule.name
        return Match(tuple(verdicts))


def _index_keys(rule: Rule) -> list[tuple[str | None, str | None]]:
    sources: Iterable[str | None] = sorted(rule.sources) if rule.sources is not None else [None]
    types: list[str | None] = (
        [None] if rule.event_glob is not None or rule.events is None else list(sorted(rule.events))
    )
    return [(s, t) for s in sources for t in types]
