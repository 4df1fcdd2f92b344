"""The ``hookwise`` command: the one place where errors become messages and exit codes.

Exit codes (SPEC 2): 0 success; 1 failures found; 2 usage error; 69 store unreachable;
78 invalid config; 70 an internal error (a bug: its traceback goes to the debug log).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from .errors import ConfigError, HookwiseError, ParamsError, StoreError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_SOFTWARE, EXIT_CONFIG = 0, 1, 2, 69, 70, 78

log = logging.getLogger("hookwise.cli")


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


def _load(config_path: str | None) -> Any:
    from .config import find_config
    from .loader import load

    return load(find_config(config_path))


def _print_problems(problems: Sequence[Any]) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Log debug messages, tracebacks included, to stderr.")
@click.version_option(package_name="hookwise")
def cli(debug: bool) -> None:
    """hookwise: receive webhooks, match them against YAML rules, run workflows."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@config_option
@click.option("--strict", is_flag=True, help="Exit 1 when there are warnings.")
def check(config_path: str | None, strict: bool) -> None:
    """Load config, rules, templates and plugins as `serve` does, and report every problem."""
    from .config import missing_token_files
    from .handshake import BUILTIN_FILE
    from .loader import rule_count

    loaded = _load(config_path)
    _print_problems(loaded.warnings)
    for name, path in missing_token_files(loaded.config):
        click.echo(f"note: sources.{name}.token_file: {path} does not exist yet: "
                   "`hookwise serve` makes it (a random token) when it starts", err=True)
    steps = sum(len(r.steps) for r in loaded.rules if r.file != BUILTIN_FILE)
    counts = [_plural(len(loaded.config.settings.sources), "source"), rule_count(loaded.rules), _plural(steps, "step")]
    if loaded.warnings:
        counts.append(_plural(len(loaded.warnings), "warning"))
    click.echo(f"{loaded.config.path.name}: ok: {', '.join(counts)}")
    if strict and loaded.warnings:
        raise Exit(EXIT_FAILED)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@cli.command("dry-run")
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
    from .dryrun import dry_run as run
    from .dryrun import event_source, format_text

    loaded = _load(config_path)
    body = _read_json(event_file)
    result = run(loaded, body, event_source(loaded, source_name), _parse_headers(headers))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(format_text(result))


@cli.command("test")
@config_option
@click.argument("paths", nargs=-1, type=click.Path())
def test_cases(config_path: str | None, paths: tuple[str, ...]) -> None:
    """Run rule test cases (default: the tests/ folders beside the rule files)."""
    from .casefiles import Report, case_files, run_file

    loaded = _load(config_path)
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
    _print_problems(invalid)
    click.echo(f"{report.passed} passed, {report.failed} failed" + (f", {len(invalid)} invalid" if invalid else ""))
    if invalid:
        raise Exit(EXIT_CONFIG)
    if report.failed or not report.results:
        raise Exit(EXIT_FAILED)


@cli.command()
@click.argument("kind", required=False, type=click.Choice(["config", "rules", "cases"]))
@config_option
def schema(kind: str | None, config_path: str | None) -> None:
    """Print the JSON Schema of config, rule and case files (all three, or KIND)."""
    from .action import Registry
    from .config import find_config, load_config
    from .schema import schemas

    plugins: dict[str, str] = {}
    if config_path:  # plugin actions appear in the rule schema when a config names them
        plugins = dict(load_config(find_config(config_path)).settings.plugins)
    found = schemas(Registry.load(plugins))
    click.echo(json.dumps(found[kind] if kind else found, indent=2))


@cli.command()
@config_option
@click.option("--host", metavar="H", help="Address to listen on (default: server.host).")
@click.option("--port", metavar="P", type=click.IntRange(0, 65535), help="Port to listen on (default: server.port).")
@click.option("--role", type=click.Choice(["all", "receiver", "worker"]), default="all", show_default=True,
              help="Run the receiver, the worker, or both.")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default=None,
    help="Log format (default: text on a terminal, else json)."
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option("--watch", is_flag=True, help="Reload when the config or a rule file changes.")
def serve(
    config_path: str | None, host: str | None, port: int | None, role: str, log_format: str | None, log_level: str,
    watch: bool
) -> None:
    """Run the daemon: receive webhooks, match rules, run workflows."""
    from .config import find_config
    from .daemon import Options
    from .daemon import serve as run_daemon
    from .logs import setup_logging

    setup_logging(log_format, log_level)
    run_daemon(Options(config_path=find_config(config_path), host=host, port=port, role=role, watch=watch))


