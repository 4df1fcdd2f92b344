"""The ``log`` action: write a line to hookwise's log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engine.run.action import Action, Context

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR
}


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Level = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)]


class LogParams(BaseModel):
    """Parameters of the ``log`` action."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="The line to log.")
    level: Level = Field(default="info", description="debug, info, warning or error (any case).")


class LogAction(Action):
    """Logs ``message`` at ``level`` through the step's logger; no output."""

    name = "log"
    Params = LogParams

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, LogParams)
        # "%s": the message is data, never a format string.
        ctx.logger.log(LEVELS[params.level], "%s", params.message)
        return None
