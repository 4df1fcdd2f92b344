"""A tiny HTTP server on loopback that answers exactly the bytes a test gives it: the
replies a framework will not make (stray bytes after a bodiless answer, bare LF, NUL,
status 099, a close right after reading a request). It counts the connections it accepts
and records every request as it arrived."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

#: What to do with the connection after a reply: keep it open, close it, or reset it (RST,
#: sending nothing).
After = Literal["keep", "close", "reset"]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def reply(status: str = "200 OK", body: bytes = b"", *headers: str) -> bytes:
    """A response with a Content-Length."""
    head = "".join(f"{h}\r\n" for h in (*headers, f"Content-Length: {len(body)}"))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


class RawServer:
    """Reads each request (head and Content-Length body), records it, and answers with
    the next of ``replies`` (the last one repeats), then does what it says with the
    connection."""

    def __init__(self, replies: list[tuple[bytes, After]], later: bytes = b"") -> None:
        self.replies = replies
        #: bytes sent on the first connection once ``release`` is set, after its first
        #: reply was read: what arrives when no request is waiting for it
        self.later = later
        self.release = threading.Event()
        self.later_sent = threading.Event()
        self.requests: list[bytes] = []
        self.accepts = 0
        self.closed = threading.Event()  #: set when it closed a connection after a reply
        self.client_left = threading.Event()  #: set when a client closed a connection
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        for sock in (self._listener, *self._conns):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepts += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while (request := _read_request(conn)) is not None:
                with self._lock:
                    answer, after = self.replies[min(len(self.requests), len(self.replies) - 1)]
                    self.requests.append(request)
                if after == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                    return
                conn.sendall(answer)
                if self.later and not self.later_sent.is_set() and self.release.wait(5):
                    conn.sendall(self.later)
                    self.later_sent.set()
                if after == "close":
                    conn.close()
                    self.closed.set()
                    return
            self.client_left.set()
        except OSError:  # the client went away mid-reply, or stop()
            pass


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class CountingListener:
    """A loopback listener that accepts nothing by itself: :meth:`count` takes every
    connection the kernel completed in its backlog meanwhile, so a handshake that
    happened is counted even though nobody waited for it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setblocking(False)
        self.port = int(self._sock.getsockname()[1])
        self.accepts = 0

    def count(self) -> int:
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return self.accepts
            self.accepts += 1
            conn.close()

    def close(self) -> None:
        self._sock.close()
