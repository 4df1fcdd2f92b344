"""The sandboxed template environment: compile at load, render keeping types.

Every string in an action's parameters may be a Jinja template, and ``if:`` is a Jinja
expression (SPEC 5.2, 5.3). :class:`Templates` owns one immutable sandboxed environment;
:meth:`Templates.compile_value` and :meth:`Templates.compile_expression` compile at load
time (every syntax problem becomes a :class:`~engine.errors.ConfigError`), and the
:class:`Compiled` and :class:`Expression` values they return render any number of times,
from any number of threads, raising :class:`~engine.errors.RenderError` on every failure.

Limits (SPEC 5.3, 11). Jinja renders in pure Python on the caller's thread, so the time
and size limits are enforced cooperatively, by checks at every place a template can spend
time or build a value:

* at compile time, every ``{% for %}`` iterable is wrapped so each item checks the
  deadline, ``~`` concatenation and list/dict/tuple literals are wrapped so their size is
  checked, and literal text goes through ``finalize`` like ``{{ }}`` output does;
* the sandbox checks the deadline on every call, attribute and item lookup, and estimates
  the result of ``+ * ** %``, ``str.format`` and the string methods and filters that can
  grow text (``center``, ``replace``, ``join``, ``batch`` ...) *before* running them;
* every piece of output (``{{ }}`` values and literal text, including text captured by
  ``{% set %}`` blocks and macros, so nested captures count more than once) and every
  native result counts towards the size limit.

Together these keep every value a template builds within the size limit, so no single
step can run away; what remains is a few super-linear operations on values within the
limit (sorting, comparing), which the deadline bounds at the next check.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import inspect
import json
import re
import string
import time
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, Sequence, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from difflib import get_close_matches
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import missing, object_type_repr, pass_context
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from engine.errors import ConfigError, Loc, Problem, RenderError, format_loc

__all__ = ["Compiled", "Expression", "Templates", "is_template"]

#: The local a single-expression template assigns its value to.
_RESULT = "hookwise_result"

#: Integers a template computes stay below this many bits (about 19,700 digits): Python
#: refuses to print more than 4,300 digits anyway, and big powers cost real CPU.
_MAX_INT_BITS = 1 << 16

#: Containers at least this long have their measured size remembered for the render, and
#: at most this many are remembered, so re-measuring a large event body is free but the
#: memo cannot grow with a loop.
_MEMO_MIN_LEN = 64
_MEMO_MAX_ENTRIES = 256

_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(s: str) -> bool:
    """Whether ``s`` holds Jinja markup and is therefore compiled."""
    return any(marker in s for marker in _TEMPLATE_MARKERS)


# --- limits -----------------------------------------------------------------------------


class _Refused(Exception):
    """A template went past a limit or asked for something the sandbox does not allow.

    Private: it never leaves this module; the render boundary turns it into RenderError.
    """


def _measure(value: Any, limit: int, *, strict: bool) -> int:
    """Estimate how many characters ``value`` renders to, stopping once past ``limit``.

    Iterative so deep values cannot exhaust the stack. Shared references count every time
    they appear, as they would when printed. With ``strict``, an undefined value anywhere
    raises its error (a list holding one would otherwise print as ``[Undefined]``).
    """
    if isinstance(value, (str, bytes)):
        return len(value)
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        kind = type(item)  # the plain JSON types first, without the ABC checks below
        if kind is str:
            total += len(item) + 2
        elif kind is dict:
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(part for pair in item.items() for part in pair)
        elif kind is list:
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        elif kind is int:
            total += item.bit_length() // 3 + 1
        elif kind is float or kind is bool or item is None:
            total += 8
        elif isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, Undefined):
            if strict:
                item._fail_with_undefined_error()
            total += 9
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(part for pair in item.items() for part in pair)
        elif isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            total += item.bit_length() // 3 + 1
        else:
            total += 8  # None, bools, floats, dates, and objects that print as a short repr
    return total


class _Budget:
    """What one render may still spend: a deadline and a number of characters.

    One is made per render call and used by that call's thread only; it is the one
    mutable object in this module and is reached through a context variable.
    """

    __slots__ = ("clock", "deadline", "time_limit", "size_limit", "produced", "_sizes")

    def __init__(self, time_limit: float, size_limit: int, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.deadline = clock() + time_limit
        self.time_limit = time_limit
        self.size_limit = size_limit
        self.produced = 0
        self._sizes: dict[int, tuple[Any, int]] = {}

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            raise _Refused(f"rendering took longer than the time limit ({self.time_limit:g} s)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.size_limit:
            raise _Refused(f"{what} would exceed the size limit ({self.size_limit} characters)")

    def size_of(self, value: Any) -> int:
        """The measured size of ``value``, remembered for large containers.

        Remembering by ``id`` is sound because the memo keeps the value alive and the
        immutable sandbox cannot change it.
        """
        if not isinstance(value, (list, tuple, dict)) or len(value) < _MEMO_MIN_LEN:
            return _measure(value, self.size_limit, strict=False)
        hit = self._sizes.get(id(value))
        if hit is not None:
            return hit[1]
        size = _measure(value, self.size_limit, strict=False)
        if len(self._sizes) < _MEMO_MAX_ENTRIES:
            self._sizes[id(value)] = (value, size)
        return size

    def produce(self, value: Any) -> None:
        """Count ``value`` as output; fails on an undefined value anywhere inside it."""
        self.check_time()
        self.produced += _measure(value, self.size_limit - self.produced, strict=True)
        if self.produced > self.size_limit:
            raise _Refused(f"the output is larger than the size limit ({self.size_limit} characters)")


def _as_int(value: Any) -> int:
    """An int argument as given, or 0 when it is not one (Python then raises its own error)."""
    return value if isinstance(value, int) else 0


def _capped_int(digits: str) -> int:
    # int() of more than 4,300 digits raises, and such a width is over any limit anyway.
    return int(digits) if len(digits) <= 18 else 10**18


def _format_estimate(fmt: str, fields: int, widths: int, nested: int, values: list[Any], budget: _Budget) -> int:
    """Upper estimate of a formatted string: every field may hold the largest value."""
    largest = max((budget.size_of(v) for v in values), default=0)
    biggest_int = max((abs(v) for v in values if isinstance(v, int)), default=0) if nested else 0
    return len(fmt) + widths + fields * largest + nested * biggest_int


def _operand_values(operand: Any) -> list[Any]:
    if isinstance(operand, Mapping):
        return list(operand.values())
    return list(operand) if isinstance(operand, tuple) else [operand]


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _percent_estimate(fmt: str, operand: Any, budget: _Budget) -> int:
    """Estimate ``fmt % operand`` from its fields, widths and ``*`` widths taken from args."""
    fields = widths = stars = 0
    for match in _PERCENT_FIELD.finditer(fmt):
        if match.group(0) == "%%":
            continue
        fields += 1
        for part in match.groups():
            stars += part == "*"
            widths += _capped_int(part) if part and part != "*" else 0
    return _format_estimate(fmt, fields, widths, stars, _operand_values(operand), budget)


def _brace_estimate(fmt: str, values: list[Any], budget: _Budget) -> int:
    """Estimate ``fmt.format(...)``; a ``{}`` inside a spec takes its width from an arg."""
    fields = widths = nested = 0
    for _, name, spec, _ in string.Formatter().parse(fmt):
        if name is None:
            continue
        fields += 1
        nested += (spec or "").count("{")
        widths += sum(_capped_int(d) for d in re.findall(r"\d+", spec or ""))
    return _format_estimate(fmt, fields, widths, nested, values, budget)


def _replace_estimate(text: Any, old: Any, new: Any, count: Any) -> int:
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = 0) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _method_estimate(name: str, text: str | bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """Estimate the result of a str/bytes method that can grow text; 0 for the others."""
    if name in _PADDING_METHODS:
        return max(len(text), _as_int(_arg(args, kwargs, 0, "width")))
    if name == "expandtabs":
        tab = "\t" if isinstance(text, str) else b"\t"
        return len(text) + text.count(tab) * _as_int(_arg(args, kwargs, 0, "tabsize", 8))  # type: ignore[arg-type]
    if name == "replace" and len(args) >= 2:
        return _replace_estimate(text, args[0], args[1], _arg(args, kwargs, 2, "count", -1))
    if name == "translate":
        # A table can map each character to a long string; estimating it is not worth it.
        raise _Refused("translate() is not allowed in templates")
    return 0


# Estimates for Jinja's own filters that can grow their output far beyond their input.
# Each takes the filter's bound arguments (and may replace an iterable by a list so it can
# be measured without being consumed) and returns the largest size the result can have.
_Estimate = Callable[[dict[str, Any], _Budget], int]


def _est_center(a: dict[str, Any], budget: _Budget) -> int:
    return max(budget.size_of(a["value"]), _as_int(a["width"]))


def _est_indent(a: dict[str, Any], budget: _Budget) -> int:
    s, width = a["s"], a["width"]
    pad = len(width) if isinstance(width, str) else _as_int(width)
    lines = s.count("\n") + 1 if isinstance(s, str) else 1
    return budget.size_of(s) + lines * pad


def _est_wordwrap(a: dict[str, Any], budget: _Budget) -> int:
    s, sep = a["s"], a["wrapstring"]
    size = budget.size_of(s)
    sep_len = len(sep) if isinstance(sep, str) else len(a["environment"].newline_sequence)
    lines = size // max(_as_int(a["width"]), 1) + (s.count("\n") if isinstance(s, str) else 0) + 1
    return size + lines * sep_len


def _est_replace(a: dict[str, Any], budget: _Budget) -> int:
    return _replace_estimate(str(a["s"]), str(a["old"]), str(a["new"]), a["count"])


def _est_join(a: dict[str, Any], budget: _Budget) -> int:
    items = a["value"] = list(a["value"])
    return budget.size_of(items) + len(items) * len(str(a["d"]))


def _est_batch(a: dict[str, Any], budget: _Budget) -> int:
    items = a["value"] = list(a["value"])
    fill = a["fill_with"]
    return budget.size_of(items) + (0 if fill is None else _as_int(a["linecount"]) * (budget.size_of(fill) + 2))


def _est_slice(a: dict[str, Any], budget: _Budget) -> int:
    items = a["value"] = list(a["value"])
    return budget.size_of(items) + _as_int(a["slices"]) * (budget.size_of(a["fill_with"]) + 2)


def _est_format(a: dict[str, Any], budget: _Budget) -> int:
    return _percent_estimate(str(a["value"]), a["kwargs"] or a["args"], budget)


def _est_sum(a: dict[str, Any], budget: _Budget) -> int:
    start = a["start"]
    if not isinstance(start, (int, float)):
        raise _Refused("sum: start must be a number (adding up lists or strings takes quadratic time)")
    return 0


_FILTER_ESTIMATES: Mapping[str, _Estimate] = types.MappingProxyType(
    {
        "center": _est_center,
        "indent": _est_indent,
        "wordwrap": _est_wordwrap,
        "replace": _est_replace,
        "join": _est_join,
        "batch": _est_batch,
        "slice": _est_slice,
        "format": _est_format,
        "sum": _est_sum,
    }
)


def _guard_filter(
    name: str, original: Callable[..., Any], estimate: _Estimate, budget: Callable[[], _Budget]
) -> Callable[..., Any]:
    """Wrap one of Jinja's filters so its result size is estimated before it runs.

    Jinja's filters with an async twin are a dispatcher around a sync function; this
    environment is never async, so the sync function is wrapped directly, and its
    signature is the one Jinja calls. ``functools.wraps`` copies its ``pass_*`` marker, so
    Jinja passes it the same leading context/environment argument.
    """
    original = inspect.unwrap(original)
    signature = inspect.signature(original)

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        current = budget()
        current.check_size(estimate(bound.arguments, current), f"the result of |{name}")
        return original(*bound.args, **bound.kwargs)

    return guarded


# --- undefined values -------------------------------------------------------------------


class _Missing(UndefinedError):
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
    """StrictUndefined whose plain "not there" failures raise :class:`_Missing`.

    Refusals by the sandbox (which carry a hint and SecurityError) are left as they are.
    """

    __slots__ = ()

    def __init__(
        self, hint: str | None = None, obj: Any = missing, name: str | None = None, exc: Any = UndefinedError
    ) -> None:
        if hint is None and exc is UndefinedError:
            exc = functools.partial(_Missing, name=name, obj=obj)
        super().__init__(hint, obj, name, exc)


# --- filters and globals ----------------------------------------------------------------


def _to_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"{what} expects text, got {type(value).__name__} (use |tojson first for a list or object)")


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, range, KeysView, ValuesView, ItemsView, Iterator)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _filter_tojson(value: Any, indent: int | None = None) -> str:
    """JSON text, keys in their order, non-ASCII kept (Jinja's own escapes for HTML)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _filter_b64encode(value: Any) -> str:
    return base64.b64encode(_to_bytes(value, "b64encode")).decode("ascii")


def _filter_b64decode(value: Any) -> str:
    return base64.b64decode(_to_bytes(value, "b64decode"), validate=True).decode("utf-8")


def _filter_sha256(value: Any) -> str:
    return hashlib.sha256(_to_bytes(value, "sha256")).hexdigest()


def _filter_hmac_sha256(value: Any, key: Any) -> str:
    return hmac.new(_to_bytes(key, "hmac_sha256 key"), _to_bytes(value, "hmac_sha256"), hashlib.sha256).hexdigest()


def _filter_path_segment(value: Any) -> str:
    """``value`` as one segment of a URL path: everything but letters, digits and ``-._~``
    percent-encoded, ``/``, ``?``, ``#`` and ``%`` included (Jinja's ``urlencode`` leaves
    ``/`` alone). ``""``, ``.`` and ``..`` are refused: they are no segment of their own
    and would move the path elsewhere."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"path_segment expects text or a number, got {type(value).__name__}")
    text = str(value)
    if text in ("", ".", ".."):
        raise ValueError(f"path_segment: {text!r} cannot be a path segment")
    return quote(text, safe="")


def _filter_to_datetime(value: Any) -> datetime:
    """An aware UTC datetime from an ISO-8601 string (``Z`` allowed; naive means UTC) or
    from seconds since the epoch."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())
    else:
        raise TypeError(f"to_datetime expects an ISO-8601 string or epoch seconds, got {type(value).__name__}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# C strftime pads to any width given (``%1000000000Y``), so widths are refused.
_STRFTIME_WIDTH = re.compile(r"%[-_0^#]*\d")


def _filter_strftime(value: Any, fmt: str) -> str:
    if _STRFTIME_WIDTH.search(fmt):
        raise _Refused("strftime: field widths are not supported")
    moment = value if isinstance(value, datetime) else _filter_to_datetime(value)
    return moment.strftime(fmt)


def _now() -> datetime:
    return datetime.now(UTC)


_HOOKWISE_FILTERS: Mapping[str, Callable[..., Any]] = types.MappingProxyType(
    {
        "tojson": _filter_tojson,
        "b64encode": _filter_b64encode,
        "b64decode": _filter_b64decode,
        "sha256": _filter_sha256,
        "hmac_sha256": _filter_hmac_sha256,
        "path_segment": _filter_path_segment,
        "to_datetime": _filter_to_datetime,
        "strftime": _filter_strftime,
    }
)


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    """Count every piece of output, literal text included, against the render's budget."""
    context.environment.budget().produce(value)  # type: ignore[attr-defined]
    return value


# --- the environment --------------------------------------------------------------------


class _Sandbox(ImmutableSandboxedEnvironment):
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
        self._budget: ContextVar[_Budget] = ContextVar(f"hookwise-template-budget-{id(self)}")
        # Only what is safe and useful: no lipsum, cycler, joiner or namespace.
        self.globals.clear()
        self.globals.update(range=safe_range, dict=dict, now=_now)
        self.filters.update(_HOOKWISE_FILTERS)
        for name, estimate in _FILTER_ESTIMATES.items():
            self.filters[name] = _guard_filter(name, self.filters[name], estimate, self.budget)

    def budget(self) -> _Budget:
        budget = self._budget.get(None)
        if budget is None:
            raise RuntimeError("template code ran outside Templates rendering")
        return budget

    def start(self) -> Any:
        """Begin a render on this thread; returns the token for :meth:`stop`."""
        return self._budget.set(_Budget(self.time_limit, self.size_limit, self.clock))

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
        budget: _Budget, method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[Any, ...]:
        text, name = method.__self__, method.__name__
        if name == "join" and args:
            items = list(args[0])  # a generator must be measured without being used up
            args = (items, *args[1:])
            estimate = budget.size_of(items) + len(text) * len(items)
        else:
            estimate = _method_estimate(name, text, args, kwargs)
        budget.check_size(estimate, f"the result of {name}()")
        return args

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = self.budget()
        budget.check_time()
        _check_binop(budget, operator, left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        @functools.wraps(formatter)
        def guarded(*args: Any, **kwargs: Any) -> str:
            values = _operand_values(args[0]) if is_map and args else [*args, *kwargs.values()]
            budget = self.budget()
            budget.check_size(_brace_estimate(fmt, values, budget), f"the result of {value.__name__}()")
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


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_binop(budget: _Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse ``+ * ** %`` whose result would be too large, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if _int_bits(left) * right > _MAX_INT_BITS:
            raise _Refused("the result of '**' is too large a number")
    elif operator == "*" and ints:
        if _int_bits(left) + _int_bits(right) > _MAX_INT_BITS:
            raise _Refused("the result of '*' is too large a number")
    elif operator == "*":
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and isinstance(seq, (str, bytes, list, tuple)):
            budget.check_size(budget.size_of(seq) * max(times, 0), "the result of '*'")
    elif operator == "+" and isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
        budget.check_size(budget.size_of(left) + budget.size_of(right), "the result of '+'")
    elif operator == "%" and isinstance(left, (str, bytes)):
        text = left if isinstance(left, str) else left.decode("latin-1")
        budget.check_size(_percent_estimate(text, right, budget), "the result of '%'")


# --- compile time -----------------------------------------------------------------------


def _env_call(name: str, *args: nodes.Node, lineno: int) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name, lineno=lineno), list(args), [], None, None, lineno=lineno)


class _Guard(NodeTransformer):
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


_LOADING_TAGS: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Extends, "extends"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from ... import"),
)


def _loading_problem(tree: nodes.Template) -> str | None:
    """Templates are compiled from strings and there is no loader: say so at load time."""
    for kind, tag in _LOADING_TAGS:
        found = tree.find(kind)
        if found is not None:
            return f"'{{% {tag} %}}' is not allowed, templates cannot load other templates (line {found.lineno})"
    return None


def _path_text(node: nodes.Node) -> str | None:
    """``event.job.id`` for the node that reads it, or None when it is not a plain path."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        parent = _path_text(node.node)
        return f"{parent}.{node.attr}" if parent else None
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        parent = _path_text(node.node)
        return f"{parent}[{node.arg.value!r}]" if parent else None
    return None


def _owners(tree: nodes.Node) -> Mapping[Any, str]:
    """For each attribute or item name the template looks up, the one path it is looked up
    on (names looked up on several paths are left out: the message could not tell which)."""
    seen: dict[Any, set[str | None]] = {}
    found = (tree, *tree.find_all((nodes.Getattr, nodes.Getitem)))
    for node in (n for n in found if isinstance(n, (nodes.Getattr, nodes.Getitem))):
        if isinstance(node, nodes.Getattr):
            key: Any = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            key = node.arg.value
        else:
            continue
        seen.setdefault(key, set()).add(_path_text(node.node))
    return types.MappingProxyType({k: str(p.pop()) for k, p in seen.items() if len(p) == 1 and None not in p})


def _single_expression(source: str, tree: nodes.Template) -> nodes.Expr | None:
    """The expression when ``source`` is exactly one ``{{ expression }}``, else None."""
    if not (source.startswith("{{") and source.endswith("}}")) or len(tree.body) != 1:
        return None
    output = tree.body[0]
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return None
    expr = output.nodes[0]
    return None if isinstance(expr, nodes.TemplateData) else expr


def _syntax_message(exc: Exception) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"template syntax error: {exc.message} (line {exc.lineno})"
    if isinstance(exc, RecursionError):
        return "template error: the template is nested too deeply"
    return f"template error: {exc}"


# --- compiled values --------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    """One compiled template string: ``native`` ones assign their value to ``_RESULT``."""

    program: Template = field(repr=False)
    native: bool
    multiline: bool
    owners: Mapping[Any, str] = field(repr=False)
    #: a text template's source before its first brace: what every rendering starts with
    prefix: str = ""


@dataclass(frozen=True)
class _Const:
    value: Any


@dataclass(frozen=True)
class _Map:
    items: tuple[tuple[Any, _Node], ...]


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


_Node = _Leaf | _Const | _Map | _Seq


def _plain(value: Any) -> Any:
    """A native result as a plain value: lazy sequences (``map``/``select`` output, ranges,
    dict views) become lists, tuples lists, Markup str."""
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, (tuple, range, KeysView, ValuesView, ItemsView, Iterator)):
        return list(value)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _template_line(exc: BaseException) -> int | None:
    """The template line an error was raised on (Jinja rewrites tracebacks to point there)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Templates:
    """One immutable sandboxed Jinja environment (ImmutableSandboxedEnvironment,
    StrictUndefined, autoescape off, no loader) and the limits every render keeps to.

    Build one at start-up and share it: compiling and rendering are safe from any thread.
    ``clock`` (seconds) measures the time limit: tests give one they move.
    """

    def __init__(
        self, *, time_limit: float = 1.0, size_limit: int = 1_000_000, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_limit <= 0 or size_limit <= 0:
            raise ValueError("time_limit and size_limit must be positive")
        self._env = _Sandbox(time_limit=time_limit, size_limit=size_limit, clock=clock)

    def compile_value(self, value: Any) -> Compiled:
        """Walk a params value (dicts, lists, scalars) and compile every string holding
        ``{{``, ``{%`` or ``{#`` (dict keys are never templates).

        Raises ConfigError with every syntax problem found, each ``Problem.loc`` relative
        to ``value``. Non-template values pass through unchanged.
        """
        problems: list[Problem] = []
        paths: list[Loc] = []
        root = self._plan(value, (), problems, paths)
        if problems:
            raise ConfigError(problems)
        return Compiled(root=root, paths=tuple(paths), templates=self)

    def compile_expression(self, source: str) -> Expression:
        """Compile an ``if:`` expression: bare Jinja, no braces. Raises ConfigError."""
        try:
            parser = Parser(self._env, source, state="variable")
            expr = parser.parse_expression()
            if not parser.stream.eos:
                raise TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno)
            leaf = self._build(expr, source)
        except Exception as exc:
            message = _syntax_message(exc)
            if "{{" in source:
                message += "; write the expression without {{ }}"
            raise ConfigError([Problem(message)]) from exc
        return Expression(source=source, leaf=leaf, templates=self)

    # -- compiling --

    def _plan(self, value: Any, loc: Loc, problems: list[Problem], paths: list[Loc]) -> _Node:
        if isinstance(value, Mapping):
            return _Map(tuple((k, self._plan(v, (*loc, k), problems, paths)) for k, v in value.items()))
        if isinstance(value, list):
            return _Seq(tuple(self._plan(v, (*loc, i), problems, paths) for i, v in enumerate(value)))
        if not (isinstance(value, str) and is_template(value)):
            return _Const(value)
        try:
            leaf = self._compile_text(value)
        except Exception as exc:  # noqa: BLE001 - a template that cannot compile is a config problem
            problems.append(Problem(_syntax_message(exc), loc))
            return _Const(value)
        paths.append(loc)
        return leaf

    def _compile_text(self, source: str) -> _Leaf:
        tree = self._env.parse(source)
        refused = _loading_problem(tree)
        if refused is not None:
            raise _Refused(refused)
        expr = _single_expression(source, tree)
        if expr is not None:
            return self._build(expr, source)
        owners = _owners(tree)
        prefix = source.partition("{")[0]
        return _Leaf(self._finish(tree), native=False, multiline="\n" in source, owners=owners, prefix=prefix)

    def _build(self, expr: nodes.Expr, source: str) -> _Leaf:
        owners = _owners(expr)
        tree = nodes.Template([nodes.Assign(nodes.Name(_RESULT, "store"), expr, lineno=1)], lineno=1)
        return _Leaf(self._finish(tree), native=True, multiline="\n" in source, owners=owners)

    def _finish(self, tree: nodes.Template) -> Template:
        tree = _Guard().visit(tree)
        tree.set_environment(self._env)
        return self._env.from_string(tree)

    # -- rendering --

    def _session(self) -> _Session:
        return _Session(self._env)

    def _render_leaf(self, leaf: _Leaf, context: Mapping[str, Any]) -> Any:
        """Render one leaf with the current budget; any failure becomes RenderError without
        a location (the caller adds it)."""
        try:
            if leaf.native:
                return self._native(leaf.program, context)
            return self._text(leaf.program, context)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # every failure, whatever raised it, is the step's
            raise RenderError(self._describe(exc, leaf, context)) from exc

    def _native(self, program: Template, context: Mapping[str, Any]) -> Any:
        # new_context copies the variables (with the globals): no copy of our own first.
        ctx = program.new_context(context if isinstance(context, dict) else dict(context))
        for _ in program.root_render_func(ctx):
            pass
        value = _plain(ctx.vars[_RESULT])
        self._env.budget().produce(value)
        return value

    def _text(self, program: Template, context: Mapping[str, Any]) -> str:
        budget, size, chunks = self._env.budget(), 0, []
        for chunk in program.generate(context):
            size += len(chunk)
            budget.check_size(size, "the output")
            chunks.append(chunk)
        return "".join(chunks)

    def _describe(self, exc: BaseException, leaf: _Leaf, context: Mapping[str, Any]) -> str:
        if isinstance(exc, _Refused):
            message = str(exc)
        elif isinstance(exc, _Missing):
            message = exc.describe(leaf.owners, [*context, *self._env.globals])
        elif isinstance(exc, SecurityError):
            message = f"not allowed in templates: {exc}"
        elif isinstance(exc, TemplateError):
            message = exc.message or type(exc).__name__
        elif isinstance(exc, RecursionError):
            message = "recursion too deep"
        else:
            message = f"{type(exc).__name__}: {exc}"
        # Only text templates render through Jinja's traceback rewriting, which maps
        # frames to template lines; a native one is a single expression anyway.
        line = _template_line(exc) if leaf.multiline and not leaf.native else None
        return f"{message} (line {line})" if line is not None else message


class _Session:
    """The span of one render: installs a fresh budget for this thread, then removes it."""

    def __init__(self, env: _Sandbox) -> None:
        self._env = env
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = self._env.start()

    def __exit__(self, *exc_info: object) -> None:
        self._env.stop(self._token)


@dataclass(frozen=True)
class Compiled:
    """A params value with its templates compiled; render it per step attempt."""

    root: _Node = field(repr=False)
    paths: tuple[Loc, ...]
    templates: Templates = field(repr=False, compare=False)

    @property
    def is_template(self) -> bool:
        """True when any leaf is a template."""
        return bool(self.paths)

    def template_paths(self) -> list[Loc]:
        """Locations of the templated leaves (their types are only known after rendering)."""
        return list(self.paths)

    def fixed_start(self, key: str) -> tuple[str, bool]:
        """What the value at top-level ``key`` starts with, whatever the context, and
        whether that is all of it: a constant string is known whole, a text template up to
        its first brace; ("", False) for anything else."""
        if isinstance(self.root, _Map):
            for name, node in self.root.items:
                if name != key:
                    continue
                if isinstance(node, _Const) and isinstance(node.value, str):
                    return node.value, True
                if isinstance(node, _Leaf):
                    return node.prefix, False
        return "", False

    def render(self, context: Mapping[str, Any]) -> Any:
        """The value with every template rendered, in fresh containers.

        A string that is exactly one ``{{ expression }}`` renders to the expression's value
        (number, bool, list, dict, None); other strings render to text. All leaves share one
        time and size budget. Raises RenderError naming the location of the failing leaf.
        """
        with self.templates._session():
            return self._render(self.root, context, ())

    def _render(self, node: _Node, context: Mapping[str, Any], loc: Loc) -> Any:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Map):
            return {k: self._render(child, context, (*loc, k)) for k, child in node.items}
        if isinstance(node, _Seq):
            return [self._render(child, context, (*loc, i)) for i, child in enumerate(node.items)]
        try:
            return self.templates._render_leaf(node, context)
        except RenderError as exc:
            where = format_loc(loc)
            raise RenderError(f"{where}: {exc.message}" if where else exc.message) from exc.__cause__


@dataclass(frozen=True)
class Expression:
    """A compiled ``if:`` expression."""

    source: str
    leaf: _Leaf = field(repr=False)
    templates: Templates = field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The expression's value (lazy sequences as lists). Raises RenderError."""
        with self.templates._session():
            return self.templates._render_leaf(self.leaf, context)

    def truthy(self, context: Mapping[str, Any]) -> bool:
        """Whether the value is true; an undefined value is an error, not False."""
        return bool(self.evaluate(context))
