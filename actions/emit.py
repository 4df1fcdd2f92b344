"""The ``emit`` action: store a new event that goes through the rules like a received one.

The event's id is derived from the run and step, so a step run twice (after a crash)
stores it once. A chain of emitted events deeper than :data:`MAX_DEPTH` fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import Fail
from engine.run.action import Action, Context
from engine.units import Duration

#: How many emitted events may follow one another from one received event.
MAX_DEPTH = 8


class EmitParams(BaseModel):
    """Parameters of the ``emit`` action."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, description="The new event's type, e.g. crm.synced.")
    data: Any = Field(default_factory=dict, description="The new event's body (any JSON value).")
    source: str = Field(default="hookwise", min_length=1, description="The source rules see for the new event.")
    delay: Duration = Field(default=0.0, description="Wait this long before the event is matched.")


class EmitAction(Action):
    """Stores a follow-up event and returns ``{event_id}``."""

    name = "emit"
    Params = EmitParams

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, EmitParams)
        if ctx.event.depth >= MAX_DEPTH:
            raise Fail(f"emit: a chain of emitted events deeper than {MAX_DEPTH} is refused "
                       f"(this event is emitted event #{ctx.event.depth})")
        if ctx.emit is None:
            raise Fail("emit: no store to put the event in")
        return {"event_id": ctx.emit(params.type, params.data, params.source, params.delay)}
