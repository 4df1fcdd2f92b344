"""The ``hover`` action: call the Hover API with the account's token.

Its ``run`` (token refresh, rate limit) comes later; until then the base class's ``run``
refuses to run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.action import Action

from ._params import QueryParams, at_most_one, upper

Method = Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(upper)]


def _api_path(path: str) -> str:
    # The account's token goes with the request: the path must stay on hover.base_url.
    # "//host/..." would be read as another host, so it is refused like a full URL.
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("must be a path on the Hover API starting with a single '/', e.g. /api/v3/jobs/123")
    if any(c.isspace() or ord(c) < 32 for c in path):
        raise ValueError("must not contain spaces or control characters")
    return path


class HoverParams(BaseModel):
    """Parameters of the ``hover`` action; the body is one of ``json`` or ``form``."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="GET", description="HTTP method (any case): GET, POST, PUT, PATCH or DELETE.")
    path: Annotated[str, AfterValidator(_api_path)] = Field(description="API path below hover.base_url, e.g. /api/v3/jobs/123.")
    params: QueryParams | None = Field(default=None, description="Query parameters.")
    json_: Any = Field(default=None, alias="json", description="A value to send as a JSON body.")
    form: dict[str, Any] | None = Field(default=None, description="Fields to send as a form body.")

    @model_validator(mode="after")
    def _one_body(self) -> HoverParams:
        at_most_one(self, "json", "form")
        return self


class HoverAction(Action):
    """Calls the Hover API and returns ``{status, json}``."""

    name = "hover"
    Params = HoverParams
