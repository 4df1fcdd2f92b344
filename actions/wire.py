"""HTTP/1.1 on plain sockets for the http action: connections kept per host and reused,
one request and its whole (capped) response per call.

Why our own: the action is the engine's busiest path, and a keep-alive POST on loopback
costs about 270 µs of CPU through urllib3 and 135 µs through http.client, against about
60 here, some 25 of which are the socket calls themselves (``python -m bench.httpclient``).
It does only what the action needs:

- one request, head and body in one ``sendall``; ``Host`` and ``Content-Length`` are
  ours (a caller's ``Host`` wins; a caller's ``Content-Length`` or ``Transfer-Encoding``
  is replaced: the body is always sent whole, with its length);
- the response framed as RFC 9112 says: no body for HEAD, 1xx, 204 and 304, else
  chunked, else Content-Length, else up to the close; interim 1xx responses are skipped
  (101 ends the exchange: the connection is no longer HTTP);
- ``Content-Encoding`` gzip and deflate decoded, any other kept as it came;
- the body cut at ``max_body`` bytes (decoded), the header section at 64 KiB and 100
  lines; the timeout bounds each wait for bytes, and the head and the body each as a
  whole (checked before each wait, so passed by at most one timeout);
- each new connection passes the guard twice: before connecting and on the address
  actually connected to, before TLS and before any byte is sent;
- a connection is reused only after a response read to its end, in HTTP/1.1, without
  ``Connection: close``; when a reused one fails before any byte of the response (or
  answers 408), the server closed it while idle: the request goes once more on a new
  connection. Liveness is not polled before reuse: that would cost a syscall per call.

Not done, on purpose: proxies, cookies, pipelining, ``Expect: 100-continue``, HTTP/2,
transfer codings other than chunked, a bare LF as a line end in a response (which RFC
9112 allows a recipient to accept), gzip bodies of several members (the first is kept).

Errors, for the action to translate (their text is fit for a message: no URL, no header
value):

    WireError         the exchange failed; another attempt later may work
    └── NoResponse    the connection failed before a byte of the response arrived
    InvalidRequest    the request cannot be written as given
"""

from __future__ import annotations

import re
import socket
import ssl
import string
import threading
import time
import zlib
from collections.abc import Mapping
from functools import cached_property, lru_cache
from typing import NamedTuple, Protocol
from urllib.parse import quote, urlsplit

#: Largest header section of a response (status line included).
MAX_HEAD = 64 * 1024
#: Most header lines in a response.
MAX_HEADER_LINES = 100
#: Most hosts with idle connections kept; the least recently used host's go first.
MAX_HOSTS = 64

_RECV = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_FOLD = re.compile(r"\r\n[ \t]+")
_VERSIONS = {"HTTP/1.1": 1, "HTTP/1.0": 0}  # the minor version: 1.0 closes after each response
_UNSENDABLE = re.compile(r"[\r\n\0]")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_INVALID = "the response is not valid HTTP"
_READING = "reading the response body"
_DECODED = frozenset({"gzip", "x-gzip", "deflate"})

Key = tuple[str, str, int]  # scheme, host, port


class WireError(Exception):
    """The exchange failed."""


class NoResponse(WireError):
    """The connection failed before a byte of the response arrived. On a reused
    connection this is most likely the server having closed it while it was idle."""


class InvalidRequest(Exception):
    """The request cannot be written as given."""


class ConnectGuard(Protocol):
    """What every new connection must pass. Either method raises to refuse; nothing has
    been sent when it does."""

    def before_connect(self, host: str, port: int) -> None: ...

    def after_connect(self, host: str, port: int, sock: socket.socket) -> None: ...


class Response(NamedTuple):
    """A whole response. ``headers`` has lower-case names, repeated fields joined with
    ", "; ``body`` is decoded and at most ``max_body`` bytes, ``truncated`` true when
    there was more. (A NamedTuple rather than a frozen dataclass: one is made per call,
    at a third of the cost.)"""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    truncated: bool


