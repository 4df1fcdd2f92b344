"""The ``hookwise`` command: the one place where errors become messages and exit codes.

Exit codes (SPEC 2): 0 success; 1 failures found; 2 usage error; 69 store unreachable;
78 invalid config; 70 an internal error (a bug: its traceback goes to the debug log).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from ..errors import ConfigError, HookwiseError, StoreError, UsageError
from .authoring import backtest, check, dry_run, schema, test_cases
from .base import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_SOFTWARE, EXIT_STORE, EXIT_USAGE, Exit, print_problems
from .hover import hover_group
from .inspect import events, explain, replay, runs
from .plugin import plugin
from .serve import send, serve
from .store import queue, store

log = logging.getLogger("hookwise.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Log debug messages, tracebacks included, to stderr.")
@click.version_option(package_name="hookwise")
def cli(debug: bool) -> None:
    """hookwise: receive webhooks, match them against YAML rules, run workflows."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for command in (check, dry_run, test_cases, backtest, schema, serve, send, events, explain, replay, runs, store, queue,
                hover_group, plugin):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the CLI; turn every error into one line and an exit code."""
    sys.exit(run(argv))


#: What click 8.2+ raises for a group called without a command (8.1 printed the help itself).
_NO_ARGS: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def run(argv: Sequence[str] | None = None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="hookwise", standalone_mode=False)
    except Exit as exc:
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except _NO_ARGS as exc:  # `hookwise`, `hookwise runs`: asking what there is
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        return EXIT_OK
    except click.Abort:
        click.echo("aborted", err=True)
        return EXIT_FAILED
    except click.UsageError as exc:
        hint = f" (see 'hookwise {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.info_name != "hookwise" else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except ConfigError as exc:
        print_problems(exc.problems)
        return EXIT_CONFIG
    except UsageError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_USAGE
    except StoreError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_STORE
    except HookwiseError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback in the debug log
        log.debug("internal error", exc_info=True)
        click.echo(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        return EXIT_SOFTWARE
    return EXIT_OK
