"""What a database brings to the store core (:mod:`engine.store.core`): connections and
transactions (``BEGIN IMMEDIATE`` on SQLite, row locks on PostgreSQL), the time every
``{now}`` is judged by, wake-ups for other processes, and the few operations whose shape
truly differs: storing a batch of new events fast, and claiming steps with their context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from .contract import Incoming, Stored
from .rows import Row

Params = Mapping[str, Any]


class Tx(Protocol):
    """Statements by name in one connection (a transaction, or a read on its own)."""

    def all(self, name: str, params: Params) -> list[Row]:
        """Run ``name``; its rows."""

    def count(self, name: str, params: Params) -> int:
        """Run ``name``; how many rows it changed."""

    def many(self, name: str, params: Sequence[Params]) -> None:
        """Run ``name`` once for each of ``params``, in order (one round trip)."""

    def each(self, name: str, params: Sequence[Params]) -> list[list[Row]]:
        """Run ``name`` once for each of ``params``, in order; the rows of each."""

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: an exception inside rolls back its statements alone."""


TxT = TypeVar("TxT", bound=Tx)


class Backend(Protocol[TxT]):
    """What a database brings to the core."""

    #: Whether a claim should look for due rows with a read first: where a write
    #: transaction that finds nothing costs a lock others wait for (SQLite's one writer).
    look_before_claim: bool

    def now(self) -> float | None:
        """The time ``{now}`` stands for, or None for the database's own clock."""

    def transaction(self, *, relaxed: bool = False) -> AbstractContextManager[TxT]:
        """A write transaction. ``relaxed`` (the worker's bookkeeping: claims, leases, runs
        created, outcomes) may commit without waiting for the disk, as at-least-once
        allows; everything a sender or a person was told waits for it."""

    def read(self) -> AbstractContextManager[TxT]:
        """A connection for reading, outside any transaction."""

    def notify(self, db: TxT) -> None:
        """Wake other processes waiting for events, on commit (where the backend can)."""

    def put_new_events(self, db: TxT, items: Sequence[Incoming], now: float | None) -> list[Stored] | None:
        """The fast way to store a batch whose delivery ids are all new; None (having
        changed nothing) when there is none or it does not apply."""

    def claim_steps(self, db: TxT, params: Params) -> list[tuple[Row, dict[str, str | None]]]:
        """Claim due steps (``claim_steps``): each row with the rule and event of its run
        (``step_contexts``' columns), and the JSON outputs of its run's succeeded steps before it."""

    def migrate(self) -> None: ...

    def close(self) -> None: ...
