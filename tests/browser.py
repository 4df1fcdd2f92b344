"""A real Chromium for tests: Debian's ``chromium`` package driven by Playwright's Python API
(never a downloaded browser). Where it is missing the browser tests skip, except under
``CI``, where they fail: CI installs it (.ci/run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root, with no network of its own: nothing starts that would reach out.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Where the tests leave screenshots of the main pages (ignored by git; docs/ui holds the chosen ones).
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need Chromium in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium, shared by the tests of a module (each opens its own context)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[test]'")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> None:
    """Keep a picture of the page as the viewport shows it (``tests/screenshots/NAME.png``).

    A page of a second browser context can be in the background when its picture is asked
    for, and Chromium then answers "Unable to capture screenshot" now and then on a busy
    machine: the page is brought to the front and asked again (the pictures are documents,
    not what a test asserts)."""
    from playwright.sync_api import Error

    SCREENSHOTS.mkdir(exist_ok=True)
    for attempt in range(3):
        page.bring_to_front()
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
            return
        except Error as exc:
            if "Unable to capture screenshot" not in str(exc) or attempt == 2:
                raise
            page.wait_for_timeout(200)
