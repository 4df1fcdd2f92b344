"""Rule and Step: the frozen values a rule file's entries become (SPEC 5), and the pydantic
models of a rule file's shape. Loading is engine.rules.rule_loader; matching is engine.rules.ruleset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import RenderError
from ..events import Event
from ..units import Duration
from .conditions import MATCHED, Condition, Outcome
from .config import NAME_PATTERN, RetryPolicy
from .stateful import AbsenceModel, State, ThresholdModel, ThrottleModel, absence_outcome
from .templates import Compiled, Expression

#: Source of the events hookwise itself emits (``emit`` steps, ``queue.exhausted``).
INTERNAL_SOURCE = "hookwise"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StepRetry(_Model):
    """A step's retry policy; keys left out come from ``defaults.retry``."""

    attempts: int | None = Field(None, ge=1, le=1000)
    backoff: Duration | None = None
    max_backoff: Duration | None = None


class StepKeys(_Model):
    """The keys every step may carry beside its one action key."""

    id: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] | None = Field(
        None, description="Name for steps.<id>; default: the action name."
    )
    if_: str | None = Field(None, alias="if", description="Jinja expression; the step is skipped when it is false.")
    retry: StepRetry | None = None
    timeout: Duration | None = None
    delay: Duration = Field(0.0, description="Wait this long after the previous step.")
    continue_on_error: bool = False


STEP_KEYS = ("id", "if", "retry", "timeout", "delay", "continue_on_error")

OneOrMany = str | list[str]


class RuleModel(_Model):
    """One rule as written in a rule file."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    source: OneOrMany | None = Field(None, description="A source name or a list of them.")
    event: OneOrMany | None = Field(None, description="Event types or globs (job-*); \"*\" matches everything.")
    when: dict[str, Any] | None = Field(None, description="Conditions on the event's fields; every entry must hold.")
    if_: str | None = Field(None, alias="if", description="A Jinja expression that must be true.")
    priority: int = Field(0, description="Higher first; ties in file order.")
    stop: bool = Field(False, description="When matched, lower rules are skipped.")
    enabled: bool = True
    throttle: ThrottleModel | None = Field(None, description="Skip later matches with the same key within a window.")
    threshold: ThresholdModel | None = Field(None, description="Fire on the count-th event per key within a window.")
    absence: AbsenceModel | None = Field(None, description="Fire when `expect` does not follow `after` in time.")
    order_by: str | None = Field(None, description="Runs of one key start in arrival order, one at a time.")
    mode: Literal["live", "shadow"] = Field(
        "live", description="shadow: matched, rendered and recorded as a shadow run, but no action runs."
    )
    # Any: each step is checked on its own (RuleLoader._compile_step), so that one bad
    # step neither hides the others' problems nor shifts their places.
    actions: list[Any] = Field(default_factory=list)


class RuleFile(_Model):
    rules: list[RuleModel] = Field(default_factory=list)


class RuleEntries(_Model):
    """A rule file before its rules are looked at, each on its own."""

    rules: list[Any] = Field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One compiled action of a rule."""

    index: int
    id: str
    action: str
    params: Compiled
    condition: Expression | None
    retry: RetryPolicy
    timeout: float
    delay: float
    continue_on_error: bool


@dataclass(frozen=True)
class Rule:
    """A compiled rule. ``version`` is a hash of the rule's text as written."""

    name: str
    file: str
    line: int
    version: str
    order: int
    steps: tuple[Step, ...]
    description: str = ""
    sources: frozenset[str] | None = None
    events: frozenset[str] | None = None
    event_glob: re.Pattern[str] | None = None
    event_text: tuple[str, ...] = ()
    when: Condition | None = None
    condition: Expression | None = None
    condition_text: str = ""
    priority: int = 0
    stop: bool = False
    enabled: bool = True
    #: throttle, threshold, absence and order_by (SPEC 14), compiled; None for a stateless rule
    state: State | None = None
    #: matched, rendered and recorded, but its actions never run (``mode: shadow``)
    shadow: bool = False
    #: the rule as written (indented as in its file), kept with the runs it creates
    text: str = field(default="", repr=False, compare=False)

    @property
    def any_event(self) -> bool:
        return self.events is None and self.event_glob is None

    def evaluate(self, event: Event, envelope: Mapping[str, Any] | None = None) -> Outcome:
        """Whether ``event`` matches, or the first selector or condition that failed.
        ``envelope`` is ``event.envelope()``, passed in when the caller already has it."""
        if not self.enabled:
            return Outcome(False, "enabled", "expected the rule to be enabled", False)
        if self.state is not None and self.state.absence is not None:
            return absence_outcome(self.name, event)
        if self.sources is not None and event.source not in self.sources:
            return Outcome(False, "source", f"expected {_one_of(self.sources)}", event.source)
        if not self._event_matches(event.type):
            return Outcome(False, "event", f"expected {_one_of(self.event_text)}", event.type)
        if self.when is not None:
            outcome = self.when.evaluate(event.body, event.envelope() if envelope is None else envelope)
            if not outcome.matched:
                return outcome
        if self.condition is not None:
            return self._evaluate_if(event)
        return MATCHED

    def _event_matches(self, type_: str) -> bool:
        if self.any_event:
            return True
        if self.events is not None and type_ in self.events:
            return True
        return self.event_glob is not None and self.event_glob.match(type_) is not None

    def _evaluate_if(self, event: Event) -> Outcome:
        assert self.condition is not None
        ctx = event.context()
        ctx["rule"] = {"name": self.name, "version": self.version}
        try:
            value = self.condition.evaluate(ctx)
        except RenderError as exc:
            return Outcome(False, "if", f"expected {self.condition_text!r} to evaluate, but it failed: {exc}", None)
        if value:
            return MATCHED
        return Outcome(False, "if", f"expected {self.condition_text!r} to be true", value)

    def location(self) -> str:
        return f"{self.file}:{self.line}"


def _one_of(values: Iterable[str]) -> str:
    items = sorted(values)
    return repr(items[0]) if len(items) == 1 else f"one of {items}"
