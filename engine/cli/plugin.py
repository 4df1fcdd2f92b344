"""The commands for writing plugin actions: plugin new.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def plugin() -> None:
    """Plugin actions."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "where", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to write the package's folder.")
def plugin_new(name: str, where: str) -> None:
    """Write a working plugin package for action NAME: pyproject with the hookwise.actions
    entry point, the action with its Params, tests, an example config with rule cases."""
    from ..run.plugin_new import write

    root = write(name, Path(where))
    click.echo(f"wrote {root}: next, `pip install -e {root}` and `python -m pytest {root / 'tests'}`")
