"""The web UI (SPEC 13): server-rendered pages under ``/ui`` for the people who operate
hookwise. A Hover login started from the UI comes back to ``/hover/callback``
(:mod:`engine.hover.callback`), as one that ``hookwise hover login`` started does.

    auth.py      sessions, CSRF tokens, the security headers
    site.py      what every page shares: the guard, templates, static files
    routes.py    the pages and their addresses
    forms.py     posted forms; the retry-with-edits form
    charts.py    SVG charts drawn on the server
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from ..rules.loader import Loaded
from ..store import OperatorStore


def ui_routes(current: Callable[[], Loaded], store: OperatorStore) -> list[BaseRoute]:
    """The UI's routes, reading ``store`` and the rules ``current`` returns."""
    from .routes import Ui

    return Ui(current, store).routes()


__all__ = ["ui_routes"]
