"""The server settings of SPEC 3 that bound the receiver: defaults, units, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.rules.config import load_config

from .test_config import problems, write


def test_defaults(tmp_path: Path) -> None:
    server = load_config(write(tmp_path, "{}\n"), {}).settings.server
    limits = (server.max_depth, server.max_header, server.max_connections, server.read_timeout)
    assert limits == (128, 65536, 1000, 30.0)
    assert server.trusted_proxies == []


def test_units_and_networks(tmp_path: Path) -> None:
    text = (
        "server:\n  max_header: 16KiB\n  read_timeout: 500ms\n  max_depth: 256\n"
        "  trusted_proxies: [10.0.0.0/8, '::1', 127.0.0.1]\n"
    )
    server = load_config(write(tmp_path, text), {}).settings.server
    assert (server.max_header, server.read_timeout, server.max_depth) == (16384, 0.5, 256)
    assert server.trusted_proxies == ["10.0.0.0/8", "::1", "127.0.0.1"]


@pytest.mark.parametrize(("text", "message"), [
    ("server: {max_depth: 257}", "server.max_depth: "),
    ("server: {max_depth: 0}", "server.max_depth: "),
    ("server: {max_header: 100}", "server.max_header: "),
    ("server: {read_timeout: 0s}", "server.read_timeout: "),
    ("server: {max_connections: 0}", "server.max_connections: "),
    ("server: {trusted_proxies: [proxy.example.com]}", "'proxy.example.com' is not an IP address or network"),
])
def test_bad_values_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    found = problems(write(tmp_path, text + "\n"))
    assert len(found) == 1 and message in found[0], found
