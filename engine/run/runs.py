"""Run and Step values, their statuses, and the retry policy with its reading of
``Retry-After`` (pure: no I/O)."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from ..events import Event
from ..rules.config import RetryPolicy


class RunStatus(str, enum.Enum):
    #: its steps are running or waiting to
    ACTIVE = "active"
    #: every step succeeded, was skipped, or failed with continue_on_error
    SUCCEEDED = "succeeded"
    #: a step used up its attempts; `runs retry` resumes it from that step
    DEAD = "dead"
    #: an earlier run of its order_by key has not finished (SPEC 14)
    WAITING = "waiting"
    #: put aside by `runs skip` (it was dead or waiting): the next run of its key may start
    SKIPPED = "skipped"


class StepStatus(str, enum.Enum):
    #: an earlier step has not finished
    WAITING = "waiting"
    #: due at `due_at`
    READY = "ready"
    #: claimed by a worker until `lease_until`
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    #: its `if` was false
    SKIPPED = "skipped"
    #: used up its attempts but the step has continue_on_error
    FAILED = "failed"
    #: used up its attempts; the run is dead
    DEAD = "dead"


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1): exponential from
    ``policy.backoff``, capped at ``policy.max_backoff``, with "equal jitter" (half fixed,
    half random) so retries of many steps spread out yet never come back at once."""
    base: float = min(policy.max_backoff, policy.backoff * (2 ** (attempt - 1)))  # int ** int is typed Any
    return base / 2 + (rng or random).uniform(0, base / 2)


def retry_delay(policy: RetryPolicy, attempt: int, after: float | None = None) -> float | None:
    """When to try again after failed attempt ``attempt``: None when the attempts are used
    up; else the action's own ``after`` (a Retry-After) if given, bounded by
    ``max_backoff``, or the backoff."""
    if attempt >= policy.attempts:
        return None
    if after is not None:
        return max(0.0, min(after, policy.max_backoff))
    return backoff(policy, attempt)


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date; a
    date in the past is 0), or None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class StepTask:
    """A claimed step, with what is needed to render and run it."""

    run_id: str
    index: int
    step_id: str
    action: str
    attempt: int
    rule: str
    rule_version: str
    event: Event
    #: outputs of the run's earlier steps, by step id
    outputs: dict[str, Any] = field(default_factory=dict)
    #: params set by `runs retry --set`, replacing rendered ones
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}-{self.index}"


@dataclass(frozen=True)
class StepResult:
    """What happened when a step ran."""

    task: StepTask
    #: "succeeded", "skipped", "failed", or "deferred" (not started: due again in
    #: ``retry_in`` seconds, the attempt not spent)
    outcome: str
    output: Any = None
    error: str | None = None
    #: for a failure: seconds until the next attempt, or None when there is none; for a
    #: deferral: seconds until the step is due again
    retry_in: float | None = None
    params: Any = None
    started_at: float = 0.0
    finished_at: float = 0.0
    #: the next step's delay, so the store can make it due
    next_delay: float = 0.0
    #: whether a failure with no retry left moves on (continue_on_error)
    continue_on_error: bool = False
    #: how many steps the rule has (0: not known); after its last step a run has no
    #: next step to look for
    step_count: int = 0
    #: deferred for a free slot of this host: the worker may keep the step until one frees
    waits_for: str | None = None
    #: the run's rule has order_by: when the run ends, the next run of its key starts
    ordered: bool = False

    @property
    def last_step(self) -> bool:
        return 0 < self.step_count <= self.task.index + 1
