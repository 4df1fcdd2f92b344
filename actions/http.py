"""The ``http`` action: call a URL, behind the SSRF guard of SPEC 11.

Outcomes of one attempt:

    expected status (``expect``, else any 2xx)   -> {status, headers, json, text, truncated}
    connection error, timeout, 5xx, 429          -> Retry (after = Retry-After, when given)
    any other status, a refused address,
    a bad redirect, more than 10 redirects       -> Fail

The guard: a connection to a private, loopback, link-local, multicast, reserved,
unspecified or cloud metadata address is refused unless ``http.allow_private`` is true or
the URL's host is in ``http.allow_hosts``. The address checked is the one the socket is
actually connected to (``getpeername()`` inside urllib3's connection, before TLS and before
any byte is sent), so a DNS answer that changes between a check and the connect cannot
slip through; an IP-literal host is also checked before connecting, so nothing is sent
towards a metadata address at all. Redirects are followed here, hop by hop, so every hop
meets the guard. Proxies from the environment are ignored (the guard would otherwise check
the proxy, not the target).

This is the only module that imports ``urllib3`` (the HTTP client under requests; used
directly, it costs a third of the CPU per call).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import urllib3
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from urllib3._collections import HTTPHeaderDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError, ProxyError, SSLError, TimeoutError
from urllib3.exceptions import ConnectTimeoutError
from urllib3.response import BaseHTTPResponse

from engine.action import Action, Context
from engine.config import Http
from engine.errors import ConfigError, Fail, Problem, Retry
from engine.runs import retry_after
from engine.units import Duration
from engine.validation import key_error

from ._params import Headers, QueryParams, at_most_one, one_or_many, upper

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
    """The guard refused a connection; raised inside urllib3, turned into Fail by run()."""

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


class _GuardedConnection(HTTPConnection):
    """Checks the address right after the TCP connect. ``HTTPSConnection.connect`` also
    gets its socket from ``_new_conn`` and only then starts TLS, so one override covers
    both schemes."""

    guard: ClassVar[Guard]

    def _new_conn(self) -> socket.socket:
        self.guard.before_connect(self.host, self.port)
        sock = super()._new_conn()
        self.guard.after_connect(self.host, self.port, sock)
        return sock


def _pool_classes(guard: Guard) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections carry ``guard``.

    Classes, not instance arguments: urllib3's PoolManager keys its pools by a fixed set
    of connection arguments and refuses unknown ones."""
    plain = type("GuardedHTTPConnection", (_GuardedConnection,), {"guard": guard})
    tls = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), {"guard": guard})
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
    }


def _pool_manager(guard: Guard, maxsize: int) -> urllib3.PoolManager:
    """A urllib3 pool manager whose every new connection passes ``guard``: no retries of
    its own (the step's retry policy decides), no proxies, no cookies. Safe to share
    between threads; ``maxsize`` connections are kept per host."""
    manager = urllib3.PoolManager(num_pools=64, maxsize=maxsize, retries=False)
    manager.pool_classes_by_scheme = _pool_classes(guard)  # type: ignore[assignment]
    return manager


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
    headers: HTTPHeaderDict
    data: bytes | None

    def describe(self) -> str:
        return f"{self.method} {safe_url(self.url)}"


class HttpAction(Action):
    """Calls a URL and returns ``{status, headers, json, text, truncated}``.

    ``headers`` has lower-case names; ``json`` is the body parsed as JSON (whatever the
    Content-Type) or None; ``text`` is the body decoded with the charset the response
    names, else UTF-8; a body over 1 MiB is cut there, ``truncated`` is then true and
    ``json`` None. Sends ``Idempotency-Key: <ctx.idempotency_key>`` unless the step's
    headers set it, and ``User-Agent: hookwise/<version>`` unless they set that.

    Connections are kept per host and reused across steps and threads; no cookies are
    kept, so one rule's calls never carry another's. :meth:`close` releases them."""

    name = "http"
    Params = HttpParams

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        http: Http = settings.http if settings is not None else Http()
        self._timeout = http.timeout
        concurrency = settings.workers.concurrency if settings is not None else 16
        self._pool = _pool_manager(Guard.from_settings(http), maxsize=concurrency)

    def run(self, params: BaseModel, ctx: Context) -> dict[str, Any]:
        assert isinstance(params, HttpParams)
        timeout = params.timeout or self._timeout
        request = _first_request(params, ctx.idempotency_key)
        response, request = self._follow(request, params.follow_redirects, timeout)
        body, truncated = _read_capped(response, request, time.monotonic() + timeout)
        text = _decode(body, response)
        _judge(request, response, text, params.expect)
        return {
            "status": response.status,
            "headers": {name.lower(): value for name, value in response.headers.items()},
            "json": None if truncated else _parse_json(text),
            "text": text,
            "truncated": truncated,
        }

    def close(self) -> None:
        """Close the pooled connections. Call it when the action is retired (shutdown,
        reload); it must not be used afterwards."""
        self._pool.clear()

    def _follow(self, request: _Request, follow: bool, timeout: float) -> tuple[BaseHTTPResponse, _Request]:
        """The final response and the request that got it, following at most
        MAX_REDIRECTS redirects when ``follow`` is true (each hop goes through the guard)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = _send(self._pool, request, timeout)
            location = response.headers.get("location")
            if not follow or response.status not in _REDIRECTS or not location:
                return response, request
            response.drain_conn()
            response.release_conn()
            request = _redirected(request, response.status, location)
        raise Fail(f"http: {request.describe()}: stopped after {MAX_REDIRECTS} redirects")


def _first_request(params: HttpParams, idempotency_key: str) -> _Request:
    headers = HTTPHeaderDict(params.headers or {})
    headers.setdefault("Idempotency-Key", idempotency_key)
    headers.setdefault("User-Agent", USER_AGENT)
    if params.auth is not None:
        headers["Authorization"] = _authorization(params.auth)
    data = _body(params, headers)
    return _Request(params.method, _with_query(params.url, params.params), headers, data)


def _authorization(auth: Auth) -> str:
    if auth.basic is not None:
        user, password = auth.basic
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Bearer {auth.bearer}"


def _body(params: HttpParams, headers: HTTPHeaderDict) -> bytes | None:
    """The encoded body; sets a Content-Type unless the step's headers give one."""
    if params.json_ is not None:
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(params.json_).encode()
    if params.form is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return urlencode(_pairs(params.form)).encode("ascii")
    if params.body is not None:
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return params.body.encode()
    return None


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


