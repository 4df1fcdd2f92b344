"""The ``exec`` action: run a command (an argv list; never through a shell).

Its ``run`` (with capped output) comes later; until then the base class's ``run`` refuses
to run.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.action import Action
from engine.units import Duration


def _no_nul(value: str) -> str:
    # The OS cannot pass a NUL byte in an argument or variable; say so here, not at run.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Arg = Annotated[str, AfterValidator(_no_nul)]


class ExecParams(BaseModel):
    """Parameters of the ``exec`` action."""

    model_config = ConfigDict(extra="forbid")

    command: list[Arg] = Field(min_length=1, description="The program and its arguments, e.g. [/usr/bin/notify, --job, '123'].")
    env: dict[Arg, Arg] | None = Field(default=None, description="Environment variables of the command (replacing hookwise's own).")
    stdin: str | None = Field(default=None, description="Text written to the command's standard input.")
    cwd: Arg | None = Field(default=None, description="Working directory of the command.")
    timeout: Duration | None = Field(default=None, description="Kill the command after this long; default: defaults.timeout of the config.")


class ExecAction(Action):
    """Runs a command and returns ``{exit_code, stdout, stderr}``; a non-zero exit fails."""

    name = "exec"
    Params = ExecParams