class Pool:
    """Makes requests over connections kept per (scheme, host, port). Safe to share
    between threads: a connection is used by one request at a time and comes back idle
    only when its response was read to the end and the server keeps it open; at most
    ``max_idle`` are kept per host."""

    def __init__(self, guard: ConnectGuard, *, max_idle: int, max_body: int) -> None:
        self._guard = guard
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: dict[Key, list[Connection]] = {}  # least recently used host first
        self._lock = threading.Lock()

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        # Made on the first https call (it costs tens of ms); two threads racing here
        # make two equal contexts, one of which is dropped.
        return ssl.create_default_context()

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float) -> Response:
        """Send the request and read its response; ``timeout`` (seconds) bounds the
        connect, each wait for bytes, and the body read as a whole. Raises
        :class:`WireError`, :class:`InvalidRequest`, or what the guard raises."""
        key, target, host = _address(url)
        data = _head(method, target, host, headers, body) + (body or b"")
        conn = self._take(key)
        if conn is not None:
            # The server may have closed a reused connection while it was idle, silently
            # or saying 408 (which then waited for us): once more on a new connection.
            try:
                response = self._exchange(conn, data, method, timeout)
                if response.status != 408:
                    return response
            except NoResponse:
                pass
        return self._exchange(self._connect(key, timeout), data, method, timeout)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back."""
        with self._lock:
            idle, self._idle, self._max_idle = self._idle, {}, 0
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _exchange(self, conn: Connection, data: bytes, method: str, timeout: float) -> Response:
        try:
            response, reusable = conn.exchange(data, method, timeout, self._max_body)
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._put(conn)
        else:
            conn.close()
        return response

    def _take(self, key: Key) -> Connection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None  # the most recently used: the likeliest open

    def _put(self, conn: Connection) -> None:
        with self._lock:
            # Moved to the end: the dict runs from the least to the most recently used host.
            idle = self._idle[conn.key] = self._idle.pop(conn.key, [])
            kept = len(idle) < self._max_idle
            if kept:
                idle.append(conn)
            evicted = self._idle.pop(next(iter(self._idle))) if len(self._idle) > MAX_HOSTS else []
        if not kept:
            conn.close()
        for old in evicted:
            old.close()

    def _connect(self, key: Key, timeout: float) -> Connection:
        scheme, host, port = key
        self._guard.before_connect(host, port)
        try:
            sock = socket.create_connection((host, port), timeout)
        except TimeoutError:
            raise WireError(f"timed out after {timeout:g}s connecting") from None
        except OSError as exc:
            raise WireError(f"cannot connect: {_reason(exc)}") from None
        self._guard.after_connect(host, port, sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls.wrap_socket(sock, server_hostname=host)
        except TimeoutError:
            sock.close()
            raise WireError(f"timed out after {timeout:g}s connecting") from None
        except OSError as exc:
            sock.close()
            raise WireError(f"cannot connect: {_reason(exc)}") from None
        return Connection(key, sock)


@lru_cache(maxsize=1024)  # a rule calls the same few URLs again and again
def _address(url: str) -> tuple[Key, str, str]:
    """The pool key, the request target and the Host header of ``url``. Userinfo and
    fragment are not sent; non-ASCII in the path or query is percent-encoded as UTF-8,
    a non-ASCII host name IDNA-encoded."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        wire_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):  # a port out of range or not a number; a bad name
        raise InvalidRequest("the URL's host or port is not valid") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not target.isascii():
        target = quote(target, safe=string.punctuation)
    if ":" in wire_host:
        wire_host = f"[{wire_host}]"
    if port != _DEFAULT_PORTS[parts.scheme]:
        wire_host += f":{port}"
    return (parts.scheme, host, port), target, wire_host


