"""Who may send, before any signature: the sender's address (``allow_ips``) and a shared token
in ``?token=`` or a named header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .verify_base import Draft, IpAddress, IpNetwork, Rejected, Request, any_equal, utf8

# --- the sender's address -----------------------------------------------------------


def _addresses(client: str | None) -> list[IpAddress]:
    """The client address in both its forms: an IPv4 peer seen through a dual-stack
    socket arrives as ::ffff:a.b.c.d, and a network may be written either way."""
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return []
    found: list[IpAddress] = [address]
    if isinstance(address, ipaddress.IPv4Address):
        found.append(ipaddress.IPv6Address(f"::ffff:{address}"))
    elif address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    return found


@dataclass(frozen=True)
class AllowIps:
    """The peer address must be in one of ``networks``; otherwise 403."""

    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, networks: Iterable[str]) -> AllowIps:
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def verify(self, request: Request) -> None:
        addresses = _addresses(request.client)
        if not any(a in n for a in addresses for n in self.networks):
            raise Rejected(f"client address {request.client!r} not allowed", status=403)

    def sign(self, draft: Draft) -> Draft:
        return draft


# --- shared token -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenCheck:
    """A shared secret sent as ``?token=``, or in the header ``header`` when one is named
    (then the query parameter is not accepted: a token in a URL ends up in logs)."""

    tokens: tuple[bytes, ...] = field(repr=False)
    header: str | None = None

    def verify(self, request: Request) -> None:
        value = request.headers.get(self.header) if self.header else request.query.get("token")
        if not value:
            raise Rejected(f"missing token ({self.header or '?token='})")
        if not any_equal(self.tokens, [utf8(value)]):
            raise Rejected("token did not match")

    def sign(self, draft: Draft) -> Draft:
        if not self.tokens:
            raise ValueError("the source has no token yet (its token_file does not exist)")
        token = self.tokens[0].decode("utf-8", "surrogatepass")
        if self.header:
            return draft.with_headers(**{self.header: token})
        return replace(draft, query={**draft.query, "token": token})
