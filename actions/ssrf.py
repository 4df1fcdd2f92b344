"""The SSRF guard of the http action (SPEC 11): which addresses its connections may reach.

A connection to a private, loopback, link-local, multicast, reserved, unspecified or cloud
metadata address is refused unless ``http.allow_private`` is true or the URL's host is in
``http.allow_hosts``. :meth:`Guard.connect` opens every new connection of the http
action's client (:mod:`engine.run.outbound`): it resolves the host, checks every address it
resolves to, connects only to an allowed one (so not even a TCP handshake goes towards a
refused address, whatever form the URL gives it: ``2130706433``, ``0x7f.1``, ``127.1``,
a mapped, 6to4 or NAT64 IPv6 address, a zone id, a name that resolves to loopback), and
checks the peer the socket is connected to once more before anything is sent. Every
redirect hop opens its connections here too.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from engine.errors import ConfigError, Problem
from engine.rules.config import Http

IPAddress = IPv4Address | IPv6Address

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


class Refused(Exception):
    """The guard refused a connection; nothing was sent. (Not an OSError: the HTTP client
    lets it through untouched, and the action turns it into Fail.)"""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        shown = str(address) if _parse_ip(host) == address else f"{_norm_host(host)} at {address}"
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

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A socket connected to ``host``:``port`` at an allowed address (the
        :data:`engine.run.outbound.Connect` of the http action). Raises :class:`Refused`
        before any connection attempt when every address is refused, and OSError (or
        TimeoutError) when no allowed address answers."""
        trusted = self.allow_private or self.allows_host(host, port)
        literal = _parse_ip(host)
        if not trusted and literal is not None and (reason := refusal_reason(literal)) is not None:
            raise Refused(host, literal, reason)  # not even resolved: nothing goes towards it
        refused: Refused | None = None
        failure: OSError | None = None
        for family, kind, proto, address in _resolve(host, port):
            ip = _parse_ip(str(address[0]))
            if not trusted and ip is not None and (reason := refusal_reason(ip)) is not None:
                refused = refused or Refused(host, ip, reason)
                continue
            try:
                return self._connected(host, port, family, kind, proto, address, timeout, trusted)
            except Refused:
                raise
            except OSError as exc:
                failure = exc
        if failure is not None:
            raise failure
        if refused is not None:
            raise refused
        raise OSError(f"{host} resolves to no address")

    def _connected(
        self,
        host: str,
        port: int,
        family: int,
        kind: int,
        proto: int,
        address: tuple[object, ...],
        timeout: float | None,
        trusted: bool,
    ) -> socket.socket:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(address)
            if not trusted:  # the address actually reached, judged once more before a byte is sent
                self._check_peer(host, sock)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _check_peer(host: str, sock: socket.socket) -> None:
        peer = _parse_ip(str(sock.getpeername()[0]))
        if peer is not None and (reason := refusal_reason(peer)) is not None:
            raise Refused(host, peer, reason)


def _resolve(host: str, port: int) -> list[tuple[int, int, int, tuple[object, ...]]]:
    infos = socket.getaddrinfo(host.strip("[]"), port, 0, socket.SOCK_STREAM)
    return [(family, kind, proto, address) for family, kind, proto, _, address in infos]


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
