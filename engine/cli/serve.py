"""The commands that run or feed the daemon: serve, send.
"""

from __future__ import annotations

import click

from ..ops.logs import FORMATS
from ..rules.config import ROLES, Role
from .base import EXIT_FAILED, Exit, config_option, parse_headers, read_bytes


@click.command()
@config_option
@click.option("--host", metavar="H", help="Address to listen on (default: server.host).")
@click.option("--port", metavar="P", type=click.IntRange(0, 65535), help="Port to listen on (default: server.port).")
@click.option("--role", type=click.Choice(ROLES), default="all", show_default=True,
              help="Run the receiver, the worker, or both.")
@click.option(
    "--log-format", type=click.Choice(FORMATS), default=None,
    help="Log format (default: text on a terminal, else json)."
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option("--watch", is_flag=True, help="Reload when the config or a rule file changes.")
def serve(
    config_path: str | None, host: str | None, port: int | None, role: Role, log_format: str | None, log_level: str,
    watch: bool
) -> None:
    """Run the daemon: receive webhooks, match rules, run workflows."""
    from ..ops.daemon import Options
    from ..ops.daemon import serve as run_daemon
    from ..ops.logs import setup_logging
    from ..rules.config import find_config

    setup_logging(log_format, log_level)
    run_daemon(Options(config_path=find_config(config_path), host=host, port=port, role=role, watch=watch))


@click.command()
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
    from ..receive.sender import endpoint_url, send_event
    from ..rules.config import choose_source, find_config, load_config

    config = load_config(find_config(config_path))
    source = choose_source(config, source_name)
    body = read_bytes(event_file)
    target = endpoint_url(config, source, url)
    status, text = send_event(config, source, body, url=target, headers=parse_headers(headers))
    click.echo(f"{status} {text}")
    if not 200 <= status < 300:
        raise Exit(EXIT_FAILED)
