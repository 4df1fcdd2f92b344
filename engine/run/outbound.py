"""The one HTTP client for every call hookwise makes to the outside world: the http action,
the Hover API client and ``hookwise send``. It is built on requests (and so urllib3 and
http.client): nothing here writes or parses HTTP itself.

- A ``requests.Session`` per thread (requests does not promise that one Session is safe to
  share between threads), each with ``trust_env`` off: no proxy, netrc or CA bundle from
  the environment. Connections are kept alive and reused per host. A request is prepared
  by requests' PreparedRequest and handed to the session's adapter (requests' HTTPAdapter
  on urllib3 pools), skipping what Session.send adds that is never used here: proxies,
  hooks, cookies, redirects (a tenth of a call's CPU).
- Redirects are never followed here: a caller that follows them does so hop by hop, so
  each hop meets its own checks (see ``actions/http.py``).
- Retries are never made here: a request the server may have received is not sent again
  behind the caller's back (a POST on a keep-alive connection the server just closed
  fails, and the caller records that attempt).
- A response body is read up to ``max_body`` bytes (decoded); the rest is not read and
  the connection is dropped.
- Responses are held to CRLF line ends and NUL-free lines in the status line, the header
  section and the chunked framing (http.client would accept a bare LF or a NUL there);
  status codes outside 100-999 are refused by http.client itself.
- A caller may give its own ``connect`` (host, port, timeout) -> socket for new
  connections: the SSRF guard of the http action uses it to check addresses before and
  after connecting. It runs before TLS and before any byte is sent.

Errors (their text carries neither URL nor header value):

    OutboundError     the exchange failed; another attempt later may work
    InvalidRequest    the request cannot be made as given
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

#: Largest response body kept by default; the rest is not read (``truncated`` is then true).
MAX_BODY = 1024 * 1024

#: Distinct URLs whose prepared form is kept (all are forgotten when there are more).
MAX_URLS = 1024
#: No proxy, ever: ``trust_env`` is off and none is configured.
_NO_PROXIES: dict[str, str] = {}

#: Opens a new connection: (host as in the URL, port, timeout) -> a connected socket.
Connect = Callable[[str, int, "float | None"], socket.socket]


def _version() -> str:
    try:
        return metadata.version("hookwise")
    except metadata.PackageNotFoundError:
        return "unknown"


USER_AGENT = f"hookwise/{_version()}"


class OutboundError(Exception):
    """The exchange failed; another attempt later may work."""


class InvalidRequest(Exception):
    """The request cannot be made as given."""


@dataclass(frozen=True)
class Reply:
    """A whole response. ``headers`` has lower-case names, a repeated field's values
    joined with ", "; ``body`` is decoded (gzip, deflate) and at most ``max_body`` bytes,
    ``truncated`` true when there was more."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    truncated: bool