def _send(pool: urllib3.PoolManager, request: _Request, timeout: float) -> BaseHTTPResponse:
    """One hop; connection trouble becomes Retry, a refused address or a request that
    cannot be made becomes Fail. Causes are dropped (``from None``): their text may
    carry the URL's query string."""
    try:
        return pool.request(
            request.method, request.url, body=request.data, headers=request.headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout), redirect=False, preload_content=False,
        )
    except _Refused as exc:
        raise Fail(str(exc)) from None
    except NewConnectionError as exc:  # before the timeouts: it is one of them for urllib3
        raise Retry(f"http: {request.describe()}: cannot connect: {_reason(exc)}") from None
    except TimeoutError as exc:
        phase = "connecting" if isinstance(exc, ConnectTimeoutError) else "waiting for the response"
        raise Retry(f"http: {request.describe()}: timed out after {timeout:g}s {phase}") from None
    except (ProtocolError, SSLError, ProxyError, OSError) as exc:
        raise Retry(f"http: {request.describe()}: cannot connect: {_reason(exc)}") from None
    except HTTPError as exc:
        raise Fail(f"http: {request.describe()}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The innermost cause of a urllib3 error, e.g. ``Connection refused``:
    their outer messages repeat the pool, the path and the query."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None) or exc.__cause__ or (exc.args[0] if exc.args else None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _redirected(request: _Request, status: int, location: str) -> _Request:
    """The next hop as browsers make it: 303 (and 301/302 after a POST) become a GET
    without a body; 307/308 keep method and body. Authorization is dropped when the host
    changes or the scheme drops from https to http."""
    url = urljoin(request.url, location)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise Fail(f"http: {request.describe()}: redirected to {safe_url(url)}, which is not an http(s) URL")
    headers = HTTPHeaderDict(request.headers)
    method, data = request.method, request.data
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, data = "GET", None
        headers.pop("Content-Type", None)
    if _leaves_origin(request.url, url):
        headers.pop("Authorization", None)
    return _Request(method, url, headers, data)


def _leaves_origin(old: str, new: str) -> bool:
    a, b = urlsplit(old), urlsplit(new)
    return a.hostname != b.hostname or (a.scheme == "https" and b.scheme == "http")


def _read_capped(response: BaseHTTPResponse, request: _Request, deadline: float) -> tuple[bytes, bool]:
    """At most MAX_BODY bytes of the body, and whether there was more. The read timeout
    bounds each read; ``deadline`` bounds them all (a server dripping bytes). The
    connection goes back to the pool only when the body was read to its end."""
    body = bytearray()
    complete = False
    try:
        for chunk in response.stream(64 * 1024):
            body += chunk
            if len(body) > MAX_BODY:
                return bytes(body[:MAX_BODY]), True
            if time.monotonic() > deadline:
                raise Retry(f"http: {request.describe()}: timed out reading the response body")
        complete = True
    except (HTTPError, OSError) as exc:
        raise Retry(f"http: {request.describe()}: the response body broke off: {_reason(exc)}") from None
    finally:
        if not complete:
            response.close()
        response.release_conn()
    return bytes(body), False


def _decode(body: bytes, response: BaseHTTPResponse) -> str:
    # Only a charset the response names counts; else UTF-8.
    charset = _charset(response.headers.get("content-type", ""))
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


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


def _judge(request: _Request, response: BaseHTTPResponse, text: str, expect: Iterable[int] | None) -> None:
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
