"""``hookwise send``: sign an event as its source expects and post it."""

from __future__ import annotations

import urllib.parse
from urllib.parse import urlsplit, urlunsplit

from ..errors import UsageError
from ..rules.config import Config
from ..run.outbound import Client, InvalidRequest, OutboundError
from ..secrets import safe_url
from .verify import sign


def default_url(config: Config, source: str) -> str:
    server = config.settings.server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
    return f"http://{host}:{server.port}/hooks/{source}"


def endpoint_url(config: Config, source: str, url: str | None = None) -> str:
    """Where ``hookwise send`` posts an event of ``source``: ``url`` as given when it names
    an endpoint (its path has a ``/hooks/`` segment), else ``url`` taken as the daemon's
    base URL (``http://127.0.0.1:8000``, perhaps with a path prefix a proxy adds) with
    ``/hooks/SOURCE`` appended; without ``url``, the config's server address."""
    if url is None:
        return default_url(config, source)
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if "/hooks/" in path:
        return url
    tail = f"/{urllib.parse.quote(source)}" if path.endswith("/hooks") else f"/hooks/{urllib.parse.quote(source)}"
    return urlunsplit(parts._replace(path=path + tail))


def send_event(
    config: Config, source_name: str, body: bytes, *, url: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """POST ``body`` signed for ``source_name``; returns the status and the answer's text."""
    source = config.settings.sources.get(source_name)
    if source is None:
        known = ", ".join(sorted(config.settings.sources)) or "none"
        raise UsageError(f"no source named {source_name!r} in {config.path.name} (sources: {known})")
    if source.token_file and not source.token:
        raise UsageError(
            f"{config.resolve(source.token_file)} (sources.{source_name}.token_file) does not exist yet: "
            "`hookwise serve` makes it when it starts; start the daemon first"
        )
    target = url or default_url(config, source_name)
    parts = urlsplit(target)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    content_type = (headers or {}).get("content-type", "application/json")
    try:
        auth_headers, query = sign(source, body, path=path, content_type=content_type)
    except ValueError as exc:
        raise UsageError(f"cannot sign for source {source_name!r}: {exc}") from None
    if query:
        separator = "&" if parts.query else "?"
        target += separator + "&".join(f"{k}={urllib.parse.quote(v, safe='')}" for k, v in query.items())
    client = Client()
    try:
        headers = {"Content-Type": content_type, **(headers or {}), **auth_headers}
        reply = client.send("POST", target, headers=headers, data=body, timeout=30)
    except (OutboundError, InvalidRequest) as exc:
        raise UsageError(f"cannot reach {safe_url(target)}: {exc}") from None  # the query may hold the source's token
    finally:
        client.close()
    return reply.status, reply.body.decode("utf-8", "replace")