@cli.command()
@config_option
@click.option("--source", "source_name", metavar="S", help="The source to send as (default: the only one configured).")
@click.argument("event_file", metavar="EVENT.json", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--url", metavar="URL",
              help="The daemon's base URL (http://HOST:PORT: /hooks/S is added) or the endpoint's full URL "
                   "(default: http://server.host:server.port).")
@click.option("--header", "headers", metavar="'K: V'", multiple=True, help="An extra request header; repeatable.")
def send(
    config_path: str | None, source_name: str | None, event_file: str, url: str | None, headers: tuple[str, ...]
) -> None:
    """Sign an event as its source expects and POST it to a running daemon."""
    from .config import choose_source, find_config, load_config
    from .sender import endpoint_url, send_event

    config = load_config(find_config(config_path))
    source = choose_source(config, source_name)
    body = _read_bytes(event_file)
    target = endpoint_url(config, source, url)
    status, text = send_event(config, source, body, url=target, headers=_parse_headers(headers))
    click.echo(f"{status} {text}")
    if not 200 <= status < 300:
        raise Exit(EXIT_FAILED)


def _store(config_path: str | None) -> Any:
    """The store named by the config (the commands that read or change it work whether or
    not the daemon runs)."""
    from .config import find_config, load_config
    from .store import open_store

    return open_store(load_config(find_config(config_path)).store_url())


def _duration(text: str, option: str) -> float:
    from .units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _inspect(config_path: str | None) -> tuple[Any, Any]:
    """The loaded config and rules, and the store they name."""
    from .store import open_store

    loaded = _load(config_path)
    return loaded, open_store(loaded.config.store_url())


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@cli.group()
def events() -> None:
    """Stored events."""