class Client:
    """Sends requests; safe to share between threads (each thread gets its own Session).
    ``connect`` replaces how new connections are opened (see the module docstring);
    ``pool_size`` is how many hosts keep idle connections per thread."""

    def __init__(self, *, connect: Connect | None = None, max_body: int = MAX_BODY, pool_size: int = 32) -> None:
        self._adapter_args = (connect, pool_size)
        self._max_body = max_body
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._closed = False
        self._tls: ssl.SSLContext | None = None
        self._urls: dict[str, str] = {}  # a URL as given -> as requests prepares it

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        """One request and its (capped) response; redirects are returned, not followed.
        ``timeout`` bounds the connect and each wait for bytes. Raises
        :class:`OutboundError`, :class:`InvalidRequest`, or what ``connect`` raises."""
        session = self._session()
        try:
            request = self._prepare(method, url, headers, data)
            # The session's adapter, sent to directly: Session.send would look proxies up,
            # run hooks, time the call and offer the cookies to a jar that keeps none.
            adapter = session.get_adapter(request.url or "")
            response = adapter.send(request, stream=True, timeout=(timeout, timeout), proxies=_NO_PROXIES)
        except requests.exceptions.ConnectTimeout:
            raise OutboundError(f"timed out after {timeout:g}s connecting") from None
        except requests.exceptions.Timeout:
            raise OutboundError(f"timed out after {timeout:g}s waiting for the response") from None
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidHeader,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            http.client.InvalidURL,
            UnicodeError,
            ValueError,
        ) as exc:
            raise InvalidRequest(_request_problem(exc)) from None
        except requests.exceptions.RequestException as exc:
            raise OutboundError(_reason(exc)) from None
        with response:
            body, truncated = self._read(response, timeout)
        return Reply(response.status_code, response.reason or "", _headers(response.raw.headers), body, truncated)

    def _prepare(
        self, method: str, url: str, headers: Mapping[str, str] | None, data: bytes | None
    ) -> requests.PreparedRequest:
        """The request as requests prepares it, without what would be merged in from the
        session (cookies, environment, its headers: there are none), and with the URL
        prepared once per distinct URL: a step calls the same URL again and again."""
        request = requests.PreparedRequest()
        request.prepare_method(method)
        prepared = self._urls.get(url)
        if prepared is None:
            request.prepare_url(url, None)
            if len(self._urls) >= MAX_URLS:
                self._urls.clear()
            self._urls[url] = request.url or ""
        else:
            request.url = prepared
        request.prepare_headers({"User-Agent": USER_AGENT, **(headers or {})})
        request.prepare_body(data, None)
        if "@" in url:  # userinfo becomes Basic auth, as requests does
            request.prepare_auth(None, url)
        return request

    def close(self) -> None:
        """Close every thread's connections; the client must not be used afterwards."""
        with self._lock:
            sessions, self._sessions, self._closed = self._sessions, [], True
        for session in sessions:
            session.close()

    def _session(self) -> requests.Session:
        if self._closed:  # a thread's own Session would still work: the client is closed for all
            raise OutboundError("the client is closed")
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = _Session()
            session.trust_env = False
            session.headers.clear()  # not requests' own User-Agent, Accept, Accept-Encoding
            session.headers["User-Agent"] = USER_AGENT
            session.cookies = _NoCookies()
            adapter = _Adapter(*self._adapter_args, self._tls_context())
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            with self._lock:
                if self._closed:
                    raise OutboundError("the client is closed")
                self._sessions.append(session)
        return session

    def _tls_context(self) -> ssl.SSLContext:
        """The system's trust store (and SSL_CERT_FILE, as OpenSSL reads it), to which
        requests adds its own CA bundle; made once per client (it costs milliseconds)."""
        with self._lock:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            return self._tls

    def _read(self, response: requests.Response, timeout: float) -> tuple[bytes, bool]:
        """The body up to ``max_body`` bytes (decoded); true when there was more. A body
        read to its end leaves the connection to the pool; a cut one closes it."""
        try:
            body: bytes = response.raw.read(self._max_body + 1, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError:
            raise OutboundError(f"timed out after {timeout:g}s reading the response body") from None
        except urllib3.exceptions.DecodeError as exc:
            raise OutboundError(f"the response body is not valid: {_reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:  # ProtocolError, a reset
            reason = _reason(exc)
            if reason.startswith("the response is not valid HTTP"):
                raise OutboundError(reason) from None
            raise OutboundError(f"the response body broke off: {reason}") from None
        if len(body) > self._max_body:
            response.raw.close()  # the rest stays unread: the connection cannot be reused
            return body[: self._max_body], True
        return body, False


class _NoCookies(requests.cookies.RequestsCookieJar):
    """A jar that keeps nothing: one rule's calls never carry another's cookies (and no
    Set-Cookie is parsed for nothing)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def add_cookie_header(self, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any, *args: Any, **kwargs: Any) -> None:
        pass


class _Session(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> None:
        # Redirects are the caller's, hop by hop. (With a target, requests would read the
        # redirect's whole body, uncapped, even with allow_redirects off.)
        return None


def _headers(raw: Any) -> dict[str, str]:
    """Lower-case names; a repeated field's values joined with ", "."""
    out: dict[str, str] = {}
    for name, value in raw.items():
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _request_problem(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return "a header name or value cannot be sent (a line break, a NUL or a leading space)"
    if isinstance(exc, UnicodeError):
        return "the URL's host is not a valid name"
    return "the URL cannot be called: its host or port is not valid"


def _reason(exc: BaseException) -> str:
    """The deepest cause's words, without URLs or object reprs: ``Connection refused``,
    ``the response is not valid HTTP: ...``."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, _NotHttp):
            return f"the response is not valid HTTP: {cause}"
        if isinstance(
            cause, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.IncompleteRead)
        ):
            return "the server closed the connection"
        if isinstance(cause, http.client.BadStatusLine):
            return "the response is not valid HTTP: a bad status line"
        if isinstance(cause, http.client.HTTPException) and not isinstance(cause, http.client.IncompleteRead):
            return f"the response is not valid HTTP: {type(cause).__name__}"
        if isinstance(cause, ConnectionRefusedError):
            return "cannot connect: Connection refused"
        if isinstance(cause, socket.gaierror):
            return "cannot connect: the host name does not resolve"
        if isinstance(cause, TimeoutError) or (
            isinstance(cause, ConnectTimeoutError) and not isinstance(cause, NewConnectionError)
        ):
            return "timed out connecting"
        if isinstance(cause, OSError) and cause.strerror and not isinstance(cause, NewConnectionError):
            return f"cannot connect: {cause.strerror}" if cause.errno else str(cause.strerror)
        cause = cause.__cause__ or cause.__context__ or _wrapped(cause)
    return type(exc).__name__


def _wrapped(exc: BaseException) -> BaseException | None:
    """urllib3's MaxRetryError and requests' errors keep their cause in an argument."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        return reason
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], BaseException) else None


# -- the strict reading of a response's lines ----------------------------------------------


class _NotHttp(http.client.HTTPException):
    """A line of the response's head or chunked framing that is not valid HTTP."""


class _Lines:
    """The socket file of one response, refusing a head or chunk line that does not end in
    CRLF or that holds a NUL. Only ``readline`` is checked: bodies are read with ``read``."""

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self.read = fp.read
        self.readinto = fp.readinto

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._fp.readline(limit)
        if line and (limit < 0 or len(line) < limit):  # a longer line is http.client's to refuse
            if not line.endswith(b"\r\n"):
                raise _NotHttp("a line does not end in CRLF" if line.endswith(b"\n") else "it breaks off in a line")
            if b"\0" in line:
                raise _NotHttp("a line holds a NUL byte")
            if b"\r" in line[:-2]:  # a lone CR would end a header for http.client's parser
                raise _NotHttp("a line holds a lone CR")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _StrictResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = _Lines(self.fp)  # type: ignore[assignment]

    def _read_status(self) -> tuple[str, int, str]:
        # http.client passes over 100 Continue by itself and would take any other interim
        # answer (103 Early Hints) for the final one: every 1xx but 101 is interim.
        version, status, reason = super()._read_status()  # type: ignore[misc]
        while 102 <= status < 200:
            http.client.parse_headers(self.fp)  # its header section, dropped
            version, status, reason = super()._read_status()  # type: ignore[misc]
        return version, status, reason


def _connection_classes(connect: Connect | None) -> tuple[type[HTTPConnection], type[HTTPSConnection]]:
    """urllib3's connections with the strict response and, when given, ``connect``."""

    def new_conn(self: HTTPConnection) -> socket.socket:
        assert connect is not None
        try:
            sock = connect(self._dns_host, self.port, self.timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"timed out connecting (connect timeout={self.timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"cannot connect: {exc}") from exc
        for option in self.socket_options or ():
            sock.setsockopt(*option)
        return sock

    body: dict[str, Any] = {"response_class": _StrictResponse}
    if connect is not None:
        body["_new_conn"] = new_conn
    return type("Connection", (HTTPConnection,), body), type("TLSConnection", (HTTPSConnection,), dict(body))


class _Adapter(HTTPAdapter):
    """requests' adapter on pools of our connection classes; no retries (``max_retries``
    0: a request is sent once per call)."""

    def __init__(self, connect: Connect | None, pool_size: int, tls: ssl.SSLContext) -> None:
        self._tls = tls
        plain, tls_class = _connection_classes(connect)
        self._pools = {
            "http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("TLSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls_class}),
        }
        super().__init__(pool_connections=pool_size, pool_maxsize=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("ssl_context", self._tls)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    # requests' own versions of the next three look up proxies (parsing the URL twice), read
    # the response's headers into a dict and offer its cookies to a jar: none of it is used.

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        except ValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from None
        pool: HTTPConnectionPool = self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        return pool

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return request.path_url

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response.reason, response.raw = resp.status, resp.reason, resp
        response.url, response.request, response.connection = req.url or "", req, self
        return response


__all__ = ["Client", "Connect", "InvalidRequest", "MAX_BODY", "OutboundError", "Reply", "USER_AGENT"]
