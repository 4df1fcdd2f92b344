"""Masking of secrets: every value hookwise took from the environment shows as ``****``."""

from __future__ import annotations

import re
from typing import Any, Iterable

MASK = "****"

#: Values shorter than this are not masked: masking "1" or "on" everywhere would garble
#: every line while protecting nothing (no real secret is that short).
MIN_SECRET_LENGTH = 4


class Masker:
    """Replaces known secret values in text and in JSON-like structures."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``****``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def mask_value(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with every secret in its strings (and keys)
        masked."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask(str(k)): self.mask_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(v) for v in value]
        return value
