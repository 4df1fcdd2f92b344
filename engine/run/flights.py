"""A claimed step's life in the worker: :class:`InFlight`, from its claim until its result is
recorded, and :class:`Busy`, how many such steps take room in the claim budget."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .runs import StepTask


@dataclass(eq=False)  # compared (and hashed) by identity: a set of them is kept
class InFlight:
    task: StepTask
    #: the step's time limit, in seconds, counted from ``started``
    timeout: float
    #: when a step thread began the step; None while it waits in the queue
    started: float | None = None
    finished: bool = False
    #: its params as rendered and validated, kept while it waits for a slot of its host:
    #: started again, it does not render them again
    prepared: tuple[Any, BaseModel] | None = None
    #: it has waited for a slot of its host already: when it must wait again, it waits first
    waited: bool = False
    #: the host whose freed slot it was started for, until it has run
    bound_for: str | None = None

    @property
    def deadline(self) -> float | None:
        return None if self.started is None else self.started + self.timeout


class Busy:
    """Steps submitted and not finished (queued, running, waiting for a slot, abandoned):
    the worker claims no more than its budget leaves room for. Shared by every thread."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._count += n

    def room(self, budget: int) -> int:
        """How many more fit in ``budget``."""
        with self._lock:
            return max(0, budget - self._count)
