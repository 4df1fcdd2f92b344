"""The commands for writing rules: check, dry-run, test, backtest, schema.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import ConfigError
from ..rules.schema import SCHEMA_KINDS
from .base import (
    EXIT_CONFIG,
    EXIT_FAILED,
    Exit,
    config_option,
    inspect_store,
    load_all,
    parse_headers,
    plural,
    print_json,
    print_problems,
    read_json,
)


@click.command()
@config_option
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings.")
def check(config_path: str | None, strict: bool) -> None:
    """Load config, rules, templates and plugins as `serve` does, and report every problem."""
    from ..hover.handshake import BUILTIN_FILE
    from ..rules.config import missing_token_files
    from ..rules.loader import rule_count

    loaded = load_all(config_path)
    warnings = [*loaded.warnings, *_shape_warnings(loaded)]
    print_problems(warnings)
    for name, path in missing_token_files(loaded.config):
        click.echo(f"note: sources.{name}.token_file: {path} does not exist yet: "
                   "`hookwise serve` makes it (a random token) when it starts", err=True)
    steps = sum(len(r.steps) for r in loaded.rules if r.file != BUILTIN_FILE)
    counts = [plural(len(loaded.config.settings.sources), "source"), rule_count(loaded.rules), plural(steps, "step")]
    if warnings:
        counts.append(plural(len(warnings), "warning"))
    click.echo(f"{loaded.config.path.name}: ok: {', '.join(counts)}")
    if strict and warnings:
        raise Exit(EXIT_FAILED)


def _shape_warnings(loaded: Any) -> list[Any]:
    """Paths the rules read that no stored event (or catalogued one) of their types has."""
    from ..rules.shapes import shape_warnings, stored_events

    store = stored_events(loaded)
    try:
        found = shape_warnings(loaded, store)
    finally:
        if store is not None:
            store.close()
    return [p.masked(loaded.masker.mask) for p in found]


@click.command("dry-run")
@config_option
@click.argument("event_file", metavar="EVENT.json", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--source", "source_name", metavar="S", help="Source the event arrives on (default: the only one configured)."
)
@click.option("--header", "headers", metavar="'K: V'", multiple=True, help="A request header; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dry_run(
    config_path: str | None, event_file: str, source_name: str | None, headers: tuple[str, ...], as_json: bool
) -> None:
    """Match and render an event with no side effects; explain every rule."""
    from ..rules.dryrun import dry_run as run
    from ..rules.dryrun import event_source, format_text

    loaded = load_all(config_path)
    body = read_json(event_file)
    result = run(loaded, body, event_source(loaded, source_name), parse_headers(headers))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(format_text(result))


@click.command("test")
@config_option
@click.argument("paths", nargs=-1, type=click.Path())
def test_cases(config_path: str | None, paths: tuple[str, ...]) -> None:
    """Run rule test cases (default: the tests/ folders beside the rule files)."""
    from ..rules.casefiles import Report, case_files, run_file

    loaded = load_all(config_path)
    report = Report()
    invalid: list[Any] = []
    for path in case_files(loaded, paths):
        try:
            results = run_file(loaded, path)
        except ConfigError as exc:
            invalid.extend(exc.problems)
            continue
        report.results.extend(results)
        for result in results:
            click.echo(f"{'PASS' if result.passed else 'FAIL'}  {result.file}: {result.name}")
            for failure in result.failures:
                click.echo(f"      {loaded.masker.mask(failure)}")
    print_problems(invalid)
    click.echo(f"{report.passed} passed, {report.failed} failed" + (f", {len(invalid)} invalid" if invalid else ""))
    if invalid:
        raise Exit(EXIT_CONFIG)
    if report.failed or not report.results:
        raise Exit(EXIT_FAILED)


@click.command()
@config_option
@click.option("--rules", "rules_path", metavar="PATH",
              help="A changed rule file or folder to try (default: the rules the config names).")
@click.option("--since", default="7d", show_default=True, metavar="WHEN",
              help="Start of the window: a duration back from now (7d, 12h) or an ISO-8601 time.")
@click.option("--until", metavar="TIME", help="End of the window (ISO-8601; default: now).")
@click.option("--source", metavar="S", help="Only events of this source.")
@click.option("--type", "type_", metavar="T", help="Only events of this type.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backtest(config_path: str | None, rules_path: str | None, since: str, until: str | None, source: str | None,
             type_: str | None, as_json: bool) -> None:
    """Run rules over stored events with no side effects: per rule, the events it would
    match against those it did match, examples of each difference, and render errors."""
    import time

    from ..ops.operations import parse_time
    from ..rules.backtest import Backtest, format_text, rules_from_path, window_start

    loaded, store = inspect_store(config_path)
    rules, masker = rules_from_path(loaded, rules_path) if rules_path else (loaded.rules, loaded.masker)
    now = time.time()
    start = window_start(since, now)
    job = Backtest(loaded, rules, store, since=start, until=parse_time(until, "--until"), source=source, type=type_,
                   masker=masker)
    progress = _progress(start, job.until or now) if sys.stderr.isatty() and not as_json else None
    report = job.run(progress)
    if progress is not None:
        click.echo("\r\033[K", nl=False, err=True)
    if as_json:
        print_json(report.json())
    else:
        click.echo(format_text(report, f"{rules_path} (changed)" if rules_path else "the rules of the config"))


def _progress(start: float, end: float) -> Callable[[int, float], None]:
    """A line on the terminal, rewritten after each page: events read, and how far into
    the window they reach."""
    span = max(end - start, 1e-9)

    def show(count: int, at: float) -> None:
        share = min(1.0, max(0.0, (at - start) / span))
        click.echo(f"\rbacktest: {count:,} events read, {share:.0%} of the window", nl=False, err=True)

    return show


@click.command()
@click.argument("kind", required=False, type=click.Choice(SCHEMA_KINDS))
@config_option
def schema(kind: str | None, config_path: str | None) -> None:
    """Print the JSON Schema of config, rule and case files (all three, or KIND)."""
    from ..rules.config import find_config, load_config
    from ..rules.schema import schemas
    from ..run.registry import Registry

    plugins: dict[str, str] = {}
    if config_path:  # plugin actions appear in the rule schema when a config names them
        plugins = dict(load_config(find_config(config_path)).settings.plugins)
    found = schemas(Registry.load(plugins))
    click.echo(json.dumps(found[kind] if kind else found, indent=2))