def _head(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request's head, refusing a header that would break it: a line break smuggles
    in another header or a body. (That names are tokens is the caller's to ensure; the
    action's params refuse a colon or a line break in them.)"""
    names = {name.lower() for name in headers}
    if not names.isdisjoint(_FRAMING):
        headers = {name: value for name, value in headers.items() if name.lower() not in _FRAMING}
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # Each field must stay one line; counted over all at once, as this runs for every call.
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers) or "\0" in fields:
        raise InvalidRequest(_bad_field(headers))
    if "host" not in names:
        fields = f"Host: {host}\r\n{fields}"
    if body is not None or method in _BODY_METHODS:
        fields += f"Content-Length: {len(body or b'')}\r\n"
    try:
        return f"{method} {target} HTTP/1.1\r\n{fields}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidRequest("a header holds a character outside Latin-1") from None


def _bad_field(headers: Mapping[str, str]) -> str:
    name = next(name for name, value in headers.items() if _UNSENDABLE.search(name + value))
    return f"header {name!r} contains a line break or NUL"


class Connection:
    """One HTTP/1.1 connection, used by one request at a time."""

    def __init__(self, key: Key, sock: socket.socket) -> None:
        self.key = key
        self._sock = sock
        self._timeout = sock.gettimeout() or 0.0
        self._deadline = 0.0  # of the part being read: the head, then the body
        self._buf = b""  # received, not yet consumed

    def close(self) -> None:
        self._sock.close()

    def exchange(self, data: bytes, method: str, timeout: float, max_body: int) -> tuple[Response, bool]:
        """Send ``data`` (a whole request) and read the response; returns it and whether
        the connection may carry another request."""
        if timeout != self._timeout:  # settimeout is a syscall: only when it changes
            self._sock.settimeout(timeout)
            self._timeout = timeout
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise WireError(f"timed out after {timeout:g}s sending the request") from None
        except OSError as exc:
            raise NoResponse(f"no response: {_reason(exc)}") from None
        self._deadline = time.monotonic() + timeout
        version, status, reason, headers = self._read_head(first=True)
        while 100 <= status < 200 and status != 101:
            version, status, reason, headers = self._read_head(first=False)
        body = _Body(max_body, headers.get("content-encoding"))
        whole = method == "HEAD" or status < 200 or status in (204, 304) or self._read_body(headers, body)
        keep = whole and not body.truncated and version >= 1 and status != 101 and not self._buf and not _closes(headers)
        return Response(status, reason, headers, body.value(), body.truncated), keep

    # -- reading -------------------------------------------------------------------------

    def _recv(self, phase: str) -> bytes:
        """The next bytes (b"" once the peer closed). The deadline is checked before each
        wait, so it is passed by at most one timeout."""
        if time.monotonic() > self._deadline:
            raise WireError(f"timed out after {self._timeout:g}s {phase}")
        try:
            return self._sock.recv(_RECV)
        except TimeoutError:
            raise WireError(f"timed out after {self._timeout:g}s {phase}") from None

    def _read_head(self, first: bool) -> tuple[int, int, str, dict[str, str]]:
        """(HTTP minor version, status, reason, headers) of the next response head."""
        start = 0
        while (end := self._buf.find(b"\r\n\r\n", start)) < 0:
            if len(self._buf) > MAX_HEAD:
                raise WireError(f"{_INVALID}: its header section is over 64 KiB")
            start = max(0, len(self._buf) - 3)
            try:
                data = self._recv("waiting for the response")
            except OSError as exc:
                raise self._broken(_reason(exc), first) from None
            if not data:
                raise self._broken("the server closed the connection", first)
            self._buf += data
        if end > MAX_HEAD:
            raise WireError(f"{_INVALID}: its header section is over 64 KiB")
        head, self._buf = self._buf[:end], self._buf[end + 4 :]
        return _parse_head(head.decode("latin-1"))

    def _broken(self, reason: str, first: bool) -> WireError:
        if first and not self._buf:
            return NoResponse(f"no response: {reason}")
        return WireError(f"the response broke off: {reason}")

    def _read_body(self, headers: dict[str, str], body: _Body) -> bool:
        """Read the body into ``body`` as RFC 9112 6.3 frames it; true when it was read
        to its end by its framing (not by the close, not cut)."""
        self._deadline = time.monotonic() + self._timeout
        coding = headers.get("transfer-encoding")
        try:
            if coding is None and "content-length" in headers:
                return self._exact(_content_length(headers["content-length"]), body)
            if coding is not None and coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                # With both framings the length is a lie told to someone: do not reuse.
                return self._chunked(body) and "content-length" not in headers
            self._to_close(body)
            return False
        except OSError as exc:
            raise WireError(f"the response body broke off: {_reason(exc)}") from None
        except zlib.error:
            raise WireError(f"the response body is not valid {headers['content-encoding']}") from None

    def _more(self) -> bytes:
        data = self._recv(_READING)
        if not data:
            raise WireError("the response body broke off: the server closed the connection")
        return data

    def _exact(self, size: int, body: _Body) -> bool:
        """Pass the next ``size`` bytes to ``body``; false when it filled up first."""
        while size:
            if not self._buf:
                self._buf = self._more()
            piece, self._buf = self._buf[:size], self._buf[size:]
            size -= len(piece)
            if not body.add(piece):
                return False
        return True

    def _line(self) -> bytes:
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0:
            if len(self._buf) > MAX_HEAD:
                raise WireError(f"{_INVALID}: a line of its chunked body is over 64 KiB")
            start = len(self._buf)
            self._buf += self._more()
        line, self._buf = self._buf[:end], self._buf[end + 1 :]
        return line.rstrip(b"\r")

    def _chunked(self, body: _Body) -> bool:
        while size := _chunk_size(self._line()):
            if not self._exact(size, body):
                return False
            if self._line():
                raise WireError(f"{_INVALID}: a chunk is longer than its size says")
        for _ in range(MAX_HEADER_LINES + 1):  # the trailer section, ignored
            if not self._line():
                return True
        raise WireError(f"{_INVALID}: more than {MAX_HEADER_LINES} trailer lines")

    def _to_close(self, body: _Body) -> None:
        data, self._buf = self._buf, b""
        while not data or body.add(data):
            data = self._recv(_READING)
            if not data:
                return


class _Body:
    """The body as the caller gets it: decoded (gzip, deflate) and cut at ``cap`` bytes."""

    def __init__(self, cap: int, coding: str | None) -> None:
        self.truncated = False
        self._room = cap
        self._parts: list[bytes] = []
        self._coding = coding and coding.strip().lower()
        self._inflate: zlib._Decompress | None = None

    def add(self, data: bytes) -> bool:
        """Take the next bytes received; false once the cap is passed (stop reading)."""
        if self._coding in _DECODED:
            data = self._inflated(data)
        if len(data) > self._room:
            data, self.truncated = data[: self._room], True
        self._parts.append(data)
        self._room -= len(data)
        return not self.truncated

    def value(self) -> bytes:
        return b"".join(self._parts)

    def _inflated(self, data: bytes) -> bytes:
        if self._inflate is None:
            # "deflate" is meant to be zlib-wrapped; some servers send it raw.
            raw = self._coding == "deflate" and not _zlib_header(data)
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS | 32)
        # At most one byte past the room: enough to know there is more, and a small
        # compressed body cannot blow up in memory. (Input is left over only then.)
        return self._inflate.decompress(data, self._room + 1)


