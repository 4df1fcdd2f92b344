"""The store's contract: the values that go in and out of it, and its methods by role
(re-exported by :mod:`engine.store`, where callers import them from)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Event
from ..ids import new_id
from ..rules.stateful import Gate, TimerOp
from ..run.runs import StepResult, StepTask


@dataclass(frozen=True)
class Incoming:
    """An event to store: received, or emitted by a step (``depth`` > 0)."""

    source: str
    type: str
    #: the body as JSON text
    body: str
    headers: dict[str, str]
    query: dict[str, str]
    received_at: float
    delivery_id: str | None = None
    #: how long ``delivery_id`` is remembered, in seconds
    dedupe_window: float = 7 * 86400.0
    id: str = field(default_factory=new_id)
    depth: int = 0
    #: not to be matched before this time (an ``emit`` with a delay)
    available_at: float | None = None


@dataclass(frozen=True)
class Stored:
    event_id: str
    #: the delivery id (or event id) was already stored; nothing new was stored
    duplicate: bool = False


@dataclass(frozen=True)
class NewRun:
    """A run to create for a matched (event, rule) pair, with its steps."""

    id: str
    rule: str
    version: str
    rule_file: str
    rule_text: str
    #: (index, step id, action) of every step
    steps: Sequence[tuple[int, str, str]]
    first_delay: float = 0.0
    #: a shadow rule's run: its steps are rendered and recorded, no action runs
    shadow: bool = False
    #: a throttle or threshold the run must pass, checked where it is created (SPEC 14)
    gate: Gate | None = None
    #: the run's order_by key: runs of one key start in arrival order, one at a time
    order_key: str | None = None


@dataclass(frozen=True)
class Matched:
    """The outcome of matching one claimed event."""

    event_id: str
    explain: list[dict[str, Any]]
    runs: Sequence[NewRun] = ()
    #: the event itself, so that first steps can be claimed as their runs are created
    event: Event | None = None
    #: absence timers the event starts or cancels, applied as its matches are recorded
    timers: Sequence[TimerOp] = ()


@dataclass(frozen=True)
class Unrecorded:
    """A step result the store could not hold (text it cannot encode, a value or a write
    it refuses), and why. The others of its batch are recorded all the same."""

    result: StepResult
    reason: str


#: The statuses of a work queue item, in the order it passes through them.
QUEUE_STATUSES = ("waiting", "claimed", "done", "dead")


@dataclass(frozen=True)
class QueueItem:
    """An item of a work queue (the ``requeue`` action's)."""

    id: str
    queue: str
    key: str
    #: one of QUEUE_STATUSES
    status: str
    data: Any
    attempts: int
    max_attempts: int
    #: waiting: not before; claimed: the lease's end
    available_at: float
    error: str | None
    created_at: float
    updated_at: float
    #: the ``queue.exhausted`` event stored when this change made the item dead
    exhausted_event: str | None = None


@dataclass(frozen=True)
class HoverTokens:
    access_token: str
    refresh_token: str
    expires_at: float


#: A stored event as a backtest reads it: (seq, event, explain record or None while pending).
Scanned = tuple[int, Event, Any]

#: Matches claimed events to rules (the worker's, called by :meth:`WorkerStore.match_events`).
Matcher = Callable[[list[Event]], list[Matched]]


# The store contract, by role: each caller types its store as the role it uses (the receiver
# an IngestStore, the API and the UI an OperatorStore, ...). Every backend is all of them
# (Store), and every method is one transaction, safe to call from several threads.


class IngestStore(Protocol):
    """What the receiver needs: events in, and whether they can go in now."""

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers."""

    def probe_write(self) -> None:
        """Raise :class:`StoreError` unless a write can be committed now, as an event's is
        (a row of the delivery ids rewritten, the commit waiting for the disk)."""

    def put_events(self, items: Sequence[Incoming]) -> list[Stored]:
        """Store events and their delivery ids in one transaction, in order; a delivery id
        already stored for the source (and not expired) makes that item a duplicate."""


class QueueStore(Protocol):
    """The work queues of the ``requeue`` action, and the commands and API that serve them."""

    def requeue(
        self, queue: str, key: str, data: Any, *, delay: float, max_attempts: int, request_id: str
    ) -> QueueItem:
        """Put an item in ``queue``, or update the open one with the same ``key`` (its
        attempts rise). Past ``max_attempts`` the item is dead and a ``queue.exhausted``
        event is stored in the same transaction. A repeat of the same ``request_id``
        (a retried step) changes nothing."""

    def claim_queue_item(self, queue: str, lease: float) -> QueueItem | None: ...

    def finish_queue_item(self, item_id: str) -> QueueItem | None:
        """Mark a claimed item done; None when it is not claimed."""

    def fail_queue_item(self, item_id: str, retry_in: float, error: str | None) -> QueueItem | None:
        """A claimed item back to waiting in ``retry_in`` seconds (its attempts rise), or
        dead past its ``max_attempts``; None when it is not claimed."""

    def get_queue_item(self, item_id: str) -> QueueItem | None: ...

    def list_queue_items(self, queue: str, status: str | None = None, limit: int = 100) -> list[QueueItem]: ...

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """{queue: {status: count}}."""


class HoverStore(Protocol):
    """The Hover account: OAuth tokens and their refresh lock, logins, webhooks."""

    def hover_tokens(self, account: str = "default") -> HoverTokens | None: ...

    def save_hover_tokens(self, tokens: HoverTokens, account: str = "default") -> None: ...

    def lock_hover_account(self, holder: str, ttl: float, account: str = "default") -> bool:
        """Take the account's refresh lock for ``ttl`` seconds (or keep it, for its
        holder); False while another holder has it."""

    def unlock_hover_account(self, holder: str, account: str = "default") -> None: ...

    def save_hover_webhook(
        self, webhook_id: str, *, source: str | None = None, url: str | None = None,
        verified_at: float | None = None, last_error: str | None = None, verify_method: str | None = None,
    ) -> None:
        """Record a webhook, or what is new about it: ``None`` keeps what was recorded
        (``last_error`` excepted: it is replaced, so a success clears it)."""

    def hover_webhooks(self) -> list[dict[str, Any]]: ...

    def begin_hover_login(self, state: str, ttl: float, account: str = "default") -> None:
        """Remember ``state``, an OAuth login started for ``account``, for ``ttl`` seconds."""

    def take_hover_login(self, state: str) -> str | None:
        """Use ``state`` once: its account when it was begun, unexpired and not taken
        before; else None (login CSRF: only a state hookwise issued, recently, once)."""

    def finish_hover_login(self, state: str, error: str | None = None) -> None:
        """Note how a taken login ended: done, or failed with ``error``."""

    def hover_login(self, state: str) -> dict[str, Any] | None:
        """``{status: pending|taken|done|failed, error, expired}`` of a login, or None."""

    def wake_steps(self, action: str, error_prefix: str) -> int:
        """Make the ready steps of ``action`` whose last error starts with ``error_prefix``
        due now (what they waited for has happened); how many."""


class WorkerStore(IngestStore, QueueStore, HoverStore, Protocol):
    """What the worker needs: events to match, runs to create, steps to run and record; and
    what its steps keep in the store (an ``emit`` step's events, ``requeue``'s queue items,
    the Hover account of the ``hover`` action)."""

    def claim_events(self, limit: int, lease: float) -> list[Event]:
        """Take up to ``limit`` events due for matching, hidden from other claims for
        ``lease`` seconds (after which, unrecorded, they come back)."""

    def record_matches(self, matches: Sequence[Matched], *, claim: int = 0, lease: float = 0.0) -> list[StepTask]:
        """Store explain records and create runs (exactly once per event and rule) with
        their first step due; up to ``claim`` first steps due now are claimed at once (for
        ``lease`` seconds) and returned, saving a claim's round trip."""

    def match_events(
        self, limit: int, match: Matcher, *, event_lease: float, claim: int = 0, lease: float = 0.0,
        serial: bool = False,
    ) -> tuple[int, list[StepTask]]:
        """Take up to ``limit`` due events, ``match`` them and :meth:`record_matches`
        (``claim`` and ``lease`` as there), in one transaction; ``serial`` (the rule set
        keeps state: arrival order and counts must hold across workers): one worker at a
        time. Returns how many events were matched and the first steps claimed. An
        exception from ``match`` leaves the events to a later claim."""

    def fire_timers(self, limit: int = 100) -> int:
        """Fire up to ``limit`` due absence timers: each becomes a ``rule.absence`` event,
        stored in the transaction that marks the timer fired, on exactly one worker.
        Returns how many fired."""

    def claim_steps(self, limit: int, lease: float) -> list[StepTask]:
        """Take up to ``limit`` due steps (ready, or running with an expired lease), each
        with its rule, its event and the outputs of the steps before it."""

    def record_steps(self, results: Sequence[StepResult]) -> list[Unrecorded]:
        """Record step outcomes, advance or finish their runs; results of claims that
        were lost to another worker are ignored. A ``deferred`` result makes its step ready
        again ``retry_in`` seconds from now and gives back the attempt it was claimed for.
        A result the store cannot hold fails alone: the others are recorded, and it comes
        back, with the reason, its step left as it was (the caller records the attempt as
        failed). Raises :class:`StoreError` when the store cannot record anything now."""

    def extend_leases(self, tasks: Sequence[StepTask], lease: float) -> None:
        """Keep the claims of steps that are still running for ``lease`` more seconds."""

    def next_due(self) -> float | None:
        """The earliest time an event, a step or an absence timer becomes due, or None."""

    def rule_text(self, version: str) -> tuple[str, str, str] | None:
        """(name, file, text) of a rule version that created runs."""


