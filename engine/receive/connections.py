"""The receiver's connections: uvicorn's httptools protocol with the limits of SPEC 4.

- ``server.max_header``: the request line and headers of a request, together, are counted
  as their bytes arrive; past the limit the request is answered 431 and closed, before the
  app sees it and without the rest being kept (httptools itself would buffer a header
  whole, however long).
- after the head, a request may send what a body of ``server.max_body`` can take in
  chunked framing, plus a trailer of ``max_header``; a connection that goes on is closed
  (the receiver refuses a body over max_body with 413 itself, as it streams in).
- ``server.read_timeout``: from the connection (or the first byte of a later request on it)
  to the last byte of the request's body; a client that takes longer is answered 408 (its
  headers unfinished) or disconnected (mid-body). A request notes its deadline; one timer
  per server looks for those past due every second (a quarter of read_timeout if shorter).
- ``server.max_connections``: open connections at most. A new one beyond it closes the
  connection that has waited longest for a request (idle between requests, or still
  sending its headers: what a client that never finishes costs); when every connection
  is busy with a request, the new one is answered 503.

uvicorn keeps everything else: parsing (httptools, in C), flow control, keep-alive (5 s
between requests), pipelining, graceful shutdown. Refusals are logged once per
:data:`NOTICE_EVERY` seconds with a count, never a line (or a traceback) per connection,
and so is an accept that fails for want of file descriptors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..rules.config import Server

log = logging.getLogger("hookwise.connections")

#: File descriptors kept for everything but client connections: the store, logs, the
#: worker's outgoing calls and commands.
RESERVED_FILES = 256
#: The soft open-files limit is raised towards the hard one, up to this, at start.
MOST_FILES = 65536
#: Seconds between two log lines about the same kind of refusal.
NOTICE_EVERY = 10.0
#: Seconds a refused client that is still sending has to read its answer before the close.
LINGER = 2.0
#: Connections accepted per wake-up of the listening socket (asyncio takes its backlog for
#: this): between two rounds the loop closes what the cap evicts, so a flood cannot take
#: every file descriptor before the cap acts. Two rounds must fit in RESERVED_FILES.
ACCEPT_BURST = 64
#: Connections the kernel holds until they are accepted (uvicorn's default backlog): a
#: client that arrives during a flood waits in it rather than having its SYN dropped.
LISTEN_QUEUE = 2048


class Notice:
    """A warning logged at once, then at most once per ``every`` seconds with how often it
    happened meanwhile."""

    def __init__(self, message: str, every: float = NOTICE_EVERY) -> None:
        self.message, self.every = message, every
        self.count = 0
        self.next_at = 0.0

    def __call__(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now >= self.next_at:
            times = f" ({self.count} times in the last {self.every:g} s)" if self.count > 1 else ""
            log.warning("%s%s", self.message, times)
            self.count, self.next_at = 0, now + self.every


class Limits:
    """The limits of one server, and its connections (used from its event loop)."""

    def __init__(self, max_header: int, read_timeout: float, max_connections: int, max_body: int) -> None:
        self.max_header, self.read_timeout, self.max_connections = max_header, read_timeout, max_connections
        #: bytes a request may send after its head: a body of max_body in chunks (whose
        #: framing at most doubles it for chunks of 8 bytes or more) and a trailer of max_header
        self.max_rest = 2 * max_body + max_header
        self.open = 0
        #: connections waiting for a request (idle, or sending headers), longest first
        self.waiting: dict[LimitedProtocol, None] = {}
        #: every counted connection, for the sweep of read deadlines
        self.connections: set[LimitedProtocol] = set()
        # One timer per server rather than per request: a request only notes its deadline.
        self.sweep_every = min(1.0, read_timeout / 4)
        self._sweeping = False
        self.too_large = Notice(f"refused request headers over max_header ({max_header} bytes) with 431")
        self.malformed = Notice("answered requests httptools could not parse with 400")
        self.upgrades = Notice("requests to upgrade the connection (WebSocket) were answered as plain HTTP")
        self.too_long = Notice(f"closed connections whose request went on past {self.max_rest} bytes after its headers")
        self.too_slow = Notice(f"closed connections that did not send a request in read_timeout ({read_timeout:g} s)")
        self.evicted = Notice(f"max_connections ({max_connections}) reached: closing the longest-idle connections")
        self.full = Notice(f"max_connections ({max_connections}) reached, all busy: refusing new connections (503)")

    def admit(self, conn: LimitedProtocol) -> bool:
        """Count a new connection; make room for it or refuse it (False)."""
        self.open += 1
        conn.counted = True
        self.connections.add(conn)
        if not self._sweeping:
            self._sweeping = True
            conn.loop.call_later(self.sweep_every, self._sweep, conn.loop)
        if self.open > self.max_connections:
            victim = next(iter(self.waiting), None)
            if victim is None:
                self.full()
                return False
            self.evicted()
            victim.drop()
        self.waiting[conn] = None
        return True

    def release(self, conn: LimitedProtocol) -> None:
        if conn.counted:
            conn.counted = False
            self.open -= 1
        self.waiting.pop(conn, None)
        self.connections.discard(conn)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the connections past their read deadline; again in a while."""
        now = loop.time()
        for conn in [c for c in self.connections if c.deadline is not None and c.deadline <= now]:
            conn.read_timed_out()
        loop.call_later(self.sweep_every, self._sweep, loop)

    def busy(self, conn: LimitedProtocol) -> None:
        self.waiting.pop(conn, None)

    def idle(self, conn: LimitedProtocol) -> None:
        self.waiting.pop(conn, None)  # to the end: it has waited least
        self.waiting[conn] = None


class LimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, within :class:`Limits` (see the module docstring).
    A server's subclass carries its limits: :func:`protocol_for`."""

    limits: ClassVar[Limits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _Quieter(self.logger)  # type: ignore[assignment]
        self.counted = False
        #: bytes the current request's head may still take; None once it is complete
        self._head_left: int | None = self.limits.max_header
        self._rest_left = 0  # bytes the rest of the current request may still take
        self._heads = 0  # request heads completed on this connection
        #: (loop time) when the request being read must be complete; None between requests
        self.deadline: float | None = None
        self._answered = False  # refused with an answer: what arrives now is dropped

    # --- the connection -------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.limits.admit(self):
            self.limits.release(self)
            self._answer(503, "unavailable", "too many connections; retry later")
            return
        self.deadline = self.loop.time() + self.limits.read_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.release(self)
        self.deadline = None
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close this waiting connection to make room for a new one."""
        self.limits.release(self)
        self.deadline = None
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        left = self._head_left
        if left is None:  # the body (and a chunked body's trailer)
            self._rest_left -= len(data)
            if self._rest_left < 0:
                self._cut_off()
                return
            super().data_received(data)
            return
        if len(data) <= left:
            self._head_left = left - len(data)
            super().data_received(data)
            return
        heads = self._heads
        super().data_received(data[:left])
        if self.transport.is_closing():
            return
        if self._heads == heads:  # the head went past the limit unfinished
            self.limits.too_large()
            message = f"the request headers are larger than {self.limits.max_header} bytes"
            self._answer(431, "headers_too_large", message)
            return
        self.data_received(data[left:])  # the body, or a next request's head: counted anew

    # --- parser callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.deadline is None:
            self.deadline = self.loop.time() + self.limits.read_timeout

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._head_left = None
        self._rest_left = self.limits.max_rest
        self.limits.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_left = self.limits.max_header
        self.deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self.limits.idle(self)

    # --- refusing -------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse: answered like every refusal, in JSON."""
        self.limits.malformed()
        self._answer(400, "bad_request", f"malformed HTTP request: {msg.rstrip('.').lower()}")

    def _unsupported_upgrade_warning(self) -> None:
        self.limits.upgrades()

    def read_timed_out(self) -> None:
        """The request was not read within read_timeout (called by the sweep)."""
        self.deadline = None
        if self.transport.is_closing():
            return
        self.limits.too_slow()
        if self._head_left is not None and (self.cycle is None or self.cycle.response_complete):
            message = f"the request was not sent within {self.limits.read_timeout:g} s"
            self._answer(408, "request_timeout", message, linger=False)
        else:  # mid-body: the app sees a disconnect
            self.transport.close()

    def _cut_off(self) -> None:
        """The request goes on past any body max_body allows (a chunked body's trailer is
        kept whole by httptools, like a header): the connection is closed, and the app,
        still reading the body, sees a disconnect."""
        self.limits.too_long()
        self._answered = True
        self.limits.busy(self)
        self.deadline = None
        self.transport.close()

    def _answer(self, status: int, error: str, message: str, *, linger: bool = True) -> None:
        """Answer ``status`` and close. With ``linger``, what the client still sends is
        read and dropped for up to :data:`LINGER` seconds first: closing with unread data
        would reset the connection, and the client might never read the answer."""
        self._answered = True
        self.limits.busy(self)
        self.deadline = None
        body = json.dumps({"error": error, "message": message}).encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(STATUS_LINE[status] + head + body)
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the end of the answer; it closes, or LINGER runs out
            self.loop.call_later(LINGER, self.transport.close)
        else:
            self.transport.close()


class _Quieter:
    """uvicorn's logger for a connection, without the warning it writes for each request
    it cannot parse (the protocol counts those in a :class:`Notice` instead): a client must
    not be able to write the log full."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg != "Invalid HTTP request received.":
            self._logger.warning(msg, *args, **kwargs)


def protocol_for(limits: Limits) -> type[LimitedProtocol]:
    """A protocol class for one server: its connections share ``limits``."""
    return type("LimitedProtocol", (LimitedProtocol,), {"limits": limits})


def uvicorn_options(server: Server, max_connections: int | None = None) -> dict[str, Any]:
    """uvicorn settings for the receiver: the limited protocol, no WebSocket upgrades, and
    the peer's own address in the scope (forwarding headers are judged by
    :mod:`engine.receive.proxies`, against ``server.trusted_proxies``)."""
    limits = Limits(server.max_header, server.read_timeout, max_connections or server.max_connections, server.max_body)
    return {"http": protocol_for(limits), "ws": "none", "proxy_headers": False, "backlog": ACCEPT_BURST}


def deepen_queues(sockets: Iterable[Any]) -> None:
    """Let the kernel queue :data:`LISTEN_QUEUE` connections on each listening socket
    (asyncio listened with :data:`ACCEPT_BURST`). ``listen`` again on a listening socket
    changes its queue; it is called on a duplicate of the descriptor, which is closed."""
    for listener in sockets:
        with socket.fromfd(listener.fileno(), listener.family, listener.type) as sock:
            sock.listen(LISTEN_QUEUE)


def open_files_for(max_connections: int) -> int:
    """Raise the soft open-files limit towards the hard one (up to :data:`MOST_FILES`);
    return how many connections fit in it beside :data:`RESERVED_FILES`, at most
    ``max_connections``, with a warning when fewer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MOST_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_FILES)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, want, exc)
    fits = max(16, soft - RESERVED_FILES) if soft != resource.RLIM_INFINITY else max_connections
    if fits < max_connections:
        log.warning(
            "max_connections %d lowered to %d: the open-files limit is %d (raise it: ulimit -n, or LimitNOFILE=)",
            max_connections, fits, soft,
        )
        return fits
    return max_connections


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Make the loop log a failed accept for want of file descriptors as one line per
    :data:`NOTICE_EVERY` seconds instead of a traceback each time (asyncio stops accepting
    for a second and tries again by itself); everything else as before."""
    notice = Notice("too many open files: not accepting connections for a second at a time until some close")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            notice()
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)
