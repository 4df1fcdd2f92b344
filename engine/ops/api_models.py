"""The shapes of hookwise's HTTP interface (SPEC 10), as pydantic models: what the API
takes (request bodies and query parameters, validated with these models) and what it
answers (described by them; ``/openapi.json`` is generated from both, see
:mod:`engine.ops.openapi`).

Request models refuse unknown keys, so that a misspelt key (``"rule"`` for ``"rules"``)
is answered 400 rather than ignored. Response models refuse unknown keys too: the tests
read every answer through them, so a field added to an answer without its description
fails them.

The answers themselves are built by :mod:`engine.ops.operations` (shared with the CLI and the
web UI) and sent as they are; these models describe them, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    RootModel,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from ..run.delivery import BreakerState
from ..run.runs import StepStatus
from ..store import QUEUE_STATUSES
from ..units import Duration
from .operations import EVENT_STATUSES, RUN_STATUSES

#: The page size of the lists of events and runs unless the request says otherwise.
DEFAULT_LIMIT = 50
#: Lease of a claimed queue item unless the consumer asks for another, in seconds.
DEFAULT_QUEUE_LEASE = 300.0


@dataclass(frozen=True)
class OneOf:
    """``Annotated`` metadata of a text that is one of ``values``: an enum in the schema,
    refused in the words the CLI and the web UI use (``expected one of a, b``)."""

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(schema), "enum": list(self.values)}

    def _check(self, value: str) -> str:
        if value not in self.values:
            raise ValueError(f"expected one of {', '.join(self.values)}")
        return value


EventStatus = Annotated[str, OneOf(EVENT_STATUSES)]
RunStatus = Annotated[str, OneOf(RUN_STATUSES)]
StepState = Annotated[str, OneOf(tuple(s.value for s in StepStatus))]
QueueStatus = Annotated[str, OneOf(QUEUE_STATUSES)]
Breaker = Annotated[str, OneOf(tuple(s.value for s in BreakerState))]

#: A time as the API shows it: ISO-8601 in UTC (``2026-11-03T14:02:11.5Z``).
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
#: A page size.
Limit = Annotated[int, Field(ge=1, le=1000)]


class Closed(BaseModel):
    """A shape whose keys are all named: an unknown one is an error."""

    model_config = ConfigDict(extra="forbid")


class _Query(BaseModel):
    """Query parameters: others are ignored (a cache buster, a proxy's own)."""

    model_config = ConfigDict(extra="ignore")


# --- requests ------------------------------------------------------------------------------


class EventsQuery(_Query):
    source: str | None = Field(None, description="Only events received on this source.")
    type: str | None = Field(None, description="Only events of this type.")
    status: EventStatus | None = Field(None, description="Only events pending (not matched yet) or matched.")
    since: str | None = Field(None, description="Received at or after this time: ISO-8601, or unix seconds.")
    until: str | None = Field(None, description="Received before this time: ISO-8601, or unix seconds.")
    cursor: str | None = Field(None, description="The next_cursor of the previous page, for the page after it.")
    limit: Limit = Field(DEFAULT_LIMIT, description="Events on a page at most.")


class RunsQuery(_Query):
    status: RunStatus | None = Field(None, description="Only runs with this status.")
    rule: str | None = Field(None, description="Only runs of this rule.")
    shadow: bool | None = Field(
        None, description="true: only the runs of shadow rules (rendered, no action run); false: only live ones."
    )
    limit: Limit = Field(DEFAULT_LIMIT, description="Runs at most, the latest changed first.")


class QueueItemsQuery(_Query):
    status: QueueStatus | None = Field(None, description="Only items with this status.")
    limit: Limit = Field(100, description="Items at most.")


class HoverCallbackQuery(_Query):
    """What Hover's authorize page adds to the address it sends the browser back to."""

    state: str | None = Field(None, description="The login state hookwise issued (used once).")
    code: str | None = Field(None, description="The authorization code to exchange for tokens.")
    error: str | None = Field(None, description="The OAuth error code when access was not granted.")


class WebhookQuery(_Query):
    token: str | None = Field(None, description="The source's token, for a source that takes it in the URL.")


class ReplayRequest(Closed):
    """An event to store again, to go through the rules once more."""

    rules: list[str] = Field(
        default_factory=list, description="Only these rules (by name); every rule when empty or left out.",
    )


class RetryRequest(Closed):
    """A dead run to resume from its dead step, perhaps with edits to that step's params."""

    edits: dict[str, JsonValue] = Field(
        default_factory=dict, alias="set",
        description='Params of the dead step to change before it runs again: {"STEP.PARAM": value}, STEP being the '
                    "step's id or index and PARAM a dotted path into its rendered params.",
    )

    @field_validator("edits")
    @classmethod
    def _step_and_param(cls, edits: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for key in edits:
            step, dot, param = key.partition(".")
            if not dot or not step or not param:
                raise ValueError(f"{key!r} is not STEP.PARAM")
        return edits

    def sets(self) -> list[tuple[str, str, Any]]:
        """The edits as (step, param path, value)."""
        return [(key.partition(".")[0], key.partition(".")[2], value) for key, value in self.edits.items()]


class ClaimRequest(Closed):
    """The next item of a queue to take, leased."""

    lease: Duration = Field(
        DEFAULT_QUEUE_LEASE, description="How long the item is the claimer's: a duration (30m) or seconds.",
    )


class FailRequest(Closed):
    """A claimed item given back, to be tried again later (or dead when its attempts are used up)."""

    retry_in: Duration = Field(0.0, description="When the item is due again: a duration (1h) or seconds.")
    error: str | None = Field(None, description="What went wrong, kept with the item.")


class WebhookBody(RootModel[dict[str, JsonValue] | list[JsonValue]]):
    """A webhook's body: JSON (an object or an array), or a form whose fields become the
    body (a form with only GitHub's ``payload`` field becomes that JSON)."""


# --- answers -------------------------------------------------------------------------------


class Error(Closed):
    """What went wrong, in a sentence: nothing secret is in it."""

    error: str = Field(description="A word for the kind of error: bad_request, not_found, unauthorized, ...")
    message: str = Field(description="What is wrong; a field in a request is named first (PATH: ...).")


class EventSummary(Closed):
    id: str = Field(description="The event's id.")
    source: str = Field(description="The source it was received on (hookwise: emitted by a step).")
    type: str = Field(description="Its type, as the source reads it (unknown when it cannot be read).")
    delivery_id: str | None = Field(description="The sender's delivery id, or a hash of the body.")
    received_at: Time = Field(description="When it was received.")
    status: EventStatus = Field(description="pending until matched against the rules.")
    replay_of: str | None = Field(description="The event this one replays, if any.")
    runs: int | None = Field(description="How many runs it produced; null while pending.")
    outcome: str = Field(description="The same in words: pending, no rule matched, 1 run, 3 runs.")


class EventsPage(Closed):
    """A page of events, newest first."""

    events: list[EventSummary] = Field(description="The events of this page.")
    next_cursor: str | None = Field(description="The cursor of the next page; null on the last.")


class Verdict(Closed):
    """Whether a rule matched an event, and why not."""

    rule: str = Field(description="The rule's name.")
    version: str = Field(description="The rule's version (a hash of its text).")
    matched: bool = Field(description="Whether it matched.")
    reason: str = Field(description="yes, or the first condition that failed and the value it saw.")


class MatchFailed(Closed):
    """Matching itself failed for this event (no rule was judged)."""

    error: str = Field(description="What failed.")


class StoredEvent(Closed):
    id: str = Field(description="The event's id.")
    source: str = Field(description="The source it was received on.")
    type: str = Field(description="Its type.")
    delivery_id: str | None = Field(description="The sender's delivery id, or a hash of the body.")
    body: JsonValue = Field(description="The body as received; its stored text when JSON cannot show it (body_note).")
    body_note: str | None = Field(None, description="Present when the body is shown as its stored text, saying why.")
    headers: dict[str, str] = Field(description="The request's headers (credentials stored masked).")
    query: dict[str, str] = Field(description="The request's query parameters (token masked).")
    received_at: Time = Field(description="When it was received.")
    depth: int = Field(description="0 when received; 1 more per emit that led to it.")
    status: EventStatus = Field(description="pending until matched against the rules.")
    explain: list[Verdict | MatchFailed] | None = Field(description="Each rule considered; null while pending.")
    replay_of: str | None = Field(description="The event this one replays, if any.")
    only_rules: list[str] | None = Field(description="The rules a replay goes through; null for all.")


class Step(Closed):
    run_id: str = Field(description="The run the step belongs to.")
    index: int = Field(description="Its place in the rule's actions, from 0.")
    id: str = Field(description="Its id (the action's name unless the rule names it).")
    action: str = Field(description="The action it runs.")
    status: StepState = Field(description="Where it is.")
    attempt: int = Field(description="Attempts made so far.")
    due_at: Time | None = Field(description="When it runs next (ready or running steps only).")
    params: JsonValue = Field(description="Its params as last rendered (secrets masked); null before.")
    output: JsonValue = Field(description="What the action returned (secrets masked); null until it succeeds.")
    error: str | None = Field(description="The last attempt's error.")
    started_at: Time | None = Field(description="When its last attempt started.")
    finished_at: Time | None = Field(description="When its last attempt finished.")


class Run(Closed):
    id: str = Field(description="The run's id.")
    event_id: str = Field(description="The event that started it.")
    rule: str = Field(description="The rule it runs.")
    rule_version: str = Field(description="The version of the rule it runs, kept while it lasts.")
    status: RunStatus = Field(description=(
        "active, succeeded, dead (a step used up its attempts), waiting (an earlier run of its order_by key "
        "has not finished) or skipped."
    ))
    step: int = Field(description="The index of its current (or dead, or last) step.")
    error: str | None = Field(description="Why it died.")
    created_at: Time = Field(description="When it was created.")
    updated_at: Time = Field(description="When it last changed.")
    shadow: bool = Field(description="Whether a shadow rule made it: its steps were rendered, no action ran.")


class WaitingFor(Closed):
    key: str = Field(description="The run's order_by key.")
    run_id: str | None = Field(description="The run at the head of the key, which this one waits for; null if none.")
    status: str | None = Field(description="That run's status: dead means it holds the key until retried or skipped.")
    reason: str = Field(description="Why this run waits, in words.")


class RunDetail(Run):
    steps: list[Step] = Field(description="Its steps, in order.")
    waiting_for: WaitingFor | None = Field(None, description="For a waiting run: the run it waits for.")


class EventDetail(Closed):
    """An event with its explain record and the runs it produced."""

    event: StoredEvent = Field(description="The event.")
    runs: list[RunDetail] = Field(description="Its runs with their steps.")
    timers: list[dict[str, Any]] = Field(
        default_factory=list, description="Absence timers the event started or ended (stateful rules)."
    )


class ReplayAccepted(Closed):
    event_id: str = Field(description="The id of the stored copy.")
    replay_of: str = Field(description="The event replayed.")


class Runs(Closed):
    runs: list[Run] = Field(description="The runs, the latest changed first.")


class RuleStep(Closed):
    id: str = Field(description="The step's id.")
    action: str = Field(description="The action it runs.")


class RunCounts(Closed):
    runs: int = Field(description="Runs of the rule in the store.")
    succeeded: int = Field(description="Of those, succeeded.")
    dead: int = Field(description="Of those, dead.")
    active: int = Field(description="Of those, active.")


class RuleInfo(Closed):
    name: str = Field(description="The rule's name.")
    description: str = Field(description="Its description (may be empty).")
    version: str = Field(description="Its version (a hash of its text).")
    file: str = Field(description="The file it is written in.")
    line: int = Field(description="The line it starts on.")
    builtin: bool = Field(description="Whether hookwise made it (Hover's handshake).")
    enabled: bool = Field(description="Whether it is enabled.")
    mode: Literal["live", "shadow"] = Field(description="shadow: its runs are rendered and recorded, no action runs.")
    priority: int = Field(description="Rules with a higher priority are matched first.")
    source: list[str] | None = Field(description="The sources it takes events from; null for any.")
    event: list[str] | None = Field(description="The event types (or globs) it matches; null for any.")
    steps: list[RuleStep] = Field(description="Its steps.")
    counts: RunCounts = Field(description="Its runs, by status.")
    stateful: list[str] = Field(default_factory=list, description="What the rule keeps (throttle, threshold, ...).")
    state: dict[str, Any] | None = Field(
        None, description="Its state: throttled keys, counters, timers, runs in order (stateful rules)."
    )


class Rules(Closed):
    rules: list[RuleInfo] = Field(description="The rules loaded, in matching order.")


class HoverWebhook(Closed):
    webhook_id: str = Field(description="Hover's id of the webhook.")
    source: str | None = Field(description="The source it sends to, when known.")
    url: str | None = Field(description="The URL registered (token masked), when registered here.")
    verified_at: Time | None = Field(description="When Hover's verification handshake succeeded.")
    last_error: str | None = Field(description="The last error of the handshake or registration.")
    updated_at: Time | None = Field(description="When this was last recorded.")
    verify_method: str | None = Field(description="How the handshake went through.")


class HoverState(Closed):
    webhooks: list[HoverWebhook] = Field(description="The Hover webhooks recorded for the source.")


class SourceInfo(Closed):
    name: str = Field(description="The source's name.")
    preset: str | None = Field(description="Its preset (hover, github, stripe, standard, slack), if any.")
    path: str = Field(description="Where it receives: /hooks/NAME.")
    authenticated: bool = Field(description="Whether senders must prove themselves (false: verify: none).")
    checks: list[Literal["signature", "token", "allow_ips"]] = Field(description="How requests prove themselves.")
    hover: HoverState | None = Field(None, description="For a hover source: its webhooks' verification state.")


class Sources(Closed):
    sources: list[SourceInfo] = Field(description="The configured sources, by name.")


class DeferredCounts(Closed):
    concurrency: int = Field(description="Steps deferred because the host's calls in flight were at its limit.")
    rate: int = Field(description="Steps deferred by the host's rate limit.")
    breaker: int = Field(description="Steps deferred while the host's circuit breaker was open.")


class HostInfo(Closed):
    host: str = Field(description="The destination host.")
    concurrency: int = Field(description="Calls in flight allowed at once.")
    rate_per_s: float | None = Field(description="Calls a second allowed; null without a limit.")
    in_flight: int = Field(description="Calls in flight now.")
    breaker: Breaker = Field(description="The circuit breaker: closed, open or half-open.")
    consecutive_failures: int = Field(description="Failed calls in a row.")
    retry_in_s: float | None = Field(description="Seconds until an open breaker lets a probe call through.")
    calls: int = Field(description="Calls made.")
    failed: int = Field(description="Calls that failed.")
    deferred: DeferredCounts = Field(description="Steps deferred, by reason.")
    call_time_s: float = Field(description="Seconds spent in calls, in all.")


class Hosts(Closed):
    hosts: list[HostInfo] = Field(description="The hosts this process's worker has called (none without a worker).")


class Queues(Closed):
    queues: dict[str, dict[QueueStatus, int]] = Field(description="Each queue's items counted by status.")


class QueueItem(Closed):
    id: str = Field(description="The item's id.")
    queue: str = Field(description="Its queue.")
    key: str = Field(description="Its key: one open item per key and queue.")
    status: QueueStatus = Field(description="waiting, claimed, done or dead.")
    data: JsonValue = Field(description="What the requeue step put in it (secrets masked).")
    attempts: int = Field(description="Claims so far.")
    max_attempts: int = Field(description="Claims allowed before it is dead.")
    available_at: Time = Field(description="Waiting: due at; claimed: the lease's end.")
    error: str | None = Field(description="The error it was last given back with.")
    created_at: Time = Field(description="When it was created.")
    updated_at: Time = Field(description="When it last changed.")
    exhausted_event: str | None = Field(
        None, description="Present when this change made it dead: the queue.exhausted event stored.",
    )


class QueueItems(Closed):
    items: list[QueueItem] = Field(description="The items, oldest first.")


class QueueItemAnswer(Closed):
    item: QueueItem = Field(description="The item as it is now.")


class Accepted(Closed):
    """The event is committed to the store."""

    event_id: str = Field(description="The stored event's id.")


class Duplicate(Closed):
    """The delivery was received before: nothing new is stored."""

    event_id: str = Field(description="The id of the event stored for it the first time.")
    duplicate: Literal[True] = Field(description="Always true.")


class Alive(Closed):
    status: Literal["ok"] = Field(description="Always ok: the process answers.")


class ReadinessChecks(Closed):
    rules: str = Field(description="How many rules are loaded.")
    draining: Literal["yes", "no"] = Field(description="Whether the process is draining (SIGTERM).")
    store: str = Field(description="writable, or why an event cannot be committed now.")


class Readiness(Closed):
    status: Literal["ok", "unavailable"] = Field(description="ok when ready for events.")
    checks: ReadinessChecks = Field(description="Each check's state.")


class OpenApiDocument(RootModel[dict[str, JsonValue]]):
    """The OpenAPI 3.1 description of this interface (this document)."""
