"""The commands that look at what happened: events, explain, replay, runs.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import ParamsError, UsageError
from ..ops.operations import EVENT_STATUSES, RUN_STATUSES
from .base import config_option, inspect_store, print_json, table


@click.group()
def events() -> None:
    """Stored events."""


@events.command("list")
@config_option
@click.option("--source", help="Only events of this source.")
@click.option("--type", "type_", help="Only events of this type.")
@click.option("--status", type=click.Choice(EVENT_STATUSES))
@click.option("--since", metavar="TIME", help="Received at or after (ISO-8601).")
@click.option("--until", metavar="TIME", help="Received before (ISO-8601).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", help="The next_cursor of a previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def events_list(config_path: str | None, source: str | None, type_: str | None, status: str | None, since: str | None,
                until: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """Events, newest first."""
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    page = ops.list_events(
        loaded, store, limit=limit, cursor=cursor, source=source, type=type_, status=status, since=since, until=until
    )
    if as_json:
        print_json(page)
        return
    rows = [[e["id"], e["received_at"], e["source"], e["type"], e["outcome"], _replay_mark(e)] for e in page["events"]]
    table(rows, ["ID", "RECEIVED", "SOURCE", "TYPE", "OUTCOME", ""])
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
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    detail = ops.event_detail(loaded, store, event_id)
    if detail is None:
        raise UsageError(f"no event {event_id!r}")
    if as_json:
        print_json(detail)
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
    click.echo(f"run {run['id']}  rule {run['rule']} (version {run['rule_version']})  {_run_status(run)}{error}")
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


@click.command()
@config_option
@click.argument("event_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def explain(config_path: str | None, event_id: str, as_json: bool) -> None:
    """Which rules an event's matching considered, and why each did or did not match."""
    loaded, store = inspect_store(config_path)
    event = store.get_event(event_id)
    if event is None:
        raise UsageError(f"no event {event_id!r}")
    timers = store.event_timers(event_id)
    if as_json:
        print_json(loaded.masker.mask_value({"event_id": event_id, "explain": event["explain"], "timers": timers}))
        return
    click.echo(f"event {event_id}  {event['source']}/{event['type']}")
    _print_explain(loaded.masker.mask_value(event["explain"]))
    _print_timers(loaded.masker.mask_value(timers))
    for run in store.runs_of_event(event_id):
        if run["status"] == "waiting" and (waiting := store.run_waiting_for(run["id"])) is not None:
            from ..store.state import reason_for

            click.echo(f"run {run['id']} ({run['rule']}): {reason_for(waiting)}")


def _print_timers(timers: list[dict[str, Any]]) -> None:
    """The absence timers an event started or ended."""
    from ..rules.stateful import timestamp

    for t in timers:
        click.echo(f"  timer of {t['rule']} for key {t['key']!r}: {t['status']}, due {timestamp(t['due_at'])}"
                   + (f", ended by {t['ended_by']}" if t.get("ended_by") else ""))


@click.command()
@config_option
@click.argument("event_id", metavar="ID")
@click.option("--rule", "rules", multiple=True, metavar="R", help="Only for this rule; repeatable.")
def replay(config_path: str | None, event_id: str, rules: tuple[str, ...]) -> None:
    """Send a stored event through the rules again (as a new event)."""
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    new = ops.replay(loaded, store, event_id, rules)
    if new is None:
        raise UsageError(f"no event {event_id!r}")
    click.echo(f"replayed {event_id} as {new}")


@click.group()
def runs() -> None:
    """Runs of rules."""


@runs.command("list")
@config_option
@click.option("--status", type=click.Choice(RUN_STATUSES))
@click.option("--rule", help="Only runs of this rule.")
@click.option("--shadow/--live", "shadow", default=None,
              help="Only the runs of shadow rules (rendered, no action run), or only live ones.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_list(
    config_path: str | None, status: str | None, rule: str | None, shadow: bool | None, limit: int, as_json: bool
) -> None:
    """Runs, most recently changed first; shadow runs are marked."""
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    found = ops.list_runs(loaded, store, status=status, rule=rule, limit=limit, shadow=shadow)
    if as_json:
        print_json(found)
        return
    table([[r["id"], r["updated_at"], r["rule"], _run_status(r), f"step {r['step']}", r["error"] or ""]
            for r in found["runs"]],
           ["ID", "UPDATED", "RULE", "STATUS", "AT", "ERROR"])


def _run_status(run: dict[str, Any]) -> str:
    return f"{run['status']} (shadow)" if run.get("shadow") else str(run["status"])


@runs.command("show")
@config_option
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs_show(config_path: str | None, run_id: str, as_json: bool) -> None:
    """A run with its steps, their params, outputs and errors."""
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    detail = ops.run_detail(loaded, store, run_id)
    if detail is None:
        raise UsageError(f"no run {run_id!r}")
    if as_json:
        print_json(detail)
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
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
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
    from ..ops import operations as ops

    loaded, store = inspect_store(config_path)
    try:
        ops.skip(loaded, store, run_id)
    except LookupError as exc:
        raise UsageError(str(exc.args[0])) from None
    click.echo(f"run {run_id} skipped")
