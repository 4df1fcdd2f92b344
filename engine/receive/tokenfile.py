"""A source's URL token kept in a file (``token_file:``), so that a fresh install verifies
its senders with nothing set in the environment (SPEC 1, 4).

Every command reads the file when it loads the config (:func:`read`); ``serve`` creates it
when it is missing (:func:`create`): a random token, written whole before the file appears
under its name (two processes starting at once agree on one token), readable by its owner
only. The token is a secret like a value from the environment: masked wherever hookwise
shows it, except in the one log line at start that gives the URL to register.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: Random bytes in a new token (43 URL-safe characters).
TOKEN_BYTES = 32


class TokenFileError(ValueError):
    """The token file exists but holds no usable token, or cannot be read."""


def read(path: Path) -> str | None:
    """The token in ``path``, or None when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = text.strip()
    if not token:
        raise TokenFileError(f"{path} is empty: delete it and `hookwise serve` makes a new token, or write one into it")
    if any(c.isspace() or ord(c) < 32 for c in token):
        raise TokenFileError(f"{path} must hold one token on one line, without spaces")
    return token


def create(path: Path) -> str:
    """Make ``path`` with a random token (mode 0600, its folder created) unless it exists;
    the token the file holds either way."""
    existing = read(path)
    if existing is not None:
        return existing
    try:
        _write_new(path)
    except OSError as exc:
        raise TokenFileError(f"cannot create {path}: {exc.strerror or exc}") from None
    token = read(path)
    if token is None:
        raise TokenFileError(f"{path} vanished while it was created")
    return token


def _write_new(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        try:
            os.link(draft, path)  # fails when another process made it first: then its token counts
        except FileExistsError:
            pass
    finally:
        draft.unlink()