def _zlib_header(data: bytes) -> bool:
    return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def _parse_head(head: str) -> tuple[int, int, str, dict[str, str]]:
    """Status line and header fields."""
    if "\r\n " in head or "\r\n\t" in head:  # obsolete line folding: one value, on
        head = _FOLD.sub(" ", head)
    status_line, *lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    status, _, reason = rest.partition(" ")
    minor = _VERSIONS.get(version)
    if minor is None or len(status) != 3 or not (status.isascii() and status.isdigit()):
        raise WireError(f"{_INVALID}: it starts with {status_line[:40]!r}")
    if len(lines) > MAX_HEADER_LINES:
        raise WireError(f"{_INVALID}: it has more than {MAX_HEADER_LINES} header lines")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise WireError(f"{_INVALID}: a header line has no name")
        if name in headers:
            headers[name] += ", " + value.strip()
        else:
            headers[name] = value.strip()
    return minor, int(status), reason.strip(), headers


def _content_length(value: str) -> int:
    if value.isdigit() and value.isascii():
        return int(value)
    # Repeated fields arrive joined ("5, 5"): fine when they agree.
    lengths = {v.strip() for v in value.split(",")}
    length = lengths.pop()
    if lengths or not (length.isascii() and length.isdigit()):
        raise WireError(f"{_INVALID}: Content-Length {value[:40]!r}")
    return int(length)


def _chunk_size(line: bytes) -> int:
    size = line.partition(b";")[0].strip()  # chunk extensions are ignored
    if not _HEX.fullmatch(size):
        raise WireError(f"{_INVALID}: a chunk size is not a hex number")
    return int(size, 16)


def _closes(headers: dict[str, str]) -> bool:
    tokens = headers.get("connection")
    return tokens is not None and "close" in (token.strip().lower() for token in tokens.split(","))


def _reason(exc: OSError) -> str:
    """``Connection refused`` rather than ``[Errno 111] Connection refused``."""
    return str(exc.strerror or exc) or type(exc).__name__
