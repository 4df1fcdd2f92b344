"""The HMAC and Ed25519 signature schemes of the providers: GitHub, Stripe, Standard Webhooks,
Slack, and a custom source's ``verify.hmac``.
"""

from __future__ import annotations

import secrets as random_tokens
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import ConfigError, Problem
from ..rules.config import Hmac as HmacConfig
from .verify_base import (
    Draft,
    Rejected,
    Request,
    any_equal,
    b64,
    capped,
    check_fresh,
    from_base64,
    from_hex,
    header_of,
    mac,
    require_match,
    secret_bytes,
    unix_time,
    utf8,
)

# --- provider schemes -------------------------------------------------------------


@dataclass(frozen=True)
class GitHubSignature:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body."""

    secrets: tuple[bytes, ...] = field(repr=False)

    HEADER = "x-hub-signature-256"

    def verify(self, request: Request) -> None:
        value = header_of(request, self.HEADER)
        if not value.startswith("sha256="):
            raise Rejected(f"malformed {self.HEADER}: expected sha256=<hex>")
        expected = [mac(s, request.body) for s in self.secrets]
        require_match(expected, [from_hex(value[len("sha256=") :])])

    def sign(self, draft: Draft) -> Draft:
        digest = mac(self.secrets[0], draft.body).hex()
        # The delivery id is how the github preset de-duplicates (sources.py).
        return draft.with_headers(**{self.HEADER: f"sha256={digest}", "x-github-delivery": str(uuid.uuid4())})


def _stripe_fields(header: str) -> tuple[str, list[str]]:
    """The timestamp and the v1 signatures of a Stripe-Signature header; other schemes
    (v0, Stripe's test scheme) are ignored as Stripe's libraries ignore them."""
    pairs = [item.strip().partition("=") for item in header.split(",")]
    stamps = [value for key, sep, value in pairs if key == "t" and sep]
    if len(stamps) != 1:
        raise Rejected("malformed stripe-signature: expected exactly one t=")
    return stamps[0], capped([value for key, sep, value in pairs if key == "v1" and sep])


@dataclass(frozen=True)
class StripeSignature:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, HMAC-SHA256 of
    ``"{t}.{body}"`` keyed with the endpoint secret as written (``whsec_...``)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    tolerance: float

    HEADER = "stripe-signature"

    def verify(self, request: Request) -> None:
        stamp, signatures = _stripe_fields(header_of(request, self.HEADER))
        check_fresh(unix_time(stamp, "stripe-signature t="), request, self.tolerance)
        signed = utf8(stamp) + b"." + request.body
        require_match([mac(s, signed) for s in self.secrets], [from_hex(v) for v in signatures])

    def sign(self, draft: Draft) -> Draft:
        stamp = str(int(draft.now))
        digest = mac(self.secrets[0], utf8(stamp) + b"." + draft.body).hex()
        return draft.with_headers(**{self.HEADER: f"t={stamp},v1={digest}"})


@dataclass(frozen=True)
class StandardSignature:
    """Standard Webhooks (www.standardwebhooks.com): ``webhook-signature`` holds
    space-separated ``v1,<base64 HMAC-SHA256>`` and ``v1a,<base64 ed25519>`` entries over
    ``"{webhook-id}.{webhook-timestamp}.{body}"``. ``whsec_`` secrets (or bare base64)
    verify v1; ``whpk_`` public keys verify v1a."""

    hmac_keys: tuple[bytes, ...] = field(repr=False)
    public_keys: tuple[Ed25519PublicKey, ...] = field(repr=False)
    tolerance: float

    @classmethod
    def parse(cls, secrets: Sequence[str], tolerance: float) -> StandardSignature:
        """Sort the source's secrets into HMAC keys and public keys; a secret that cannot
        be decoded is a :class:`ConfigError` (its value is never shown)."""
        hmac_keys: list[bytes] = []
        public_keys: list[Ed25519PublicKey] = []
        problems = []
        for index, secret in enumerate(secrets):
            try:
                if secret.startswith("whpk_"):
                    public_keys.append(_public_key(secret[len("whpk_") :]))
                else:
                    hmac_keys.append(_hmac_key(secret))
            except ValueError as exc:
                problems.append(Problem(str(exc), ("secret", index)))
        if problems:
            raise ConfigError(problems)
        return cls(tuple(hmac_keys), tuple(public_keys), tolerance)

    def verify(self, request: Request) -> None:
        msg_id = header_of(request, "webhook-id")
        stamp = header_of(request, "webhook-timestamp")
        check_fresh(unix_time(stamp, "webhook-timestamp"), request, self.tolerance)
        entries = capped(header_of(request, "webhook-signature").split())
        signed = utf8(f"{msg_id}.{stamp}.") + request.body
        # Both kinds are checked, without short-circuit, before deciding.
        matched = [self._v1(signed, entries), self._v1a(signed, entries)]
        if not any(matched):
            raise Rejected("no signature matched")

    def _v1(self, signed: bytes, entries: list[str]) -> bool:
        provided = [from_base64(sig) for version, _, sig in (e.partition(",") for e in entries) if version == "v1"]
        expected = [mac(key, signed) for key in self.hmac_keys]
        return any_equal(expected, [p for p in provided if p is not None])

    def _v1a(self, signed: bytes, entries: list[str]) -> bool:
        provided = [from_base64(sig) for version, _, sig in (e.partition(",") for e in entries) if version == "v1a"]
        results = [_ed25519_ok(key, sig, signed) for key in self.public_keys for sig in provided if sig is not None]
        return any(results)

    def sign(self, draft: Draft) -> Draft:
        if not self.hmac_keys:
            raise ValueError(
                "cannot sign: this standard source has only whpk_ public keys; signing needs a whsec_ secret"
            )
        msg_id = "msg_" + random_tokens.token_hex(12)
        stamp = str(int(draft.now))
        digest = mac(self.hmac_keys[0], utf8(f"{msg_id}.{stamp}.") + draft.body)
        return draft.with_headers(
            **{"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{b64(digest)}"}
        )


def _hmac_key(secret: str) -> bytes:
    """A Standard Webhooks symmetric secret: base64 after an optional ``whsec_`` prefix
    (padding may be left off, as the reference libraries allow)."""
    if secret.startswith("whsk_"):
        raise ValueError("a whsk_ private key does not belong on the receiver: configure its whpk_ public key")
    text = secret.removeprefix("whsec_")
    key = from_base64(text + "=" * (-len(text) % 4))
    if not key:
        raise ValueError(
            "not a Standard Webhooks secret: expected whsec_ followed by base64 (or whpk_ for a public key)"
        )
    return key


def _public_key(text: str) -> Ed25519PublicKey:
    raw = from_base64(text)
    if raw is None or len(raw) != 32:
        raise ValueError("not a Standard Webhooks public key: expected whpk_ followed by 32 bytes in base64")
    return Ed25519PublicKey.from_public_bytes(raw)


def _ed25519_ok(key: Ed25519PublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class SlackSignature:
    """Slack: ``X-Slack-Signature: v0=<hex>``, HMAC-SHA256 of
    ``"v0:{X-Slack-Request-Timestamp}:{body}"``."""

    secrets: tuple[bytes, ...] = field(repr=False)
    tolerance: float

    def verify(self, request: Request) -> None:
        stamp = header_of(request, "x-slack-request-timestamp")
        value = header_of(request, "x-slack-signature")
        check_fresh(unix_time(stamp, "x-slack-request-timestamp"), request, self.tolerance)
        if not value.startswith("v0="):
            raise Rejected("malformed x-slack-signature: expected v0=<hex>")
        signed = utf8(f"v0:{stamp}:") + request.body
        require_match([mac(s, signed) for s in self.secrets], [from_hex(value[3:])])

    def sign(self, draft: Draft) -> Draft:
        stamp = str(int(draft.now))
        digest = mac(self.secrets[0], utf8(f"v0:{stamp}:") + draft.body).hex()
        return draft.with_headers(**{"x-slack-request-timestamp": stamp, "x-slack-signature": f"v0={digest}"})


_DECODERS: dict[str, Callable[[str], bytes | None]] = {"hex": from_hex, "base64": from_base64}
_ENCODERS: dict[str, Callable[[bytes], str]] = {"hex": bytes.hex, "base64": b64}


@dataclass(frozen=True)
class HmacSignature:
    """A custom source's ``verify.hmac``: the header holds ``prefix`` then the HMAC of the
    raw body, in hex or base64."""

    header: str  #: lower-case
    secrets: tuple[bytes, ...] = field(repr=False)
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""

    @classmethod
    def from_config(cls, config: HmacConfig) -> HmacSignature:
        return cls(config.header.lower(), secret_bytes(config.secret), config.algorithm, config.encoding, config.prefix)

    def verify(self, request: Request) -> None:
        value = header_of(request, self.header)
        if not value.startswith(self.prefix):
            raise Rejected(f"malformed {self.header}: expected the prefix {self.prefix!r}")
        provided = _DECODERS[self.encoding](value[len(self.prefix) :])
        require_match([mac(s, request.body, self.algorithm) for s in self.secrets], [provided])

    def sign(self, draft: Draft) -> Draft:
        digest = mac(self.secrets[0], draft.body, self.algorithm)
        return draft.with_headers(**{self.header: self.prefix + _ENCODERS[self.encoding](digest)})
