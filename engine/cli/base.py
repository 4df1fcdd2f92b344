"""What every command shares: exit codes, the -c option, loading the config and rules, opening
the store (closed when the command ends), reading files, printing tables and JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from ..errors import UsageError


class _Closable(Protocol):
    def close(self) -> None: ...


StoreT = TypeVar("StoreT", bound=_Closable)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_SOFTWARE, EXIT_CONFIG = 0, 1, 2, 69, 70, 78


class Exit(Exception):
    """Leave the command with this exit code (its output is already printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-c", "--config", "config_path", metavar="FILE",
        help="Config file (default: $HOOKWISE_CONFIG, ./hookwise.yaml, /etc/hookwise/config.yaml).",
    )(func)


def load_all(config_path: str | None) -> Any:
    from ..rules.config import find_config
    from ..rules.loader import load

    return load(find_config(config_path))


def print_problems(problems: Sequence[Any]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def store_of(config_path: str | None) -> Any:
    """The store named by the config (the commands that read or change it work whether or
    not the daemon runs)."""
    from ..rules.config import find_config, load_config
    from ..store import open_store

    return closed_at_end(open_store(load_config(find_config(config_path)).store_url()))


def duration(text: str, option: str) -> float:
    from ..units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def inspect_store(config_path: str | None) -> tuple[Any, Any]:
    """The loaded config and rules, and the store they name."""
    from ..store import open_store

    loaded = load_all(config_path)
    return loaded, closed_at_end(open_store(loaded.config.store_url()))


def closed_at_end(store: StoreT) -> StoreT:
    """``store``, closed when the command ends, however it ends: click closes the command's
    context after it returns or raises."""
    return click.get_current_context().with_resource(closing(store))


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def read_bytes(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {value!r}: expected 'Name: value'")
        out[name.strip().lower()] = rest.strip()
    return out
