"""The ``jsonl`` action for hookwise: append a record to a JSON Lines file.

Made with ``hookwise plugin new jsonl``, then given its own params and ``run``. Each line
carries the step's idempotency key, and a line already written for the key is not written
again: a retried step (the worker crashed after writing, before recording) appends once.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from engine import Action, Context, Fail

#: One writer at a time per process: lines of concurrent steps never interleave.
_LOCK = threading.Lock()


class JsonlParams(BaseModel):
    """The parameters of a ``jsonl`` step (rendered from the rule's templates)."""

    # Unknown keys are refused, as every built-in action's are.
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="The file to append to (made when missing).")
    record: JsonValue = Field(description="The value to write, as one line of JSON.")


class JsonlAction(Action):
    """Appends ``{"key": <idempotency key>, "record": ...}`` as one line to ``path``;
    outputs the path and whether this attempt wrote the line."""

    name = "jsonl"
    Params = JsonlParams

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, JsonlParams)
        path = Path(params.path)
        line = json.dumps({"key": ctx.idempotency_key, "record": params.record}, ensure_ascii=False)
        with _LOCK:
            if _written(path, ctx.idempotency_key):
                return {"path": str(path), "written": False}
            try:
                with path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
                    out.flush()
                    os.fsync(out.fileno())
            except FileNotFoundError:
                raise Fail(f"{path.parent} does not exist") from None
        return {"path": str(path), "written": True}


def _written(path: Path, key: str) -> bool:
    """Whether a line for ``key`` is in the file already."""
    try:
        with path.open(encoding="utf-8") as lines:
            return any(json.loads(line).get("key") == key for line in lines if line.strip())
    except FileNotFoundError:
        return False
