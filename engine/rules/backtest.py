"""``hookwise backtest`` (SPEC 15): a rule set run over stored events, with no side effects.

For each rule it counts the events it would match now against those it did match when
they arrived (the explain record stored with each event), lists examples of the
differences both ways, and renders the steps of some of the events it would match to find
the rules that would fail to render. Events are read in pages of :data:`BATCH` in the order
they were stored, and matched with the compiled rule set's index, as the worker matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, Problem, UsageError
from ..events import Event
from ..hover.handshake import builtin_rules
from ..run.plan import plan
from ..secrets import Masker
from ..store import BacktestStore
from . import yamlfile
from .config import Config, Settings
from .loader import Loaded
from .rule_loader import RuleLoader, display_path, rule_files
from .rules import Rule
from .ruleset import RuleSet

#: Events read from the store at once.
BATCH = 2000
#: Example event ids kept per difference and rule.
EXAMPLES = 5
#: Events whose steps are rendered per rule (rendering costs far more than matching).
RENDERED = 100

#: Called after each page: (events read so far, the received_at of the last one).
Progress = Callable[[int, float], None]


@dataclass
class Difference:
    """Events one side matched and the other did not: how many, and a few of their ids."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, event_id: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(event_id)


@dataclass
class RenderErrors(Difference):
    """Steps that would fail to render: how many events, and a few of them with the error."""

    messages: list[str] = field(default_factory=list)

    def note(self, event_id: str, message: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.messages.append(message)
        self.add(event_id)


@dataclass
class RuleResult:
    """What one rule would do and did over the window."""

    rule: str
    #: whether the rule is in the set backtested (else it is known from the events' records only)
    in_set: bool = True
    would: int = 0
    did: int = 0
    #: would match now, did not match then
    new: Difference = field(default_factory=Difference)
    #: did match then, would not now
    gone: Difference = field(default_factory=Difference)
    #: events whose steps were rendered
    rendered: int = 0
    render_errors: RenderErrors = field(default_factory=RenderErrors)

    def json(self) -> dict[str, Any]:
        errors = self.render_errors
        examples = [{"event_id": e, "error": m} for e, m in zip(errors.examples, errors.messages, strict=True)]
        return {
            "rule": self.rule, "in_set": self.in_set, "would": self.would, "did": self.did,
            "would_not_did": {"count": self.new.count, "examples": self.new.examples},
            "did_not_would": {"count": self.gone.count, "examples": self.gone.examples},
            "rendered": self.rendered,
            "render_errors": {
                "count": errors.count,
                "examples": examples,
            },
        }


@dataclass
class Report:
    """A backtest's outcome: the window, what was read, and a result per rule."""

    since: float
    until: float | None
    events: int = 0
    #: events not matched yet when read: nothing was recorded to compare with
    pending: int = 0
    #: seconds spent matching alone, and in all
    match_seconds: float = 0.0
    seconds: float = 0.0
    #: stopped at ``max_events``: later events of the window were not read
    truncated: bool = False
    rules: dict[str, RuleResult] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events matched per second of matching."""
        return self.events / self.match_seconds if self.match_seconds > 0 else 0.0

    def json(self) -> dict[str, Any]:
        from ..ops.operations import iso

        return {
            "since": iso(self.since), "until": iso(self.until), "events": self.events, "pending": self.pending,
            "seconds": round(self.seconds, 6), "match_seconds": round(self.match_seconds, 6),
            "events_per_second": round(self.rate, 1), "truncated": self.truncated,
            "rules": [r.json() for r in sorted(self.rules.values(), key=_order)],
        }


def _order(result: RuleResult) -> tuple[bool, str]:
    return not result.in_set, result.rule


@dataclass
class Backtest:
    """One backtest of ``rules`` over ``store``'s events received in [since, until)."""

    loaded: Loaded
    rules: RuleSet
    store: BacktestStore
    since: float
    until: float | None = None
    source: str | None = None
    type: str | None = None
    max_events: int | None = None
    rendered: int = RENDERED
    clock: Callable[[], float] = time.perf_counter
    #: masks the secrets of the rules tried in render errors (default: the loaded config's)
    masker: Masker | None = None

    def run(self, progress: Progress | None = None) -> Report:
        report = Report(self.since, self.until)
        report.rules = {rule.name: RuleResult(rule.name) for rule in self.rules}
        started, after = self.clock(), 0
        while True:
            limit = BATCH if self.max_events is None else min(BATCH, self.max_events - report.events)
            page = self.store.scan_events(
                since=self.since, until=self.until, source=self.source, type=self.type, after=after, limit=limit
            ) if limit > 0 else []
            if not page:
                break
            after = page[-1][0]
            self._page([(event, explain) for _, event, explain in page], report)
            if progress is not None:
                progress(report.events, page[-1][1].received_at.timestamp())
            if self.max_events is not None and report.events >= self.max_events:
                report.truncated = bool(self.store.scan_events(
                    since=self.since, until=self.until, source=self.source, type=self.type, after=after, limit=1
                ))
                break
        report.seconds = self.clock() - started
        return report

    def _page(self, page: list[tuple[Event, Any]], report: Report) -> None:
        t0 = self.clock()
        matched = [self._would(event) for event, _ in page]
        report.match_seconds += self.clock() - t0
        for (event, explain), would in zip(page, matched, strict=True):
            report.events += 1
            for rule in would:
                result = report.rules[rule.name]
                result.would += 1
                if result.rendered < self.rendered:
                    self._render(rule, event, result)
            if explain is None:
                report.pending += 1
                continue
            self._compare(event.id, {r.name for r in would}, _did(explain), report)

    def _would(self, event: Event) -> list[Rule]:
        rules = self.rules.match(event).rules
        if event.only_rules is not None:  # a replay for some rules went through those alone
            rules = [r for r in rules if r.name in event.only_rules]
        return rules

    def _compare(self, event_id: str, would: set[str], did: set[str], report: Report) -> None:
        for name in did:
            result = report.rules.get(name)
            if result is None:
                result = report.rules[name] = RuleResult(name, in_set=False)
            result.did += 1
            if name not in would:
                result.gone.add(event_id)
        for name in would - did:
            report.rules[name].new.add(event_id)

    def _render(self, rule: Rule, event: Event, result: RuleResult) -> None:
        result.rendered += 1
        for step in plan(rule, event, self.loaded.registry):
            if step.error is not None and not _needs_outputs(step.error):
                where = f"step {step.index} ({step.action})"
                masker = self.masker or self.loaded.masker
                result.render_errors.note(event.id, masker.mask(f"{where}: {step.error}"))
                return


def _did(explain: Iterable[Any]) -> set[str]:
    """The rules an explain record says matched (a record of a failed matching has none)."""
    return {r["rule"] for r in explain if isinstance(r, dict) and r.get("matched") and "rule" in r}


def _needs_outputs(error: str) -> bool:
    """Whether a render error comes from reading an earlier step's output, which a
    backtest cannot know (it runs no step): not the rule's fault."""
    return "'steps'" in error or "steps." in error


# --- the rule set to backtest ------------------------------------------------------------


def rules_from_path(
    loaded: Loaded, path: str | Path, environ: Mapping[str, str] | None = None
) -> tuple[RuleSet, Masker]:
    """The rules of a rule file, or of the rule files of a folder (``tests/`` skipped), as
    ``serve`` would load them under ``loaded``'s config, with the built-in rules, and the
    masker of the secrets they and the config hold. Raises :class:`ConfigError` with
    every problem found."""
    target = Path(path)
    if not target.exists():
        raise ConfigError([Problem(f"no such file or folder: {display_path(target)}")])
    config = loaded.config
    if target.is_dir():
        settings = config.settings.model_copy(update={"rules": [str(target.resolve())]})
        files, _ = rule_files(_with_settings(config, settings))
    else:
        files = [target]
    loader = RuleLoader(config, loaded.registry, loaded.templates, environ)
    rules: list[Rule] = []
    for file in files:
        rules.extend(loader.load_file(file, order=len(rules)))
    return _finish(loader, rules), _masker(loader)


def rules_from_text(
    loaded: Loaded, text: str, file: str = "<request>", environ: Mapping[str, str] | None = None
) -> tuple[RuleSet, Masker]:
    """The rules of a rule file's text (``POST /api/backtest``), with the built-in rules,
    and the masker of every secret they and the config hold (a ``${VAR}`` of the text
    included). Raises :class:`ConfigError`."""
    loader = RuleLoader(loaded.config, loaded.registry, loaded.templates, environ)
    doc = yamlfile.loads(text, file=file, environ=environ, collect=True)
    return _finish(loader, loader.load_document(doc)), _masker(loader)


def _finish(loader: RuleLoader, rules: list[Rule]) -> RuleSet:
    if loader.problems:
        masker = _masker(loader)
        raise ConfigError([p.masked(masker.mask) for p in loader.problems])
    builtin = [replace(r, order=len(rules) + i) for i, r in enumerate(builtin_rules(loader.config, loader))]
    return RuleSet([*rules, *builtin])


def _masker(loader: RuleLoader) -> Masker:
    """The secrets of the config and of the rules ``loader`` loaded, for their messages."""
    return Masker(loader.config.secrets | loader.secrets, loader.credentials)


def _with_settings(config: Config, settings: Settings) -> Config:
    return replace(config, settings=settings)


# --- reading the window and showing the report -----------------------------------------------


def window_start(text: str, now: float) -> float:
    """``--since``: a duration back from ``now`` (``7d``, ``12h``) or an ISO-8601 time
    (or unix seconds). Raises :class:`UsageError`."""
    from ..ops.operations import parse_time
    from ..units import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        found = parse_time(text, "--since")
    except UsageError:
        raise UsageError(f"--since: expected a duration (7d, 12h) or an ISO-8601 time, got {text!r}") from None
    assert found is not None
    return found


def format_text(report: Report, label: str) -> str:
    """The report as a person reads it: a line for the window, a table of the rules, and
    under each rule with a difference or a render error its examples."""
    from ..ops.operations import iso

    until = iso(report.until) if report.until is not None else "now"
    lines = [
        f"backtest of {label}: {report.events} events from {iso(report.since)} to {until}"
        + (f" ({report.pending} not matched yet: nothing to compare)" if report.pending else "")
        + (" (stopped at the limit: later events not read)" if report.truncated else ""),
        f"matched in {report.match_seconds:.2f}s ({report.rate:,.0f} events/s), {report.seconds:.2f}s in all",
        "",
    ]
    results = sorted(report.rules.values(), key=_order)
    header = ["RULE", "WOULD", "DID", "NEW", "GONE", "RENDER ERRORS"]
    rows = [[r.rule + ("" if r.in_set else " (not in the set)"), str(r.would), str(r.did), str(r.new.count),
             str(r.gone.count), f"{r.render_errors.count}/{r.rendered}" if r.rendered else "-"] for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in results:
        lines += _examples(r)
    return "\n".join(lines)


def _examples(result: RuleResult) -> list[str]:
    out = []
    if result.new.count:
        out.append(f"  would match, did not: {', '.join(result.new.examples)}{_more(result.new)}")
    if result.gone.count:
        out.append(f"  did match, would not: {', '.join(result.gone.examples)}{_more(result.gone)}")
    errors = result.render_errors
    out += [f"  render error: event {e}: {m}" for e, m in zip(errors.examples, errors.messages, strict=True)]
    return [f"{result.rule}:", *out] if out else []


def _more(difference: Difference) -> str:
    left = difference.count - len(difference.examples)
    return f" and {left} more" if left > 0 else ""
