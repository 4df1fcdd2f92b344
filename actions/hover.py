"""The ``hover`` action: call the Hover API with the account's token.

The process's :class:`engine.hover.client.HoverClient` (``ctx.hover``) does the work: token refresh,
the rate limit, and the mapping of statuses to Retry and Fail. A 2xx answer is the step's
output ``{status, json}``; anything else fails the step. A ``PUT
/api/v2/webhooks/<code>/verify`` (the verification handshake of SPEC 9) is tried with POST
when PUT is answered 405, waits (retries) while the account is not logged in, records the
event's ``webhook_id`` as verified with the method that worked, or its last error, in the
store, and adds ``method`` to its output.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.errors import Fail, Retry
from engine.hover.client import VERIFY_PATH, record_verification
from engine.hover.tokens import HANDSHAKE_WAITS, LOGIN_WAIT, NotLoggedIn
from engine.run.action import Action, Context

from ._params import QueryParams, at_most_one, upper

Method = Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(upper)]


def _api_path(path: str) -> str:
    # The account's token goes with the request: the path must stay on hover.base_url and
    # name what it seems to. "//host/..." would be read as another host, so it is refused
    # like a full URL; a dot segment (also percent-encoded: servers and clients resolve
    # them) or a backslash would move the call to another endpoint; "?" and "#" would end
    # the path early (a query belongs in params).
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError("must be a path on the Hover API starting with a single '/', e.g. /api/v3/jobs/123")
    if any(c.isspace() or ord(c) < 32 for c in path):
        raise ValueError("must not contain spaces or control characters")
    if "?" in path or "#" in path:
        raise ValueError(
            "must not contain '?' or '#': give query parameters in params (templated parts: use |path_segment)")
    if "\\" in path:
        raise ValueError("must not contain a backslash")
    segments = path[1:].split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        raise ValueError("must not contain '.' or '..' segments (templated parts: use |path_segment)")
    if "" in segments[:-1]:
        raise ValueError("must not contain empty segments ('//')")
    return path


class HoverParams(BaseModel):
    """Parameters of the ``hover`` action; the body is one of ``json`` or ``form``."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="GET", description="HTTP method (any case): GET, POST, PUT, PATCH or DELETE.")
    path: Annotated[str, AfterValidator(_api_path)] = Field(
        description="API path below hover.base_url, e.g. /api/v3/jobs/123."
    )
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

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any]:
        assert isinstance(params, HoverParams)
        if ctx.hover is None:
            raise Fail(
                "hover: no Hover client in this process (the hover action runs in the worker of `hookwise serve`)"
            )
        if _is_handshake(params):
            return _handshake(params, ctx)
        status, body, _ = ctx.hover.request(
            params.method, params.path, params=params.params, json=params.json_, form=params.form, timeout=ctx.timeout,
        )
        if not 200 <= status < 300:
            raise Fail(f"hover: {params.method} {params.path}: {status} (expected 2xx)")
        return {"status": status, "json": body}


def _is_handshake(params: HoverParams) -> bool:
    plain = params.params is None and params.json_ is None and params.form is None
    return plain and params.method == "PUT" and VERIFY_PATH.fullmatch(params.path) is not None


def _handshake(params: HoverParams, ctx: Context) -> Mapping[str, Any]:
    """The verification handshake (SPEC 9): PUT, or POST when PUT is answered 405; the
    webhook's outcome recorded. Without a Hover login it waits (a login wakes it)."""
    assert ctx.hover is not None
    try:
        status, body, method = ctx.hover.verify(params.path, timeout=ctx.timeout)
        if not 200 <= status < 300:
            raise Fail(f"hover: {params.method} {params.path}: {status} (expected 2xx)")
    except NotLoggedIn:
        raise Retry(HANDSHAKE_WAITS, after=LOGIN_WAIT) from None
    except Fail as exc:
        _record(ctx, error=str(exc))
        raise
    _record(ctx, verified_at=time.time(), method=method)
    return {"status": status, "json": body, "method": method}


def _record(
    ctx: Context, *, verified_at: float | None = None, error: str | None = None, method: str | None = None,
) -> None:
    body = ctx.event.body
    webhook_id = body.get("webhook_id") if isinstance(body, dict) else None
    record_verification(
        ctx.store, webhook_id, source=ctx.event.source, verified_at=verified_at, error=error, method=method,
    )
