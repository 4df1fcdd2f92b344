"""Signature schemes: how a request proves which sender it came from (SPEC 4 and 9).

Verification sees the raw body bytes and the envelope (:class:`Request`) before anything
is parsed, compares in constant time (:func:`hmac.compare_digest`), and either returns or
raises :class:`Rejected`. No I/O happens here. Every secret may be a list (rotation): a
request is accepted when any one of them verifies it.

    Verifier (Protocol)        verify(request) -> None, or raise Rejected
    ├── AcceptAll              a source with no checks configured
    ├── AllOf(checks)          everything a source asks for, cheapest first
    ├── AllowIps               the peer address is in one of the networks (else 403)
    ├── TokenCheck             a shared secret in ?token= or in a named header
    ├── GitHubSignature        X-Hub-Signature-256: sha256=<hex>
    ├── StripeSignature        Stripe-Signature: t=<unix>,v1=<hex>...
    ├── StandardSignature      Standard Webhooks webhook-id/-timestamp/-signature, v1 and v1a
    ├── SlackSignature         X-Slack-Signature: v0=<hex> with X-Slack-Request-Timestamp
    ├── HmacSignature          a custom source's verify.hmac
    └── HoverSignature         Hover's hmac_secret: the ApiAuth scheme (below)

:func:`sign` is the other side of every scheme: the headers and query a sender adds so
that :func:`verifier_for` accepts the request (``hookwise send`` and the tests use it).

Hover's scheme is described in :mod:`engine.receive.verify_hover`.
"""


from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..rules.config import Preset, Source, Verify
from .verify_access import AllowIps, TokenCheck
from .verify_base import Check, Draft, Request, Verifier, secret_bytes
from .verify_hmac import GitHubSignature, HmacSignature, SlackSignature, StandardSignature, StripeSignature
from .verify_hover import HoverSignature

# --- combinators ------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptAll:
    """What a source with no checks configured gets: every request passes."""

    def verify(self, request: Request) -> None:
        return None

    def sign(self, draft: Draft) -> Draft:
        return draft


@dataclass(frozen=True)
class AllOf:
    """Every check must pass, in order (cheapest first)."""

    checks: tuple[Check, ...]

    def verify(self, request: Request) -> None:
        for check in self.checks:
            check.verify(request)

    def sign(self, draft: Draft) -> Draft:
        for check in self.checks:
            draft = check.sign(draft)
        return draft


# --- a source's checks ------------------------------------------------------------

#: The presets signed with ``secret`` (hover signs with ``hmac_secret``, below).
_PRESET_SCHEMES: dict[Preset, Callable[[Source], Check]] = {
    "github": lambda s: GitHubSignature(secret_bytes(s.secret or ())),
    "stripe": lambda s: StripeSignature(secret_bytes(s.secret or ()), s.tolerance),
    "standard": lambda s: StandardSignature.parse(s.secret or (), s.tolerance),
    "slack": lambda s: SlackSignature(secret_bytes(s.secret or ()), s.tolerance),
}


def _checks(source: Source) -> list[Check]:
    """The source's checks, cheapest first: address, token, then signatures."""
    checks: list[Check] = []
    if source.allow_ips:
        checks.append(AllowIps.parse(source.allow_ips))
    if source.token or source.token_file:
        # A token file not made yet holds no token: nothing matches (closed, never open).
        header = source.token_header.lower() if source.token_header else None
        checks.append(TokenCheck(secret_bytes(source.token or ()), header))
    if source.preset is not None and source.preset in _PRESET_SCHEMES:
        checks.append(_PRESET_SCHEMES[source.preset](source))
    if source.hmac_secret:
        checks.append(HoverSignature(secret_bytes(source.hmac_secret), source.tolerance))
    if isinstance(source.verify, Verify):
        checks.append(HmacSignature.from_config(source.verify.hmac))
    return checks


def verifier_for(source: Source) -> Verifier:
    """Everything the source asks for, combined: all must pass, cheapest first
    (allow_ips (403), then the token, then signatures). A source with no checks
    configured gets a verifier that accepts everything.

    Build it once per source at load time: secrets are decoded here, and a Standard
    Webhooks secret that cannot be decoded raises :class:`ConfigError` (located under
    ``secret[i]``; the caller puts it under its ``sources.NAME``)."""
    checks = _checks(source)
    if not checks:
        return AcceptAll()
    return checks[0] if len(checks) == 1 else AllOf(tuple(checks))


def sign(
    source: Source,
    body: bytes,
    *,
    now: float | None = None,
    path: str = "/",
    content_type: str = "application/json",
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers (lower-case names) and query parameters that make
    ``verifier_for(source)`` accept ``body`` sent at ``now`` to ``path`` plus the query.

    Send the request to exactly that URI: Hover's scheme signs it, token included.
    Raises ``ValueError`` when the source holds nothing to sign with (a Standard Webhooks
    source with only ``whpk_`` public keys)."""
    draft = Draft(body, time.time() if now is None else now, path, content_type)
    for check in _checks(source):
        draft = check.sign(draft)
    return dict(draft.headers), dict(draft.query)
