"""The limits every template render keeps to (SPEC 5.3, 11): a per-render budget of time and
characters, and estimates of what an operator, a string method or a filter would build,
checked *before* it runs. Pure: no Jinja environment here (engine.rules.template_sandbox uses it).
"""

from __future__ import annotations

import functools
import inspect
import re
import string
import types
from collections.abc import Callable, ItemsView, KeysView, Mapping, ValuesView
from typing import Any

from jinja2.runtime import Undefined

#: Integers a template computes stay below this many bits (about 19,700 digits): Python
#: refuses to print more than 4,300 digits anyway, and big powers cost real CPU.
_MAX_INT_BITS = 1 << 16

#: Containers at least this long have their measured size remembered for the render, and
#: at most this many are remembered, so re-measuring a large event body is free but the
#: memo cannot grow with a loop.
_MEMO_MIN_LEN = 64
_MEMO_MAX_ENTRIES = 256


# --- limits -----------------------------------------------------------------------------


class Refused(Exception):
    """A template went past a limit or asked for something the sandbox does not allow.

    It never leaves the template modules; the render boundary (engine.rules.templates) turns it into RenderError.
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


class Budget:
    """What one render may still spend: a deadline and a number of characters.

    One is made per render call and used by that call's thread only; it is the one
    mutable object of the template modules and is reached through a context variable.
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
            raise Refused(f"rendering took longer than the time limit ({self.time_limit:g} s)")

    def check_size(self, size: int, what: str) -> None:
        if size > self.size_limit:
            raise Refused(f"{what} would exceed the size limit ({self.size_limit} characters)")

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
            raise Refused(f"the output is larger than the size limit ({self.size_limit} characters)")


def _as_int(value: Any) -> int:
    """An int argument as given, or 0 when it is not one (Python then raises its own error)."""
    return value if isinstance(value, int) else 0


def _capped_int(digits: str) -> int:
    # int() of more than 4,300 digits raises, and such a width is over any limit anyway.
    return int(digits) if len(digits) <= 18 else 10**18


def _format_estimate(fmt: str, fields: int, widths: int, nested: int, values: list[Any], budget: Budget) -> int:
    """Upper estimate of a formatted string: every field may hold the largest value."""
    largest = max((budget.size_of(v) for v in values), default=0)
    biggest_int = max((abs(v) for v in values if isinstance(v, int)), default=0) if nested else 0
    return len(fmt) + widths + fields * largest + nested * biggest_int


def operand_values(operand: Any) -> list[Any]:
    if isinstance(operand, Mapping):
        return list(operand.values())
    return list(operand) if isinstance(operand, tuple) else [operand]


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _percent_estimate(fmt: str, operand: Any, budget: Budget) -> int:
    """Estimate ``fmt % operand`` from its fields, widths and ``*`` widths taken from args."""
    fields = widths = stars = 0
    for match in _PERCENT_FIELD.finditer(fmt):
        if match.group(0) == "%%":
            continue
        fields += 1
        for part in match.groups():
            stars += part == "*"
            widths += _capped_int(part) if part and part != "*" else 0
    return _format_estimate(fmt, fields, widths, stars, operand_values(operand), budget)


def brace_estimate(fmt: str, values: list[Any], budget: Budget) -> int:
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


def method_estimate(name: str, text: str | bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
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
        raise Refused("translate() is not allowed in templates")
    return 0


# Estimates for Jinja's own filters that can grow their output far beyond their input.
# Each takes the filter's bound arguments (and may replace an iterable by a list so it can
# be measured without being consumed) and returns the largest size the result can have.
_Estimate = Callable[[dict[str, Any], Budget], int]


def _est_center(a: dict[str, Any], budget: Budget) -> int:
    return max(budget.size_of(a["value"]), _as_int(a["width"]))


def _est_indent(a: dict[str, Any], budget: Budget) -> int:
    s, width = a["s"], a["width"]
    pad = len(width) if isinstance(width, str) else _as_int(width)
    lines = s.count("\n") + 1 if isinstance(s, str) else 1
    return budget.size_of(s) + lines * pad


def _est_wordwrap(a: dict[str, Any], budget: Budget) -> int:
    s, sep = a["s"], a["wrapstring"]
    size = budget.size_of(s)
    sep_len = len(sep) if isinstance(sep, str) else len(a["environment"].newline_sequence)
    lines = size // max(_as_int(a["width"]), 1) + (s.count("\n") if isinstance(s, str) else 0) + 1
    return size + lines * sep_len


def _est_replace(a: dict[str, Any], budget: Budget) -> int:
    return _replace_estimate(str(a["s"]), str(a["old"]), str(a["new"]), a["count"])


def _est_join(a: dict[str, Any], budget: Budget) -> int:
    items = a["value"] = list(a["value"])
    return budget.size_of(items) + len(items) * len(str(a["d"]))


def _est_batch(a: dict[str, Any], budget: Budget) -> int:
    items = a["value"] = list(a["value"])
    fill = a["fill_with"]
    return budget.size_of(items) + (0 if fill is None else _as_int(a["linecount"]) * (budget.size_of(fill) + 2))


def _est_slice(a: dict[str, Any], budget: Budget) -> int:
    items = a["value"] = list(a["value"])
    return budget.size_of(items) + _as_int(a["slices"]) * (budget.size_of(a["fill_with"]) + 2)


def _est_format(a: dict[str, Any], budget: Budget) -> int:
    return _percent_estimate(str(a["value"]), a["kwargs"] or a["args"], budget)


def _est_sum(a: dict[str, Any], budget: Budget) -> int:
    start = a["start"]
    if not isinstance(start, (int, float)):
        raise Refused("sum: start must be a number (adding up lists or strings takes quadratic time)")
    return 0


FILTER_ESTIMATES: Mapping[str, _Estimate] = types.MappingProxyType(
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


def guard_filter(
    name: str, original: Callable[..., Any], estimate: _Estimate, budget: Callable[[], Budget]
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


def _int_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse ``+ * ** %`` whose result would be too large, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and ints and right > 0 and abs(left) > 1:
        if _int_bits(left) * right > _MAX_INT_BITS:
            raise Refused("the result of '**' is too large a number")
    elif operator == "*" and ints:
        if _int_bits(left) + _int_bits(right) > _MAX_INT_BITS:
            raise Refused("the result of '*' is too large a number")
    elif operator == "*":
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and isinstance(seq, (str, bytes, list, tuple)):
            budget.check_size(budget.size_of(seq) * max(times, 0), "the result of '*'")
    elif operator == "+" and isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
        budget.check_size(budget.size_of(left) + budget.size_of(right), "the result of '+'")
    elif operator == "%" and isinstance(left, (str, bytes)):
        text = left if isinstance(left, str) else left.decode("latin-1")
        budget.check_size(_percent_estimate(text, right, budget), "the result of '%'")
