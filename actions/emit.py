"""The ``emit`` action: store a new event that goes through the rules like a received one.

Its ``run`` comes later; until then the base class's ``run`` refuses to run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.action import Action
from engine.units import Duration


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
