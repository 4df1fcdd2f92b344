"""Load-time warnings about steps that are valid but will fail when they run.

``check`` reports them as warnings (``--strict`` makes them count). So far: an ``http`` step
whose URL names, literally, a host the SSRF guard of SPEC 11 refuses (a private, loopback,
link-local or metadata address, or ``localhost``) when neither ``http.allow_private`` nor
``http.allow_hosts`` lets it through. The guard's own classification decides
(``actions.http``); a host written as a template is only known when the step runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, Problem
from .config import Settings

#: Names that are loopback by definition (RFC 6761), whatever a resolver would say.
_LOOPBACK_NAMES = ("localhost", ".localhost")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TEMPLATE_MARKS = ("{{", "{%", "{#")


def step_warnings(action: str, raw: Mapping[str, Any], settings: Settings) -> list[Problem]:
    """Warnings about a step's params as written, located relative to the params."""
    lint = _LINTS.get(action)
    return lint(raw, settings) if lint is not None else []


def _refused_url(raw: Mapping[str, Any], settings: Settings) -> list[Problem]:
    url = raw.get("url")
    target = literal_host(url) if isinstance(url, str) else None
    if target is None:
        return []
    from actions.ssrf import Guard, refusal_reason  # the http action's guard, in a module of its own

    host, port = target
    try:
        guard = Guard.from_settings(settings.http)
    except ConfigError:  # a bad allow_hosts entry is a problem of its own
        return []
    address = _address(host)
    if guard.allow_private or guard.allows_host(host, port) or address is None:
        return []
    reason = refusal_reason(address)
    if reason is None:
        return []
    unless = "the step will fail unless http.allow_hosts names it or http.allow_private is true"
    return [Problem(f"the SSRF guard will refuse {host} ({reason}): {unless}", ("url",), warning=True)]


def literal_host(url: str) -> tuple[str, int] | None:
    """The host and port of ``url`` when they are written literally, not templated."""
    scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not sep or any(mark in scheme + authority for mark in _TEMPLATE_MARKS):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname and port else None


def _address(host: str) -> IPv4Address | IPv6Address | None:
    """The address a literal host stands for without asking a resolver: an IP literal, or
    loopback for the names that are loopback by definition."""
    if host == _LOOPBACK_NAMES[0] or host.endswith(_LOOPBACK_NAMES[1]):
        return IPv4Address("127.0.0.1")
    try:
        return ip_address(host.partition("%")[0])
    except ValueError:
        return None


_LINTS: dict[str, Callable[[Mapping[str, Any], Settings], list[Problem]]] = {"http": _refused_url}
