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

import time
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from markupsafe import Markup

from engine.errors import ConfigError, Loc, Problem, RenderError, format_loc

from .template_limits import Refused
from .template_sandbox import Guard, MissingValue, Sandbox

__all__ = ["Compiled", "Expression", "Templates", "is_template"]

#: The local a single-expression template assigns its value to.
_RESULT = "hookwise_result"


_TEMPLATE_MARKERS = ("{{", "{%", "{#")


def is_template(s: str) -> bool:
    """Whether ``s`` holds Jinja markup and is therefore compiled."""
    return any(marker in s for marker in _TEMPLATE_MARKERS)


# --- compiled values--------------------------------------------------------------------


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
        self._env = Sandbox(time_limit=time_limit, size_limit=size_limit, clock=clock)

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
            raise Refused(refused)
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
        tree = Guard().visit(tree)
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
        if isinstance(exc, Refused):
            message = str(exc)
        elif isinstance(exc, MissingValue):
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

    def __init__(self, env: Sandbox) -> None:
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
