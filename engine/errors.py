"""The exception tree of hookwise.

    HookwiseError                 base of every error hookwise raises on purpose
    ├── ConfigError               a config, rule or case file is invalid (carries every Problem)
    ├── RenderError               a template failed while rendering (undefined name, limit, ...)
    ├── ParamsError               rendered params do not fit the action's Params model
    ├── PluginError               a plugin cannot be imported or is not an Action
    ├── UsageError                a command was called wrongly
    └── StoreError                the store cannot be reached or refused an operation
        └── Unstorable            the store refuses the data itself: trying again cannot help

Control-flow signals raised by actions are not errors and live beside the tree:

    Retry(after=...)              a temporary failure: run the step again later
    Fail(message)                 a permanent failure: the step's attempts end here
    Defer(after=..., reason=...)  the step may not start now: hand it back, due later,
                                  without spending an attempt (delivery control)

Each class's docstring is its default message. Foreign exceptions are translated once, at
the boundary that meets them, with ``raise XError(...) from exc``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

Loc = tuple[str | int, ...]


def format_loc(loc: Sequence[str | int]) -> str:
    """Render a location tuple as a path: ``("rules", 0, "actions", 1, "http")`` ->
    ``rules[0].actions[1].http``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, at a place in it.

    ``loc`` is the path of keys and list indexes from the file's root; ``file``, ``line``
    and ``col`` (1-based) are filled in by the loader that knows where ``loc`` sits.
    """

    message: str
    loc: Loc = ()
    file: str | None = None
    line: int | None = None
    col: int | None = None
    warning: bool = False

    def under(self, prefix: Sequence[str | int]) -> Problem:
        """The same problem, its location moved below ``prefix``."""
        return replace(self, loc=tuple(prefix) + self.loc)

    def masked(self, mask: Callable[[str], str]) -> Problem:
        """The same problem, its message passed through ``mask`` (a masker of secrets: a
        refused value may be one)."""
        return replace(self, message=mask(self.message))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}:{self.col or 1}"
            where += ": "
        path = format_loc(self.loc)
        kind = "warning: " if self.warning else ""
        return f"{where}{path + ': ' if path else ''}{kind}{self.message}"


class HookwiseError(Exception):
    """hookwise failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(HookwiseError):
    """The configuration is invalid."""

    def __init__(self, problems: Iterable[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or None)

    def under(self, prefix: Sequence[str | int]) -> ConfigError:
        return ConfigError(p.under(prefix) for p in self.problems)


class RenderError(HookwiseError):
    """A template failed to render."""


class ParamsError(HookwiseError):
    """The rendered parameters do not fit the action."""


class PluginError(HookwiseError):
    """A plugin action could not be loaded."""


class UsageError(HookwiseError):
    """The command was used wrongly."""


class StoreError(HookwiseError):
    """The store cannot be reached."""


class Unstorable(StoreError):
    """The store cannot hold this data (whatever its state): another try cannot help."""


class Retry(Exception):
    """Raised by an action for a temporary failure: the step runs again ``after`` seconds
    from now (or by its retry policy when ``after`` is None)."""

    def __init__(self, message: str = "temporary failure", *, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class Defer(Exception):
    """Raised before anything was sent, when a step may not start now (its destination's
    concurrency, rate or circuit breaker says wait): the step goes back to the store, due
    ``after`` seconds from now, and the attempt it was claimed for is not counted."""

    def __init__(self, reason: str = "deferred", *, after: float, host: str | None = None) -> None:
        super().__init__(reason)
        self.after = max(0.0, after)
        #: set when the step waits for a free slot of this host (not a time): it may be
        #: started again as soon as a call to the host ends
        self.host = host


class Fail(Exception):
    """Raised by an action for a permanent failure: no further attempt is made."""

    def __init__(self, message: str = "permanent failure") -> None:
        super().__init__(message)
