"""YAML files with a position for every node, ``${VAR}`` interpolation and secrets.

A :class:`Document` holds the plain Python value of a file (dicts, lists, str, int, float,
bool, None) and the line and column of every key and value, so that any later check can
report ``FILE:LINE:COL: PATH: message``. Scalars follow YAML 1.2's core schema: only
``true``/``false`` are booleans (``yes``, ``no``, ``on`` and ``off`` stay strings) and
date-times stay strings. Duplicate keys are errors.

Interpolation runs after parsing, on scalar values only, never on keys: ``${VAR}``,
``${VAR:-default}``, ``${VAR:?message}`` and ``$$`` for a literal ``$``. Every value taken
from the environment is recorded in :attr:`Document.secrets` so it can be masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, Loc, Problem

try:  # the C composer is much faster on large rule sets
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


@dataclass(frozen=True)
class Mark:
    line: int  #: 1-based
    col: int  #: 1-based


@dataclass
class Document:
    """A parsed file: ``data``, where each node sits, and the secrets it took in."""

    file: str
    data: Any
    text: str = ""
    values: dict[Loc, Mark] = field(default_factory=dict)
    keys: dict[Loc, Mark] = field(default_factory=dict)
    spans: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)
    #: problems found while building (duplicate keys, bad ${...}); see ``collect``
    problems: list[Problem] = field(default_factory=list)

    def mark(self, loc: Loc, *, key: bool = False) -> Mark | None:
        """Where ``loc`` sits: its key when ``key`` (else its value), or its nearest known
        ancestor."""
        loc = tuple(loc)
        if key and loc in self.keys:
            return self.keys[loc]
        while loc:
            if loc in self.values:
                return self.values[loc]
            loc = loc[:-1]
        return self.values.get(())

    def locate(self, problem: Problem, *, key: bool = False) -> Problem:
        """``problem`` with this file's name, line and column filled in."""
        mark = self.mark(problem.loc, key=key)
        if mark is None or problem.line is not None:
            return replace(problem, file=self.file)
        return replace(problem, file=self.file, line=mark.line, col=mark.col)

    def source(self, loc: Loc) -> str:
        """The text of the node at ``loc`` as written in the file."""
        start, end = self.spans.get(tuple(loc), (0, len(self.text)))
        return self.text[start:end]


def load(
    path: str | Path, *, environ: Mapping[str, str] | None = None, display: str | None = None, collect: bool = False
) -> Document:
    """Read and parse ``path``. Raises :class:`ConfigError` with every problem found, or,
    when ``collect``, only for syntax errors, leaving the others in ``Document.problems``
    so that the caller can report them together with its own."""
    name = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("file not found", file=name)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(f"cannot read file: {exc}", file=name)]) from None
    return loads(text, file=name, environ=environ, collect=collect)


def loads(
    text: str, *, file: str = "<string>", environ: Mapping[str, str] | None = None, collect: bool = False
) -> Document:
    """Parse YAML ``text``; see :func:`load`."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(f"invalid YAML: {exc}", file=file)]) from None
    doc = Document(file=file, data=None, text=text)
    if len(nodes) > 1:
        raise ConfigError([Problem("a file holds one YAML document; found several", file=file)])
    builder = _Builder(doc, os.environ if environ is None else environ)
    doc.data = builder.build(nodes[0], ()) if nodes else None
    doc.problems = [doc.locate(p) for p in builder.problems]
    if doc.problems and not collect:
        raise ConfigError(doc.problems)
    return doc


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc.context}"
    if mark is None:
        return Problem(message, file=file)
    return Problem(message, file=file, line=mark.line + 1, col=mark.column + 1)


_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$|^0x[0-9a-fA-F_]+$|^0o[0-7_]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}


def plain_scalar(value: str) -> Any:
    """Resolve an unquoted scalar by YAML 1.2's core schema."""
    if _NULL.match(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT.match(value):
        return int(value.replace("_", ""), 0) if value[:2] in ("0x", "0o") else int(value.replace("_", ""))
    if _FLOAT.match(value) and any(c.isdigit() for c in value):
        return float(value.replace("_", ""))
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


class _Builder:
    """Turns composed YAML nodes into plain values, recording marks and interpolating."""

    def __init__(self, doc: Document, environ: Mapping[str, str]) -> None:
        self.doc = doc
        self.environ = environ
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.doc.values[loc] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
        self.doc.spans[loc] = (node.start_mark.index, node.end_mark.index)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]  # a SequenceNode

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in self._pairs(node, loc):
            key = self._key(key_node, loc)
            if key is None:
                continue
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                self.problems.append(Problem(f"duplicate key '{key}'", loc + (key,), line=line, col=col))
                continue
            self.doc.keys[loc + (key,)] = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.build(value_node, loc + (key,))
        return out

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> Iterable[tuple[yaml.Node, yaml.Node]]:
        """The mapping's pairs with YAML merge keys (``<<: *base``) expanded; own keys win."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        merged.extend(self._pairs(source, loc))
                    else:
                        self.problems.append(Problem("a merge key '<<' takes a mapping", loc))
            else:
                own.append((key_node, value_node))
        own_keys = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
        return [p for p in merged if p[0].value not in own_keys] + own

    def _key(self, node: yaml.Node, loc: Loc) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(Problem("a key must be a plain string", loc))
            return None
        return str(node.value)

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        # plain (None from the Python composer, '' from the C one): resolve by the core schema, then interpolate strings
        if not node.style:
            value = plain_scalar(node.value)
        else:
            value = node.value
        if isinstance(value, str) and "$" in value:
            return self._interpolate(value, loc)
        return value

    def _interpolate(self, value: str, loc: Loc) -> str:
        try:
            text, secrets = interpolate(value, self.environ)
        except InterpolationError as exc:
            self.problems.append(Problem(str(exc), loc))
            return value
        self.doc.secrets.update(secrets)
        return text


class InterpolationError(ValueError):
    """A ``${...}`` reference cannot be expanded."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` and ``$$`` in ``value``.

    Returns the text and the values that came from the environment. A ``$`` followed by
    anything else stays as it is.
    """
    out: list[str] = []
    secrets: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "$" or i + 1 >= len(value) or value[i + 1] not in "${":
            out.append(ch)
            i += 1
        elif value[i + 1] == "$":
            out.append("$")
            i += 2
        else:
            end = value.find("}", i + 2)
            if end < 0:
                raise InterpolationError(f"unclosed '${{' in {value!r}")
            text, secret = _expand(value[i + 2 : end], environ)
            out.append(text)
            if secret is not None:
                secrets.append(secret)
            i = end + 1
    return "".join(out), secrets


def _expand(expr: str, environ: Mapping[str, str]) -> tuple[str, str | None]:
    match = _NAME.match(expr)
    if match is None:
        raise InterpolationError(f"invalid variable reference '${{{expr}}}'")
    name, rest = match.group(), expr[match.end() :]
    if rest and not rest.startswith((":-", ":?")):
        raise InterpolationError(
            f"invalid variable reference '${{{expr}}}': use ${{{name}:-default}} or ${{{name}:?message}}"
        )
    found = environ.get(name)
    if rest.startswith(":-") and not found:
        return rest[2:], None
    if found is None or (rest.startswith(":?") and not found):
        message = rest[2:] if rest.startswith(":?") and rest[2:] else "is not set"
        raise InterpolationError(f"environment variable {name} {message}" if message == "is not set"
                                 else f"environment variable {name}: {message}")
    if "\n" in found or "\r" in found:
        raise InterpolationError(f"environment variable {name} contains a newline, which is refused")
    return found, found
