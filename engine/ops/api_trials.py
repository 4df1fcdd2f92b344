"""The shapes of the API calls that try rules with no side effects (SPEC 10): a dry run of
one event (``POST /api/dry-run``) and a backtest over stored events (``POST
/api/backtest``), as pydantic models beside those of :mod:`engine.ops.api_models`, with the
same rules: unknown keys are refused, every field described.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from .api_models import Closed, Time, Verdict

# --- requests ------------------------------------------------------------------------------


class DryRunRequest(Closed):
    """An event to match and render with no side effects."""

    source: str = Field(
        min_length=1, description="The source the event arrives on (hookwise: the events hookwise emits itself).",
    )
    event: dict[str, JsonValue] | list[JsonValue] = Field(description="The event body, a JSON object or array.")
    headers: dict[str, str] = Field(default_factory=dict, description="The request's headers (names in any case).")


class BacktestRequest(Closed):
    """A rule set to run over stored events, with no side effects."""

    since: str = Field("7d", description="Start of the window: a duration back from now (7d, 12h) or ISO-8601.")
    until: str | None = Field(None, description="End of the window (ISO-8601); now when left out.")
    source: str | None = Field(None, description="Only events of this source.")
    type: str | None = Field(None, description="Only events of this type.")
    rules: str | None = Field(
        None, description="The text of a rule file to try instead of the config's rules (the built-in ones added).",
    )
    rule: str | None = Field(None, description="Only this rule in the answer.")


# --- answers -------------------------------------------------------------------------------


class DryRunEvent(Closed):
    source: str = Field(description="The source the event arrived on.")
    type: str = Field(description="Its type, as the source reads it.")


class PlannedStep(Closed):
    rule: str = Field(description="The rule the step belongs to.")
    step: int = Field(description="Its index in the rule.")
    id: str = Field(description="Its id.")
    action: str = Field(description="The action it would run.")
    skipped: Literal[True] | None = Field(None, description="Present when its if is false: it would not run.")
    error: str | None = Field(None, description="Present when its params cannot be rendered: why.")
    params: JsonValue = Field(None, description="Present when rendered: the params it would run with (masked).")


class DryRunResult(Closed):
    """What an event would do: every rule explained, the steps of those that match rendered."""

    event: DryRunEvent = Field(description="The event as read.")
    explain: list[Verdict] = Field(description="Every rule, matched or not, and why.")
    actions: list[PlannedStep] = Field(description="The steps of the matching rules, in order.")
    state: list[dict[str, str]] = Field(
        default_factory=list, description="What state each stateful rule would consult ({rule, consults}); none read."
    )


class Examples(Closed):
    count: int = Field(description="How many events.")
    examples: list[str] = Field(description="The ids of the first five.")


class RenderErrorExample(Closed):
    event_id: str = Field(description="The event.")
    error: str = Field(description="The step that would fail, and why.")


class RenderErrors(Closed):
    count: int = Field(description="Events of those rendered whose steps would fail to render.")
    examples: list[RenderErrorExample] = Field(description="The first five.")


class BacktestRule(Closed):
    rule: str = Field(description="The rule's name.")
    in_set: bool = Field(description="Whether it is in the set tried (else it is known from the records alone).")
    would: int = Field(description="Events it would match now.")
    did: int = Field(description="Events it matched when they arrived.")
    would_not_did: Examples = Field(description="Events it would match now and did not then.")
    did_not_would: Examples = Field(description="Events it matched then and would not now.")
    rendered: int = Field(description="Events whose steps were rendered (the first 100 it would match).")
    render_errors: RenderErrors = Field(description="Of those, the ones a step would fail to render for.")


class BacktestResult(Closed):
    """What a rule set would have done over a window of stored events, against what was done."""

    since: Time = Field(description="Start of the window.")
    until: Time | None = Field(description="End of the window; null: now.")
    events: int = Field(description="Events read.")
    pending: int = Field(description="Of those, not matched yet: nothing was recorded to compare with.")
    seconds: float = Field(description="Time the backtest took.")
    match_seconds: float = Field(description="Of that, time spent matching.")
    events_per_second: float = Field(description="Events matched per second of matching.")
    truncated: bool = Field(description="Whether it stopped at its limit of events before the end of the window.")
    rules: list[BacktestRule] = Field(description="Each rule of the set, and each rule the records name.")
