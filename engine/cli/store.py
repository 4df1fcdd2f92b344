"""The commands on the store itself and the work queues: store migrate, queue.
"""

from __future__ import annotations

import json

import click

from ..errors import UsageError
from ..store import QUEUE_STATUSES
from .base import config_option, duration, store_of


@click.group()
def store() -> None:
    """The store itself."""


@store.command("migrate")
@config_option
def store_migrate(config_path: str | None) -> None:
    """Create or upgrade the store's schema (serve does it at start too)."""
    from ..rules.config import find_config, load_config
    from ..secrets import safe_url
    from ..store import open_store

    config = load_config(find_config(config_path))
    opened = open_store(config.store_url())
    opened.close()
    click.echo(f"{safe_url(config.store_url())}: schema up to date")


@click.group()
def queue() -> None:
    """The work queues of the requeue action."""


@queue.command("list")
@config_option
@click.argument("name", required=False)
@click.option(
    "--status", type=click.Choice(QUEUE_STATUSES), help="Only items with this status."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def queue_list(config_path: str | None, name: str | None, status: str | None, as_json: bool) -> None:
    """Queues with their counts, or the items of queue NAME."""
    from ..ops.api import item_json

    store = store_of(config_path)
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
    from ..ops.api import item_json

    item = store_of(config_path).claim_queue_item(name, duration(lease, "--lease"))
    click.echo(json.dumps(item_json(item) if item else None, indent=2, default=str))


@queue.command("done")
@config_option
@click.argument("item_id", metavar="ITEM")
def queue_done(config_path: str | None, item_id: str) -> None:
    """Mark a claimed item done."""
    if store_of(config_path).finish_queue_item(item_id) is None:
        raise UsageError(f"item {item_id} is not claimed (unknown, or its lease ran out)")
    click.echo(f"{item_id} done")


@queue.command("fail")
@config_option
@click.argument("item_id", metavar="ITEM")
@click.option("--retry-in", default="0s", show_default=True, help="When the item may be claimed again.")
@click.option("--error", "error", help="Why it failed.")
def queue_fail(config_path: str | None, item_id: str, retry_in: str, error: str | None) -> None:
    """Give a claimed item back; past its max_attempts it goes to the dead list."""
    item = store_of(config_path).fail_queue_item(item_id, duration(retry_in, "--retry-in"), error)
    if item is None:
        raise UsageError(f"item {item_id} is not claimed (unknown, or its lease ran out)")
    click.echo(f"{item_id} {item.status} (attempt {item.attempts} of {item.max_attempts})")
