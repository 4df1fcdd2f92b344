"""The ``http`` action: call a URL.

Its ``run`` (with the SSRF guard of SPEC 11 and the ``Idempotency-Key`` header) comes
later; until then the base class's ``run`` refuses to run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.action import Action
from engine.units import Duration
from engine.validation import key_error

from ._params import Headers, QueryParams, at_most_one, one_or_many, upper

Method = Annotated[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], BeforeValidator(upper)]
Status = Annotated[int, Field(ge=100, le=599)]
Expect = Annotated[list[Status], BeforeValidator(one_or_many, json_schema_input_type=Status | list[Status])]


def _http_url(url: str) -> str:
    # Kept as written (not normalised by pydantic's HttpUrl): the user's URL is what is called.
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("a URL must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


class Auth(BaseModel):
    """Exactly one of ``basic: [user, password]`` or ``bearer: token``."""

    model_config = ConfigDict(extra="forbid")

    basic: tuple[str, str] | None = Field(default=None, description="HTTP Basic credentials: [user, password].")
    bearer: str | None = Field(default=None, description="A bearer token, sent as 'Authorization: Bearer <token>'.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Auth:
        if (self.basic is None) == (self.bearer is None):
            raise key_error("give exactly one of basic, bearer")
        return self


class HttpParams(BaseModel):
    """Parameters of the ``http`` action. The request body is one of ``json``, ``form``
    or ``body`` (a None value counts as not given)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="GET", description="HTTP method (any case): GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.")
    url: Annotated[str, AfterValidator(_http_url)] = Field(description="The http:// or https:// URL to call.")
    params: QueryParams | None = Field(default=None, description="Query parameters to add to the URL; a list value repeats the name.")
    headers: Headers | None = Field(default=None, description="Request headers.")
    json_: Any = Field(default=None, alias="json", description="A value to send as a JSON body.")
    form: dict[str, Any] | None = Field(default=None, description="Fields to send as an application/x-www-form-urlencoded body.")
    body: str | None = Field(default=None, description="A raw text body.")
    auth: Auth | None = Field(default=None, description="{basic: [user, password]} or {bearer: token}.")
    timeout: Duration | None = Field(default=None, description="Longest wait for the response; default: http.timeout of the config.")
    expect: Expect | None = Field(default=None, description="Status codes that count as success (one or a list); default: any 2xx.")
    follow_redirects: bool = Field(default=False, description="Follow redirects (each hop is checked like the first).")

    @model_validator(mode="after")
    def _one_body(self) -> HttpParams:
        at_most_one(self, "json", "form", "body")
        return self


class HttpAction(Action):
    """Calls a URL and returns ``{status, headers, json, text}``."""

    name = "http"
    Params = HttpParams
