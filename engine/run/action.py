"""The contract every action implements.

An action is a class with a ``name``, a ``Params`` model and one ``run`` method;
engine.run.registry finds them (built-ins, entry points, plugins). :class:`Actions` holds the
instances one loaded config's steps use, and closes them when that config is retired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from ..events import Event

if TYPE_CHECKING:
    from ..rules.templates import Compiled


@dataclass(frozen=True)
class Context:
    """What an action knows about the step it runs: the event, where it is in its run, and
    a logger. ``idempotency_key`` is stable across retries and restarts of the step."""

    event: Event
    run_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    logger: logging.Logger | logging.LoggerAdapter[Any]
    rule: str = ""  #: the rule's name
    #: the step's time limit in seconds: an action bounds its own waits by it
    timeout: float = 30.0
    #: stores a follow-up event: ``emit(type, data, source, delay) -> event id``
    #: (set by the worker; None where nothing can be stored)
    emit: Callable[[str, Any, str, float], str] | None = None
    #: the store, for the built-in actions that keep state in it (requeue, hover);
    #: plugins should not depend on it
    store: Any = None
    #: the process's Hover API client (``engine.hover.client.HoverClient``), for the hover action
    hover: Any = None
    #: the process's delivery control (``engine.run.delivery.Delivery``), for the http action
    delivery: Any = None
    #: whether a text holds a secret of the config: the http action treats a header whose
    #: value does as a credential (None: no secrets known)
    secret: Callable[[str], bool] | None = None
    #: a copy of a JSON-like value with the config's secrets masked (``****``): what an
    #: action stores goes through it, as outputs and emitted events do
    mask: Callable[[Any], Any] = lambda value: value


class Action:
    """Base of every action, built-in or plugin.

    Subclasses set ``name`` (``[a-z][a-z0-9_]*``, the key rules use) and ``Params`` (a
    pydantic model; rendered params are validated against it before each run) and
    override :meth:`run`. One instance serves many steps, possibly from several threads at
    once: keep per-step state in locals, not on ``self``.

    An instance is made, with the loaded settings, the first time a step of a loaded
    config uses the action, and serves that config's steps until the config is retired (a
    reload swapped it out, or the process stops); then, once none of its steps is running,
    :meth:`close` is called. Override :meth:`close` to release what the instance holds
    (connections, sessions, files).
    """

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    def __init__(self, settings: Any = None) -> None:
        #: The loaded settings (``engine.rules.config``), or None when run without a config.
        self.settings = settings

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        """Perform the action for one attempt of a step and return its output (a JSON-able
        dict, ``steps.<id>`` to later steps) or None. Called in a worker thread; may be
        called again for the same step (same ``ctx.idempotency_key``) after a failure.

        Raise :class:`engine.Retry` for a temporary failure, :class:`engine.Fail` for a
        permanent one; any other exception counts as temporary."""
        raise NotImplementedError(
            f"{type(self).__name__}.run() must be implemented: "
            "it performs the action and returns its output as a JSON-able dict"
        )

    @classmethod
    def destination(cls, params: Compiled) -> str | None:
        """The destination whose delivery slots (``ctx.delivery``) a step with these params
        will ask for, when the params, compiled but not yet rendered, tell it; None (the
        default) when they do not. The worker holds a step whose destination has no free
        slot without rendering it. Built-in actions only: a plugin leaves it alone."""
        return None

    def close(self) -> None:
        """Release what this instance holds. Called once, when no step uses it any more and
        none will (see the class docstring); the instance is not used afterwards. The
        default does nothing."""


class Actions:
    """The action instances of one loaded config: each made on first use and shared by
    that config's steps, all closed together once the config is retired and no step is
    using one. Safe to use from several threads."""

    def __init__(self, registry: Mapping[str, type[Action]], settings: Any = None) -> None:
        self._registry = registry
        self._settings = settings
        self._made: dict[str, Action] = {}
        self._in_use = 0
        self._retired = False
        self._lock = threading.Lock()

    @contextmanager
    def use(self, name: str) -> Iterator[Action]:
        """The instance of action ``name``, kept open until the ``with`` block ends. (On a
        retired set it is made anew, and closed when the block ends.)"""
        with self._lock:
            action = self._made.get(name)
            if action is None:
                action = self._made[name] = self._registry[name](self._settings)
            self._in_use += 1
        try:
            yield action
        finally:
            with self._lock:
                self._in_use -= 1
                idle = self._take_if_idle()
            _close_all(idle)

    def retire(self) -> None:
        """No more steps start on this config: close the instances as soon as none is in
        use (at once when none is)."""
        with self._lock:
            self._retired = True
            idle = self._take_if_idle()
        _close_all(idle)

    def _take_if_idle(self) -> list[Action]:
        if not self._retired or self._in_use:
            return []
        made, self._made = list(self._made.values()), {}
        return made


def _close_all(actions: Iterable[Action]) -> None:
    for action in actions:
        try:
            action.close()
        except Exception:  # a plugin's failure to clean up must not stop the others' (or the caller)
            logging.getLogger("hookwise.action").exception("closing %s failed", type(action).__name__)
