"""The ``http`` action: call a URL, behind the SSRF guard of SPEC 11 and the delivery
control of SPEC 6.

Outcomes of one attempt:

    expected status (``expect``, else any 2xx)   -> {status, headers, json, text, truncated}
    connection error, timeout, a response that
    is not valid HTTP or breaks off, 5xx, 429    -> Retry (after = Retry-After, when given)
    any other status, a refused address, a
    request that cannot be sent, a bad redirect,
    more than 10 redirects                       -> Fail
    its host's concurrency, rate or breaker
    says wait (before anything is sent)          -> Defer (no attempt spent)

The calls go through :class:`engine.run.outbound.Client` (requests), whose new connections are
opened by :meth:`actions.ssrf.Guard.connect`. Redirects are followed here, hop by hop
(only with ``follow_redirects``, at most 10), so every hop meets the guard; a hop to
another origin (scheme, host or port) drops ``Authorization``, ``Cookie``,
``Proxy-Authorization`` and the step's other credentials: the headers whose name says so
(``X-Api-Key``, ``X-Auth-Token``, ...) and those whose value holds a secret of the config.
Userinfo in the URL (``https://user:pass@host/``) becomes Basic auth, as requests does,
unless the step sets ``auth`` or ``Authorization``; it is never sent on to another origin.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlencode, urljoin, urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.errors import Fail, Retry
from engine.rules.config import Http
from engine.rules.templates import Compiled
from engine.rules.validation import key_error
from engine.run.action import Action, Context
from engine.run.outbound import USER_AGENT, Client, InvalidRequest, OutboundError, Reply
from engine.run.runs import retry_after
from engine.secrets import safe_url
from engine.units import Duration

from ._params import Headers, QueryParams, at_most_one, one_or_many, upper
from .ssrf import Guard, Refused, refusal_reason

Method = Annotated[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], BeforeValidator(upper)]
Status = Annotated[int, Field(ge=100, le=599)]
Expect = Annotated[list[Status], BeforeValidator(one_or_many, json_schema_input_type=Status | list[Status])]

#: Largest response body kept; the rest is not read (``truncated`` is then true).
MAX_BODY = 1024 * 1024
#: Redirects followed at most when ``follow_redirects`` is true.
MAX_REDIRECTS = 10
_EXCERPT = 200  # characters of a response body quoted in a failure message
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


#: Whitespace (str.isspace's, which re's \s follows) and control characters.
_UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f]")


def _http_url(url: str) -> str:
    # Kept as written (not normalised by pydantic's HttpUrl): the user's URL is what is called.
    if _UNSAFE_IN_URL.search(url):
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

    method: Method = Field(
        default="GET", description="HTTP method (any case): GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS."
    )
    url: Annotated[str, AfterValidator(_http_url)] = Field(description="The http:// or https:// URL to call.")
    params: QueryParams | None = Field(
        default=None, description="Query parameters to add to the URL; a list value repeats the name."
    )
    headers: Headers | None = Field(default=None, description="Request headers.")
    json_: Any = Field(default=None, alias="json", description="A value to send as a JSON body.")
    form: dict[str, Any] | None = Field(
        default=None, description="Fields to send as an application/x-www-form-urlencoded body."
    )
    body: str | None = Field(default=None, description="A raw text body.")
    auth: Auth | None = Field(default=None, description="{basic: [user, password]} or {bearer: token}.")
    timeout: Duration | None = Field(
        default=None, description="Longest wait for the response; default: http.timeout of the config."
    )
    expect: Expect | None = Field(
        default=None, description="Status codes that count as success (one or a list); default: any 2xx."
    )
    follow_redirects: bool = Field(default=False, description="Follow redirects (each hop is checked like the first).")

    @model_validator(mode="after")
    def _one_body(self) -> HttpParams:
        at_most_one(self, "json", "form", "body")
        return self



# -- one call --------------------------------------------------------------------------------

#: Headers that are credentials wherever they appear.
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: A header whose name says it carries a credential (X-Api-Key, X-Auth-Token, Private-Token, ...).
_CREDENTIAL_NAME = re.compile(r"auth|token|key|secret|passw|session|signature|credential|cookie", re.IGNORECASE)
#: Framing is the client's: a step's own Content-Length or Transfer-Encoding would lie about the body.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Secret = Callable[[str], bool]


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None
    #: whether a text holds a secret of the config (credentials are judged only when a
    #: redirect leaves the origin: not on every call)
    secret: Secret | None = None

    def describe(self) -> str:
        return f"{self.method} {safe_url(self.url)}"


class HttpAction(Action):
    """Calls a URL and returns ``{status, headers, json, text, truncated}``.

    ``headers`` has lower-case names (a repeated header's values joined with ", ");
    ``json`` is the body parsed as JSON (whatever the Content-Type) or None; ``text`` is
    the body decoded with the charset the response names, else UTF-8; a body over 1 MiB
    is cut there, ``truncated`` is then true and ``json`` None. Sends
    ``Idempotency-Key: <ctx.idempotency_key>``, ``User-Agent: hookwise/<version>`` and
    ``Accept-Encoding: identity``, each unless the step's headers set it (a gzip or
    deflate body is decoded).

    Connections are kept per host and thread and reused across steps; no cookies are
    kept, so one rule's calls never carry another's. :meth:`close` releases them."""

    name = "http"
    Params = HttpParams

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        http: Http = settings.http if settings is not None else Http()
        self._timeout = http.timeout
        self._client = Client(connect=Guard.from_settings(http).connect, max_body=MAX_BODY)

    def run(self, params: BaseModel, ctx: Context) -> dict[str, Any]:
        assert isinstance(params, HttpParams)
        timeout = params.timeout or self._timeout
        delivery = ctx.delivery
        # Admitted before the request is built: a step told to wait has spent nothing on it.
        slot = delivery.admit(_host(params.url), ctx.idempotency_key) if delivery is not None else None
        ok: bool | None = None
        try:
            request = _first_request(params, ctx.idempotency_key, ctx.secret)
            response, request = self._follow(request, params.follow_redirects, timeout)
            ok = not (response.status == 429 or response.status >= 500)
        except Retry:
            ok = False
            raise
        finally:
            if slot is not None:
                delivery.done(slot, ok)
        text = _decode(response)
        _judge(request, response, text, params.expect)
        return {
            "status": response.status,
            "headers": response.headers,
            "json": None if response.truncated else _parse_json(text),
            "text": text,
            "truncated": response.truncated,
        }

    @classmethod
    def destination(cls, params: Compiled) -> str | None:
        """The host of the step's URL when its params tell it before rendering: a constant
        URL, or a template whose text before its first brace holds the whole authority
        (``https://crm.example.com/jobs/{{ event.id }}``)."""
        start, whole = params.fixed_start("url")
        if not whole:
            _, sep, rest = start.partition("://")
            if not sep or not any(c in rest for c in "/?#"):
                return None
        try:
            return _host(start) or None
        except ValueError:  # not a URL: validation will say so
            return None

    def close(self) -> None:
        """Close the pooled connections. Call it when the action is retired (shutdown,
        reload); it must not be used afterwards."""
        self._client.close()

    def _follow(self, request: _Request, follow: bool, timeout: float) -> tuple[Reply, _Request]:
        """The final response and the request that got it, following at most
        MAX_REDIRECTS redirects when ``follow`` is true (each hop goes through the guard)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = _send(self._client, request, timeout)
            location = response.headers.get("location")
            if not follow or response.status not in _REDIRECTS or location is None:
                return response, request
            request = _redirected(request, response.status, location)
        raise Fail(f"http: {request.describe()}: stopped after {MAX_REDIRECTS} redirects")


def _first_request(params: HttpParams, idempotency_key: str, secret: Secret | None) -> _Request:
    data, content_type = _body(params)
    defaults = {
        "Idempotency-Key": idempotency_key,
        "User-Agent": USER_AGENT,
        # Uncompressed unless the step asks otherwise (gzip and deflate are then
        # decoded): the bodies are small, and the CPU is better spent elsewhere.
        "Accept-Encoding": "identity",
    }
    if content_type is not None:
        defaults["Content-Type"] = content_type
    given = {name: value for name, value in (params.headers or {}).items() if name.lower() not in _FRAMING}
    headers = _with_defaults(given, defaults)
    url, userinfo = _split_userinfo(_with_query(params.url, params.params))
    if params.auth is not None:
        headers = _without(headers, "Authorization")
        headers["Authorization"] = _authorization(params.auth)
    elif userinfo is not None and not any(name.lower() == "authorization" for name in headers):
        headers["Authorization"] = _basic(*userinfo)
    return _Request(params.method, url, headers, data, secret)


def _is_credential(name: str, value: str, secret: Secret | None) -> bool:
    lower = name.lower()
    if lower in _CREDENTIALS or (lower != "idempotency-key" and _CREDENTIAL_NAME.search(lower)):
        return True
    return secret is not None and secret(value)


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the (user, password) it held, percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return bare, (unquote(user), unquote(password))


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".").lower()


def _with_defaults(given: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """``given`` and each default whose name it lacks (in any case)."""
    have = {name.lower() for name in given}
    return {**{name: value for name, value in defaults.items() if name.lower() not in have}, **given}


def _without(headers: dict[str, str], *names: str) -> dict[str, str]:
    lower = {name.lower() for name in names}
    return {given: value for given, value in headers.items() if given.lower() not in lower}


def _authorization(auth: Auth) -> str:
    if auth.basic is not None:
        return _basic(*auth.basic)
    return f"Bearer {auth.bearer}"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _body(params: HttpParams) -> tuple[bytes | None, str | None]:
    """The encoded body and its Content-Type (the step's headers may set another)."""
    if params.json_ is not None:
        return json.dumps(params.json_).encode(), "application/json"
    if params.form is not None:
        return urlencode(_pairs(params.form)).encode("ascii"), "application/x-www-form-urlencoded"
    if params.body is not None:
        return params.body.encode(), "text/plain; charset=utf-8"
    return None, None


def _pairs(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Form or query fields as pairs; a list repeats its name."""
    return [(name, _field_text(v)) for name, value in values.items()
            for v in (value if isinstance(value, list) else [value])]


def _field_text(value: Any) -> str:
    # Rule files are YAML/JSON: true is "true" on the wire, not Python's "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value)


def _with_query(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(_pairs(params))) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _send(client: Client, request: _Request, timeout: float) -> Reply:
    """One hop; connection trouble becomes Retry, a refused address or a request that
    cannot be made becomes Fail. The client's messages carry neither URL nor header values."""
    try:
        return client.send(request.method, request.url, headers=request.headers, data=request.data, timeout=timeout)
    except Refused as exc:
        raise Fail(str(exc)) from None
    except InvalidRequest as exc:
        raise Fail(f"http: {request.describe()}: {exc}") from None
    except OutboundError as exc:
        raise Retry(f"http: {request.describe()}: {exc}") from None


def _redirected(request: _Request, status: int, location: str) -> _Request:
    """The next hop as browsers make it: 303 (and 301/302 after a POST) become a GET
    without a body; 307/308 keep method and body. A hop to another origin drops the
    request's credentials."""
    if any(ord(c) < 32 or ord(c) == 127 for c in location):
        raise Fail(f"http: {request.describe()}: redirected to a Location with control characters")
    url, userinfo = _split_userinfo(urljoin(request.url, location.strip()))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Fail(f"http: {request.describe()}: redirected to {safe_url(url)}, which is not an http(s) URL")
    headers, method, data = request.headers, request.method, request.data
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, data = "GET", None
        headers = _without(headers, "Content-Type")
    if _origin(request.url) != _origin(url):
        headers = {name: value for name, value in headers.items() if not _is_credential(name, value, request.secret)}
    if userinfo is not None and not any(name.lower() == "authorization" for name in headers):
        headers = {**headers, "Authorization": _basic(*userinfo)}
    return replace(request, method=method, url=url, headers=headers, data=data)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number: no origin is the same as it
        port = -1
    return parts.scheme, (parts.hostname or "").rstrip(".").lower(), port


def _decode(response: Reply) -> str:
    # Only a charset the response names counts; else UTF-8.
    charset = _charset(response.headers.get("content-type", ""))
    try:
        return response.body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return response.body.decode("utf-8", errors="replace")


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _parse_json(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _judge(request: _Request, response: Reply, text: str, expect: Iterable[int] | None) -> None:
    """Return when the status is expected; else raise Retry (5xx, 429) or Fail."""
    status = response.status
    if (status in expect) if expect is not None else 200 <= status < 300:
        return
    message = f"http: {request.describe()} returned {status} {response.reason or ''}".rstrip() + _excerpt(text)
    if status == 429 or status >= 500:
        raise Retry(message, after=retry_after(response.headers.get("retry-after")))
    wanted = ", ".join(map(str, expect)) if expect is not None else "2xx"
    hint = "; it is a redirect: set follow_redirects to follow it" if status in _REDIRECTS else ""
    raise Fail(f"{message} (expected {wanted}{hint})")


def _excerpt(text: str) -> str:
    flat = " ".join(text[: _EXCERPT * 2].split())
    if not flat:
        return ""
    return f": {flat[:_EXCERPT]}{'…' if len(flat) > _EXCERPT or len(text) > _EXCERPT * 2 else ''}"


__all__ = [
    "MAX_BODY", "MAX_REDIRECTS", "Guard", "HttpAction", "HttpParams", "USER_AGENT",
    "refusal_reason", "retry_after",
]
