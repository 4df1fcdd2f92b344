"""Shared fixtures: a project folder with a config and rule files written by the test."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .browser import browser  # noqa: F401 - the real Chromium fixture of the UI tests
from .support import Clock

# An audit hook to see every socket.connect, for the SSRF and http action tests (hooks cannot
# be removed: it only records while a test has switched it on with the connects fixture).
_connects: list[Any] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect" and _connects is not None:
        _connects.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def connects() -> Iterator[list[Any]]:
    global _connects
    seen: list[Any] = []
    _connects = seen
    yield seen
    _connects = None


ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

CONFIG = """\
rules: [rules/]
sources:
  hover: {preset: hover, token: t0ken-for-tests}
  github: {preset: github, secret: gh-secret}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write ``config.yaml`` and rule files into a fresh folder (the working directory);
    returns the config path."""
    monkeypatch.chdir(tmp_path)

    def make(rules: dict[str, str] | str, config: str = CONFIG) -> Path:
        files = {"rules.yaml": rules} if isinstance(rules, str) else rules
        (tmp_path / "rules").mkdir(exist_ok=True)
        for name, text in files.items():
            path = tmp_path / "rules" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (tmp_path / "config.yaml").write_text(config)
        return tmp_path / "config.yaml"

    return make


@pytest.fixture
def clock() -> Clock:
    """A clock that moves only when the test moves it (see :class:`tests.support.Clock`)."""
    return Clock()
