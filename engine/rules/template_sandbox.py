"""The sandboxed Jinja environment: an immutable sandbox whose every call, lookup, operator,
loop and literal checks the render's budget (engine.rules.template_limits), undefined values that
name what was missing, and the compile-time rewrite that lets the limits see loops,
concatenation, literals and literal text.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from difflib import get_close_matches
from typing import Any

from jinja2 import StrictUndefined, UndefinedError, nodes
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import missing, object_type_repr, pass_context
from jinja2.visitor import NodeTransformer

from .template_filters import FILTERS, now_utc
from .template_limits import (
    FILTER_ESTIMATES,
    Budget,
    brace_estimate,
    check_binop,
    guard_filter,
    method_estimate,
    operand_values,
)

# --- undefined values -------------------------------------------------------------------


class MissingValue(UndefinedError):
    """A name, attribute or item that is not there; keeps what was looked up, and in what,
    so the message can name the expression and suggest a close match."""

    def __init__(self, message: str, *, name: Any, obj: Any) -> None:
        super().__init__(message)
        self.name = name
        self.obj = obj

    def describe(self, owners: Mapping[Any, str], names: list[str]) -> str:
        if self.obj is missing:
            return _with_hint(f"undefined name {self.name!r}", self.name, names)
        owner = owners.get(self.name)
        what = owner if owner is not None else object_type_repr(self.obj)
        noun = "attribute" if isinstance(self.name, str) else "item"
        keys = [k for k in self.obj if isinstance(k, str)] if isinstance(self.obj, Mapping) else []
        return _with_hint(f"{what!r} has no {noun} {self.name!r}", self.name, keys)


def _with_hint(message: str, name: Any, candidates: list[str]) -> str:
    close = get_close_matches(str(name), candidates, n=1) if isinstance(name, str) else []
    return f"{message} (did you mean {close[0]!r}?)" if close else message


class _Undefined(StrictUndefined):
    """StrictUndefined whose plain "not there" failures raise :class:`MissingValue`.

    Refusals by the sandbox (which carry a hint and SecurityError) are left as they are.
    """

    __slots__ = ()

    def __init__(
        self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = UndefinedError
    ) -> None:
        if hint is None and exc is UndefinedError:
            exc = functools.partial(MissingValue, name=name, obj=obj)
        super().__init__(hint, obj, name, exc)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Count every piece of output, literal text included, against the render's budget."""
    context.environment.budget().produce(value)  # type: ignore[attr-defined]
    return value


# --- the environment --------------------------------------------------------------------


class Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus the limit checks; configured once, never changed after.

    The ``hookwise_*`` methods are reached only from code the compile-time guard inserts.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, time_limit: float, size_limit: int, clock: Callable[[], float]) -> None:
        super().__init__(
            undefined=_Undefined,
            autoescape=False,
            # No compile-time constant folding: it would run filters and operators with
            # no budget in place (``'a'|center(10**9)`` at load time).
            optimized=False,
            finalize=_finalize,
            # Text renders as written: a block scalar's final newline is kept.
            keep_trailing_newline=True,
        )
        self.time_limit = time_limit
        self.size_limit = size_limit
        self.clock = clock
        self._budget: ContextVar[Budget] = ContextVar(f"hookwise-template-budget-{id(self)}")
        # Only what is safe and useful: no lipsum, cycler, joiner or namespace.
        self.globals.clear()
        self.globals.update(range=safe_range, dict=dict, now=now_utc)
        self.filters.update(FILTERS)
        for name, estimate in FILTER_ESTIMATES.items():
            self.filters[name] = guard_filter(name, self.filters[name], estimate, self.budget)

    def budget(self) -> Budget:
        budget = self._budget.get(None)
        if budget is None:
            raise RuntimeError("template code ran outside Templates rendering")
        return budget

    def start(self) -> Any:
        """Begin a render on this thread; returns the token for :meth:`stop`."""
        return self._budget.set(Budget(self.time_limit, self.size_limit, self.clock))

    def stop(self, token: Any) -> None:
        self._budget.reset(token)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget().check_time()
        if isinstance(obj, Undefined):
            obj._fail_with_undefined_error()  # report the missing name, not its attribute
        # Data keys win over methods: ``event.items`` is the body's "items", not dict.items.
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget().check_time()
        if isinstance(obj, Undefined):
            obj._fail_with_undefined_error()
        return super().getitem(obj, argument)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = self.budget()
        budget.check_time()
        if isinstance(obj, types.BuiltinMethodType) and isinstance(getattr(obj, "__self__", None), (str, bytes)):
            args = self._check_method(budget, obj, args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        budget.check_size(budget.size_of(result), "the result of a call")
        return result

    @staticmethod
    def _check_method(
        budget: Budget, method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        text, name = method.__self__, method.__name__
        if name == "join" and args:
            items = list(args[0])  # a generator must be measured without being used up
            args = (items, *args[1:])
            estimate = budget.size_of(items) + len(text) * len(items)
        else:
            estimate = method_estimate(name, text, args, kwargs)
        budget.check_size(estimate, f"the result of {name}()")
        return args

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget()
        budget.check_time()
        check_binop(budget, operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        @functools.wraps(formatter)
        def guarded(*args: Any, **kwargs: Any) -> str:
            values = operand_values(args[0]) if is_map and args else [*args, *kwargs.values()]
            budget = self.budget()
            budget.check_size(brace_estimate(fmt, values, budget), f"the result of {value.__name__}()")
            return formatter(*args, **kwargs)

        return guarded

    def hookwise_iter(self, iterable: Any) -> Iterator[Any]:
        """Every ``{% for %}`` iterates through this: one deadline check per item."""
        budget = self.budget()
        for item in iterable:
            budget.check_time()
            yield item

    def hookwise_concat(self, *parts: Any) -> str:
        """``a ~ b``: sized before the text is built."""
        budget = self.budget()
        budget.check_size(sum(budget.size_of(part) for part in parts), "the result of '~'")
        return "".join(map(str, parts))

    def hookwise_literal(self, value: Any) -> Any:
        """A list, tuple or dict literal with computed items: sized when built, so nested
        literals of shared values cannot multiply past the limit unseen."""
        budget = self.budget()
        budget.check_size(budget.size_of(value), "a literal")
        return value


# --- compile time -----------------------------------------------------------------------


def _env_call(name: str, *args: nodes.Node, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None, lineno=lineno)


class Guard(NodeTransformer):
    """Rewrites a parsed template so the limits can see loops, concatenation, literals
    and literal text (see the module docstring)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _env_call("hookwise_iter", node.iter, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _env_call("hookwise_concat", *node.nodes, lineno=node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        # As a Const, literal text goes through finalize and so counts towards the size.
        node.nodes = [
            nodes.Const(child.data, lineno=child.lineno) if isinstance(child, nodes.TemplateData) else child
            for child in node.nodes
        ]
        return node

    def _literal(self, node: nodes.List | nodes.Tuple | nodes.Dict, items: Sequence[nodes.Node]) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load" or all(isinstance(i, nodes.Const) for i in items):
            return node
        return _env_call("hookwise_literal", node, lineno=node.lineno)

    def visit_List(self, node: nodes.List) -> nodes.Node:
        return self._literal(node, node.items)

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._literal(node, node.items)

    def visit_Dict(self, node: nodes.Dict) -> nodes.Node:
        return self._literal(node, [part for pair in node.items for part in (pair.key, pair.value)])