class InspectionStore(Protocol):
    """Reading what happened, and the repairs a person asks for (replay, retry)."""

    def get_event(self, event_id: str) -> dict[str, Any] | None: ...

    def list_events(
        self, limit: int = 50, *, source: str | None = None, type: str | None = None, status: str | None = None,
        since: float | None = None, until: float | None = None, cursor: int | None = None,
    ) -> list[dict[str, Any]]:
        """Events newest first, each with ``runs``, the count of runs it produced;
        ``cursor`` is the ``seq`` of the last event of the page before."""

    def replay_event(self, event_id: str, rules: Sequence[str] | None = None) -> str | None:
        """Store a copy of an event to be matched again (for ``rules`` only, when given);
        its id, or None when there is no such event."""

    def retry_run(self, run_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Resume a dead run from its dead step (attempts start again), with ``overrides``
        (``{"param.path": value}``) replacing rendered params; None unless the run is dead."""

    def skip_run(self, run_id: str) -> dict[str, Any] | None:
        """Put a dead or waiting run aside (status ``skipped``), so that the next run of its
        order_by key may start; the run, or None unless it was dead or waiting."""

    def rule_counts(self) -> dict[str, dict[str, int]]:
        """{rule: {run status: count}}."""

    def rule_state(self, rule: str, limit: int = 50) -> dict[str, Any]:
        """What a stateful rule keeps: ``throttled`` keys, ``counters``, ``timers`` and
        ``ordered`` (its unfinished runs per key)."""

    def event_timers(self, event_id: str) -> list[dict[str, Any]]:
        """The absence timers an event started or ended."""

    def run_waiting_for(self, run_id: str) -> dict[str, Any] | None:
        """For a run of an order_by rule: ``{key, run_id, status}`` of the run at the head
        of its key (the one it waits for), or None for other runs."""

    def runs_of_event(self, event_id: str) -> list[dict[str, Any]]: ...

    def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    def list_runs(
        self, status: str | None = None, limit: int = 50, rule: str | None = None, shadow: bool | None = None
    ) -> list[dict[str, Any]]:
        """Runs, the latest changed first; ``shadow`` true or false keeps only shadow runs
        or only live ones."""

    def steps_of_run(self, run_id: str) -> list[dict[str, Any]]: ...

    def events_per_minute(self, since: float) -> list[tuple[str, int, int]]:
        """(source, minute, count) of the events received since ``since``, where minute is
        the unix time divided by 60, rounded down. Reads an index of the window alone."""

    def run_status_counts(self) -> dict[str, int]:
        """{run status: count}."""

    def retrying_steps(self, limit: int = 10) -> list[dict[str, Any]]:
        """Steps due for another attempt after a failed one, with their run's rule and
        event and the last error, soonest due first."""


class BacktestStore(Protocol):
    """What trying rules against stored events needs: a backtest's pages of events, and the
    bodies lint learns the paths of events from."""

    def scan_events(
        self, *, since: float, until: float | None = None, source: str | None = None, type: str | None = None,
        after: int = 0, limit: int = 1000,
    ) -> list[Scanned]:
        """Events received in [since, until) in the order they were stored, up to
        ``limit`` after the one whose ``seq`` is ``after``: (seq, event, explain record or
        None while pending) each. Pages for a backtest."""

    def sample_bodies(self, source: str, type: str, limit: int = 100) -> list[Any]:
        """The bodies of the latest ``limit`` events of ``source`` and ``type``."""


class RetentionStore(Protocol):
    """What retention needs: old records deleted, a batch at a time."""

    def prune(self, before: float, batch: int = 500) -> dict[str, int]:
        """Delete one batch of succeeded runs and of matched events without runs older than
        ``before``, and of expired delivery ids; dead and active runs are kept. Ended rule
        state goes too (throttles and counted events past their window, finished timers and
        order entries older than ``before``). The counts deleted, by kind."""


class OperatorStore(InspectionStore, BacktestStore, QueueStore, HoverStore, Protocol):
    """What a person's tools see (the API, the web UI, the commands): the records, backtests,
    the work queues, the Hover account."""


class Store(WorkerStore, OperatorStore, RetentionStore, Protocol):
    """The whole store: every role, and its life cycle."""

    def migrate(self) -> None:
        """Create or upgrade the schema."""

    def close(self) -> None: ...
