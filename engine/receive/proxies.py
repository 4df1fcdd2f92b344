"""Who sent a request: the peer's address, or the client a trusted proxy names (SPEC 4).

``X-Forwarded-For`` and ``Forwarded`` are anyone's to write, so they are believed only from
a peer in ``server.trusted_proxies``; then the chain is read from the right, past every
trusted proxy, to the first address that is not one. An address that cannot be read, or
two headers naming different clients (a proxy appends to one, a sender forged the other),
make the client unknown (None): ``allow_ips`` refuses it and the API and the UI do not count
it as loopback.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Header names as they arrive in an ASGI scope: lower-case bytes.
_XFF, _FORWARDED = b"x-forwarded-for", b"forwarded"


class Proxies:
    """The trusted proxies, and the client behind a request."""

    def __init__(self, trusted: Sequence[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

    def trusts(self, address: str | None) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The client's address: ``peer``, unless it is a trusted proxy that forwarded
        the request; then the address its headers name (None when unknown)."""
        if not self.networks or not self.trusts(peer):
            return peer
        xff, forwarded = forwarding(headers)
        chains = ([_xff_hops(xff)] if xff else []) + ([_forwarded_hops(forwarded)] if forwarded else [])
        if not chains:
            return peer
        named = {self._walk(hops) for hops in chains}
        return named.pop() if len(named) == 1 else None

    def _walk(self, hops: list[str | None]) -> str | None:
        """The rightmost hop that is not a trusted proxy (all trusted: the leftmost)."""
        for hop in reversed(hops):
            if hop is None or not self.trusts(hop):
                return hop
        return hops[0] if hops else None


@functools.lru_cache(maxsize=8)
def proxies_for(trusted: tuple[str, ...]) -> Proxies:
    """The :class:`Proxies` of a ``server.trusted_proxies`` list (built once per list)."""
    return Proxies(trusted)


def from_loopback(peer: str | None, headers: Sequence[tuple[bytes, bytes]], trusted: Sequence[str]) -> bool:
    """Whether a request's client is on this machine: the rule of the API and the UI until
    ``api.token`` is set. A request that says it was forwarded is judged by the client its
    trusted proxies name; from any other peer it is not local (a reverse proxy on this
    machine must not open the API and the UI to everyone it serves)."""
    proxies = proxies_for(tuple(trusted))
    if not proxies.trusts(peer) and any(forwarding(headers)):
        return False
    ip = _ip(proxies.client(peer, headers))
    return ip is not None and ip.is_loopback


def forwarding(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], list[str]]:
    """The values of ``X-Forwarded-For`` and ``Forwarded``, each in the order received."""
    xff: list[str] = []
    forwarded: list[str] = []
    for name, value in headers:
        if name == _XFF:
            xff.append(value.decode("latin-1"))
        elif name == _FORWARDED:
            forwarded.append(value.decode("latin-1"))
    return xff, forwarded


def _xff_hops(values: list[str]) -> list[str | None]:
    return [_address(part) for value in values for part in value.split(",")]


def _forwarded_hops(values: list[str]) -> list[str | None]:
    """The ``for=`` of each element of ``Forwarded`` (RFC 7239); an element without one,
    or with ``unknown`` or an obfuscated name, is an unknown hop."""
    hops: list[str | None] = []
    for value in values:
        for element in value.split(","):
            found = None
            for pair in element.split(";"):
                key, _, given = pair.strip().partition("=")
                if key.lower() == "for":
                    found = _address(given.strip().strip('"'))
            hops.append(found)
    return hops


def _address(text: str) -> str | None:
    """An IP address as text, from ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]`` or ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    ip = _ip(text)
    return str(ip) if ip is not None else None


def _ip(text: str | None) -> IpAddress | None:
    try:
        ip = ipaddress.ip_address(text) if text else None
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # a dual-stack listener's IPv4 peer
        return ip.ipv4_mapped
    return ip