@events.command("list")
@config_option
@click.option("--source", help="Only events of this source.")
@click.option("--type", "type_", help="Only events of this type.")
@click.option("--status", type=click.Choice(["pending", "matched"]))
@click.option("--since", metavar="TIME", help="Received at or after (ISO-8601).")
@click.option("--until", metavar="TIME", help="Received before (ISO-8601).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="The next_cursor of a previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def events_list(config_path: str | None, source: str | None, type_: str | None, status: str | None, since: str | None,
                until: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """Events, newest first."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    page = ops.list_events(
        loaded, store, limit=limit, cursor=cursor, source=source, type=type_, status=status, since=since, until=until
    )
    if as_json:
        _print_json(page)
        return
    rows = [[e["id"], e["received_at"], e["source"], e["type"], e["outcome"], _replay_mark(e)] for e in page["events"]]
    _table(rows, ["ID", "RECEIVED", "SOURCE", "TYPE", "OUTCOME", ""])
    if page["next_cursor"]:
        click.echo(f"more: --cursor {page['next_cursor']}")


def _replay_mark(event: dict[str, Any]) -> str:
    return f"replay of {event['replay_of']}" if event["replay_of"] else ""


@events.command("show")
@config_option
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def events_show(config_path: str | None, event_id: str, as_json: bool) -> None:
    """An event with its body, explain record and runs."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    detail = ops.event_detail(loaded, store, event_id)
    if detail is None:
        raise UsageError(f"no event {event_id!r}")
    if as_json:
        _print_json(detail)
        return
    event = detail["event"]
    click.echo(
        f"event {event['id']}  {event['source']}/{event['type']}  received {event['received_at']}  {event['status']}"
    )
    if event.get("replay_of"):
        only = f" for {', '.join(event['only_rules'])}" if event.get("only_rules") else ""
        click.echo(f"replay of {event['replay_of']}{only}")
    if event.get("body_note"):  # a body no JSON encoder takes: its stored text
        click.echo(f"body ({event['body_note']}):")
        click.echo("  " + event["body"])
    else:
        click.echo("body:")
        shown = json.dumps(event["body"], indent=2, ensure_ascii=False)
        click.echo("\n".join("  " + line for line in shown.splitlines()))
    _print_explain(event.get("explain"))
    for timer in detail.get("timers", []):
        click.echo(f"  timer of {timer['rule']} for key {timer['key']!r}: {timer['status']}, due {timer['due_at']}")
    for run in detail["runs"]:
        _print_run(run)


def _print_explain(explain: list[dict[str, Any]] | None) -> None:
    if explain is None:
        click.echo("explain: not matched yet")
        return
    click.echo("rules:" if explain else "rules: none could match")
    width = max((len(r["rule"]) for r in explain), default=0)
    for record in explain:
        click.echo(f"  {record['rule']:<{width}}  {record['reason']}")


def _print_run(run: dict[str, Any], details: bool = False) -> None:
    """A run and a line per step; with ``details``, each step's times, params, output and
    error below its line."""
    error = f": {run['error']}" if run.get("error") else ""
    click.echo(f"run {run['id']}  rule {run['rule']} (version {run['rule_version']})  {run['status']}{error}")
    for step in run["steps"]:
        line = f"  step {step['index']} {step['id']} ({step['action']})  {step['status']}"
        if step["attempt"]:
            line += f", attempt {step['attempt']}"
        if step.get("error") and not details:
            line += f": {step['error']}"
        click.echo(line)
        if details:
            click.echo("\n".join(_step_details(step)))


#: How much of a step's params or output ``runs show`` prints (``--json`` prints all).
SHOWN_LINES, SHOWN_WIDTH = 40, 160


def _step_details(step: dict[str, Any]) -> list[str]:
    """What ``runs show`` prints under a step's line: when it ran, its params, its output
    and its error, each shortened to what a terminal shows."""
    lines = [f"    started {step['started_at'] or '-'}, finished {step['finished_at'] or '-'}"]
    if step.get("due_at"):
        lines.append(f"    due {step['due_at']}")
    for label in ("params", "output", "error"):
        if step.get(label) is not None:
            lines += _shortened(label, step[label])
    return lines


def _shortened(label: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    rows = [row if len(row) <= SHOWN_WIDTH else row[: SHOWN_WIDTH - 1] + "…" for row in text.splitlines() or [""]]
    if len(rows) == 1:
        return [f"    {label}: {rows[0]}"]
    out = [f"    {label}:", *("      " + row for row in rows[:SHOWN_LINES])]
    if len(rows) > SHOWN_LINES:
        out.append(f"      … {len(rows) - SHOWN_LINES} more lines (--json shows everything)")
    return out


@cli.command()
@config_option
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def explain(config_path: str | None, event_id: str, as_json: bool) -> None:
    """Which rules an event's matching considered, and why each did or did not match."""
    loaded, store = _inspect(config_path)
    event = store.get_event(event_id)
    if event is None:
        raise UsageError(f"no event {event_id!r}")
    timers = store.event_timers(event_id)
    if as_json:
        _print_json(loaded.masker.mask_value({"event_id": event_id, "explain": event["explain"], "timers": timers}))
        return
    click.echo(f"event {event_id}  {event['source']}/{event['type']}")
    _print_explain(loaded.masker.mask_value(event["explain"]))
    _print_timers(loaded.masker.mask_value(timers))
    for run in store.runs_of_event(event_id):
        if run["status"] == "waiting" and (waiting := store.run_waiting_for(run["id"])) is not None:
            from .store.state import reason_for

            click.echo(f"run {run['id']} ({run['rule']}): {reason_for(waiting)}")


def _print_timers(timers: list[dict[str, Any]]) -> None:
    """The absence timers an event started or ended."""
    from .stateful import timestamp

    for t in timers:
        click.echo(f"  timer of {t['rule']} for key {t['key']!r}: {t['status']}, due {timestamp(t['due_at'])}"
                   + (f", ended by {t['ended_by']}" if t.get("ended_by") else ""))


@cli.command()
@config_option
@click.argument("event_id", metavar="ID")
@click.option("--rule", "rules", multiple=True, metavar="R", help="Only for this rule; repeatable.")
def replay(config_path: str | None, event_id: str, rules: tuple[str, ...]) -> None:
    """Send a stored event through the rules again (as a new event)."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    new = ops.replay(loaded, store, event_id, rules)
    if new is None:
        raise UsageError(f"no event {event_id!r}")
    click.echo(f"replayed {event_id} as {new}")


@cli.group()
def runs() -> None:
    """Runs of rules."""


@runs.command("list")
@config_option
@click.option("--status", type=click.Choice(["active", "succeeded", "dead", "waiting", "skipped"]))
@click.option("--rule", help="Only runs of this rule.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_list(config_path: str | None, status: str | None, rule: str | None, limit: int, as_json: bool) -> None:
    """Runs, most recently changed first."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    found = ops.list_runs(loaded, store, status=status, rule=rule, limit=limit)
    if as_json:
        _print_json(found)
        return
    _table([[r["id"], r["updated_at"], r["rule"], r["status"], f"step {r['step']}", r["error"] or ""]
            for r in found["runs"]],
           ["ID", "UPDATED", "RULE", "STATUS", "AT", "ERROR"])


@runs.command("show")
@config_option
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_show(config_path: str | None, run_id: str, as_json: bool) -> None:
    """A run with its steps, their params, outputs and errors."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    detail = ops.run_detail(loaded, store, run_id)
    if detail is None:
        raise UsageError(f"no run {run_id!r}")
    if as_json:
        _print_json(detail)
    else:
        _print_run(detail, details=True)


@runs.command("retry")
@config_option
@click.argument("run_id", metavar="ID")
@click.option(
    "--set", "sets", multiple=True, metavar="STEP.PARAM=VALUE", help="Change a param of the dead step; repeatable."
)
def runs_retry(config_path: str | None, run_id: str, sets: tuple[str, ...]) -> None:
    """Resume a dead run from its failed step, earlier outputs kept."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    try:
        detail = ops.retry(loaded, store, run_id, ops.parse_sets(sets))
    except (LookupError, ParamsError) as exc:
        raise UsageError(str(exc.args[0])) from None
    click.echo(f"run {run_id} resumes at step {detail['step']}")


@runs.command("skip")
@config_option
@click.argument("run_id", metavar="ID")
def runs_skip(config_path: str | None, run_id: str) -> None:
    """Put a dead (or waiting) run aside: the next run of its order_by key starts."""
    from . import operations as ops

    loaded, store = _inspect(config_path)
    try:
        ops.skip(loaded, store, run_id)
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None
    click.echo(f"run {run_id} skipped")


@cli.group()
def store() -> None:
    """The store itself."""


@store.command("migrate")
@config_option
def store_migrate(config_path: str | None) -> None:
    """Create or upgrade the store's schema (serve does it at start too)."""
    from .config import find_config, load_config
    from .store import open_store

    config = load_config(find_config(config_path))
    opened = open_store(config.store_url())
    opened.close()
    click.echo(f"{_safe_url(config.store_url())}: schema up to date")


def _safe_url(url: str) -> str:
    """A store URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        rest = f"{userinfo.split(':', 1)[0]}:****@{host}" if ":" in userinfo else f"{userinfo}@{host}"
    return f"{scheme}{sep}{rest}"


@cli.group()
def queue() -> None:
    """The work queues of the requeue action."""


@queue.command("list")
@config_option
@click.argument("name", required=False)
@click.option(
    "--status", type=click.Choice(["waiting", "claimed", "done", "dead"]), help="Only items with this status."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue_list(config_path: str | None, name: str | None, status: str | None, as_json: bool) -> None:
    """Queues with their counts, or the items of queue NAME."""
    from .api import item_json

    store = _store(config_path)
    if name is None:
        counts = store.queue_counts()
        if as_json:
            click.echo(json.dumps(counts, indent=2))
            return
        for queue_name, by_status in counts.items():
            click.echo(f"{queue_name}: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
        if not counts:
            click.echo("no queues yet")
        return
    items = store.list_queue_items(name, status, 1000)
    if as_json:
        click.echo(json.dumps([item_json(i) for i in items], indent=2, default=str))
        return
    for item in items:
        attempts = f"attempts {item.attempts}/{item.max_attempts}"
        click.echo(f"{item.id}  {item.status:<8} {attempts}  key {item.key}  {item.error or ''}".rstrip())


@queue.command("claim")
@config_option
@click.argument("name")
@click.option("--lease", default="5m", show_default=True, help="How long the item is yours.")
def queue_claim(config_path: str | None, name: str, lease: str) -> None:
    """Take the next item of queue NAME; print it as JSON (null when there is none)."""
    from .api import item_json

    item = _store(config_path).claim_queue_item(name, _duration(lease, "--lease"))
    click.echo(json.dumps(item_json(item) if item else None, indent=2, default=str))


@queue.command("done")
@config_option
@click.argument("item_id", metavar="ITEM")
def queue_done(config_path: str | None, item_id: str) -> None:
    """Mark a claimed item done."""
    if _store(config_path).finish_queue_item(item_id) is None:
        raise UsageError(f"item {item_id} is not claimed (unknown, or its lease ran out)")
    click.echo(f"{item_id} done")


@queue.command("fail")
@config_option
@click.argument("item_id", metavar="ITEM")
@click.option("--retry-in", default="0s", show_default=True, help="When the item may be claimed again.")
@click.option("--error", "error", help="Why it failed.")
def queue_fail(config_path: str | None, item_id: str, retry_in: str, error: str | None) -> None:
    """Give a claimed item back; past its max_attempts it goes to the dead list."""
    item = _store(config_path).fail_queue_item(item_id, _duration(retry_in, "--retry-in"), error)
    if item is None:
        raise UsageError(f"item {item_id} is not claimed (unknown, or its lease ran out)")
    click.echo(f"{item_id} {item.status} (attempt {item.attempts} of {item.max_attempts})")


def _read_bytes(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from None


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {value!r}: expected 'Name: value'")
        out[name.strip().lower()] = rest.strip()
    return out


def _register_groups() -> None:
    from .hover_commands import hover_group

    cli.add_command(hover_group)


_register_groups()


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
        _print_problems(exc.problems)
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
