"""The ``http`` action: call a URL, behind the SSRF guard of SPEC 11.

Outcomes of one attempt:

    expected status (``expect``, else any 2xx)   -> {status, headers, json, text, truncated}
    connection error, timeout, a response that
    is not valid HTTP or breaks off, 5xx, 429    -> Retry (after = Retry-After, when given)
    any other status, a refused address, a
    header with a line break, a bad redirect,
    more than 10 redirects                       -> Fail

The guard: a connection to a private, loopback, link-local, multicast, reserved,
unspecified or cloud metadata address is refused unless ``http.allow_private`` is true or
the URL's host is in ``http.allow_hosts``. The address checked is the one the socket is
actually connected to (``getpeername()`` right after the connect, before TLS and before
any byte is sent), so a DNS answer that changes between a check and the connect cannot
slip through; an IP-literal host is also checked before connecting, so nothing is sent
towards a metadata address at all. Redirects are followed here, hop by hop, so every hop
meets the guard. Proxies from the environment are ignored (the guard would otherwise check
the proxy, not the target).

The calls themselves go through :mod:`actions.wire`, our HTTP/1.1 client on plain
sockets (a general client costs several times the CPU per call).
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.action import Action, Context
from engine.config import Http
from engine.errors import ConfigError, Fail, Problem, Retry
from engine.runs import retry_after
from engine.units import Duration
from engine.validation import key_error

from ._params import Headers, QueryParams, at_most_one, one_or_many, upper
from .wire import InvalidRequest, Pool, Response, WireError

Method = Annotated[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], BeforeValidator(upper)]
Status = Annotated[int, Field(ge=100, le=599)]
Expect = Annotated[list[Status], BeforeValidator(one_or_many, json_schema_input_type=Status | list[Status])]
IPAddress = IPv4Address | IPv6Address

#: Largest response body kept; the rest is not read (``truncated`` is then true).
MAX_BODY = 1024 * 1024
#: Redirects followed at most when ``follow_redirects`` is true.
MAX_REDIRECTS = 10
_EXCERPT = 200  # characters of a response body quoted in a failure message
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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


# -- the SSRF guard ------------------------------------------------------------------------

_METADATA = frozenset(ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
_NAT64 = ip_network("64:ff9b::/96")
_CLASSES = (
    ("is_unspecified", "an unspecified address"),
    ("is_loopback", "a loopback address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)


def refusal_reason(address: IPAddress) -> str | None:
    """Why the guard refuses ``address`` (``"a loopback address"``, ...), or None for a
    public address. An IPv4 address embedded in IPv6 (mapped, 6to4, NAT64) is judged as
    the IPv4 address it reaches."""
    ip = _embedded_ipv4(address)
    if ip in _METADATA:
        return "a cloud metadata address"
    for attr, reason in _CLASSES:
        if getattr(ip, attr):
            return reason
    # What is left and still not global is e.g. 100.64.0.0/10, the carrier-grade NAT space.
    return None if ip.is_global else "a non-public address"


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _parse_ip(host: str) -> IPAddress | None:
    """``host`` as an address when it is an IP literal (brackets and a zone id allowed)."""
    try:
        return ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None


def _norm_host(host: str) -> str:
    ip = _parse_ip(host)
    return str(ip) if ip is not None else host.strip("[]").rstrip(".").lower()


class _Refused(Exception):
    """The guard refused a connection; raised inside the pool, turned into Fail by run()."""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        shown = str(address) if _parse_ip(host) == address else f"{host} at {address}"
        super().__init__(
            f"http: refusing to connect to {shown} ({reason}); "
            "set http.allow_private or add the host to http.allow_hosts"
        )


@dataclass(frozen=True)
class Guard:
    """Which connections the http action may make (SPEC 11).

    ``allow_hosts`` entries are ``host`` (any port) or ``host:port`` (that port only;
    ``[v6]:port`` for IPv6), matched exactly and case-insensitively against the URL's host
    of each hop, never against what it resolves to. An allowed host skips the address
    check entirely."""

    allow_private: bool = False
    allow_hosts: frozenset[tuple[str, int | None]] = frozenset()

    @classmethod
    def from_settings(cls, http: Http) -> Guard:
        """The guard of ``settings.http``; raises :class:`ConfigError` for an entry of
        ``allow_hosts`` that is neither ``host`` nor ``host:port``."""
        entries = frozenset(_host_entry(e, i) for i, e in enumerate(http.allow_hosts))
        return cls(http.allow_private, entries)

    def allows_host(self, host: str, port: int) -> bool:
        host = _norm_host(host)
        return (host, None) in self.allow_hosts or (host, port) in self.allow_hosts

    def before_connect(self, host: str, port: int) -> None:
        """Refuse an IP-literal host at once, so no packet goes towards it."""
        address = _parse_ip(host)
        if address is not None:
            self._check(host, port, address)

    def after_connect(self, host: str, port: int, sock: socket.socket) -> None:
        """Refuse the peer ``sock`` is connected to (closing it); nothing was sent yet."""
        address = _parse_ip(str(sock.getpeername()[0]))
        try:
            if address is not None:
                self._check(host, port, address)
        except _Refused:
            sock.close()
            raise

    def _check(self, host: str, port: int, address: IPAddress) -> None:
        if self.allow_private or self.allows_host(host, port):
            return
        reason = refusal_reason(address)
        if reason is not None:
            raise _Refused(host, address, reason)


def _host_entry(entry: str, index: int) -> tuple[str, int | None]:
    if _parse_ip(entry) is not None:  # "10.0.0.5", "::1", "[::1]": no port
        return _norm_host(entry), None
    try:
        parts = urlsplit("//" + entry.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host = None
    if not host or parts.username is not None or parts.path:
        raise ConfigError([Problem(f"{entry!r} is not a host or host:port", ("http", "allow_hosts", index))])
    return _norm_host(host), port


# -- one call --------------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("hookwise")
    except metadata.PackageNotFoundError:
        return "unknown"


USER_AGENT = f"hookwise/{_version()}"


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None

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

    Connections are kept per host and reused across steps and threads; no cookies are
    kept, so one rule's calls never carry another's. :meth:`close` releases them."""

    name = "http"
    Params = HttpParams

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        http: Http = settings.http if settings is not None else Http()
        self._timeout = http.timeout
        # As many idle connections per host as steps can run at once.
        concurrency = settings.workers.concurrency if settings is not None else 16
        self._pool = Pool(Guard.from_settings(http), max_idle=concurrency, max_body=MAX_BODY)

    def run(self, params: BaseModel, ctx: Context) -> dict[str, Any]:
        assert isinstance(params, HttpParams)
        timeout = params.timeout or self._timeout
        request = _first_request(params, ctx.idempotency_key)
        response, request = self._follow(request, params.follow_redirects, timeout)
        text = _decode(response)
        _judge(request, response, text, params.expect)
        return {
            "status": response.status,
            "headers": response.headers,
            "json": None if response.truncated else _parse_json(text),
            "text": text,
            "truncated": response.truncated,
        }

    def close(self) -> None:
        """Close the pooled connections. Call it when the action is retired (shutdown,
        reload); it must not be used afterwards."""
        self._pool.close()

    def _follow(self, request: _Request, follow: bool, timeout: float) -> tuple[Response, _Request]:
        """The final response and the request that got it, following at most
        MAX_REDIRECTS redirects when ``follow`` is true (each hop goes through the guard)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = _send(self._pool, request, timeout)
            location = response.headers.get("location")
            if not follow or response.status not in _REDIRECTS or not location:
                return response, request
            request = _redirected(request, response.status, location)
        raise Fail(f"http: {request.describe()}: stopped after {MAX_REDIRECTS} redirects")


def _first_request(params: HttpParams, idempotency_key: str) -> _Request:
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
    headers = _with_defaults(params.headers or {}, defaults)
    if params.auth is not None:
        headers = _without(headers, "Authorization")
        headers["Authorization"] = _authorization(params.auth)
    return _Request(params.method, _with_query(params.url, params.params), headers, data)


def _with_defaults(given: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """``given`` and each default whose name it lacks (in any case)."""
    have = {name.lower() for name in given}
    return {**{name: value for name, value in defaults.items() if name.lower() not in have}, **given}


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    lower = name.lower()
    return {given: value for given, value in headers.items() if given.lower() != lower}


def _authorization(auth: Auth) -> str:
    if auth.basic is not None:
        user, password = auth.basic
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Bearer {auth.bearer}"


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
    return [(name, _field_text(v)) for name, value in values.items() for v in (value if isinstance(value, list) else [value])]


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


def _send(pool: Pool, request: _Request, timeout: float) -> Response:
    """One hop; connection trouble becomes Retry, a refused address or a request that
    cannot be made becomes Fail. The wire's messages carry neither URL nor header values."""
    try:
        return pool.request(request.method, request.url, request.headers, request.data, timeout)
    except _Refused as exc:
        raise Fail(str(exc)) from None
    except InvalidRequest as exc:
        raise Fail(f"http: {request.describe()}: {exc}") from None
    except WireError as exc:
        raise Retry(f"http: {request.describe()}: {exc}") from None


def _redirected(request: _Request, status: int, location: str) -> _Request:
    """The next hop as browsers make it: 303 (and 301/302 after a POST) become a GET
    without a body; 307/308 keep method and body. Authorization is dropped when the host
    changes or the scheme drops from https to http."""
    url = urljoin(request.url, location)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise Fail(f"http: {request.describe()}: redirected to {safe_url(url)}, which is not an http(s) URL")
    headers = request.headers
    method, data = request.method, request.data
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, data = "GET", None
        headers = _without(headers, "Content-Type")
    if _leaves_origin(request.url, url):
        headers = _without(headers, "Authorization")
    return _Request(method, url, headers, data)


def _leaves_origin(old: str, new: str) -> bool:
    a, b = urlsplit(old), urlsplit(new)
    return a.hostname != b.hostname or (a.scheme == "https" and b.scheme == "http")


def _decode(response: Response) -> str:
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


def _judge(request: _Request, response: Response, text: str, expect: Iterable[int] | None) -> None:
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


def safe_url(url: str) -> str:
    """``url`` fit for a message: userinfo and query string masked
    (``https://****@host/path?****``), the fragment dropped."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "****@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "****" if parts.query else "", ""))
