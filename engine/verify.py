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

Hover. Hover's guide (developers.hover.to/docs/webhook-signature-verification) says it
signs with the webhook's ``hmac_secret`` over a canonical string of Content-Type,
Content-MD5, the request URI and the Date, "content-type,content-MD5,request URI,timestamp";
the page's worked example did not survive in any copy we could read, so neither the
header carrying the signature nor the digest is stated. The scheme and the secret's shape
(88 base64 characters, what api-auth's ``generate_secret_key`` makes) are those of the
Ruby gem api-auth (github.com/mgomes/api_auth), so this module implements api-auth's
verification and accepts each of its variants:

- ``Authorization: APIAuth <access id>:<base64 HMAC>``; ``APIAuth-HMAC-SHA256`` (and
  -SHA384, -SHA512) name the digest, and a bare ``APIAuth`` means SHA-1 (api-auth's
  default) or SHA-256, told apart by the signature's length;
- the canonical string with the method first ("POST,type,md5,uri,date", api-auth >= 2)
  or without it ("type,md5,uri,date", older api-auth and Hover's guide);
- the body digest from ``Content-MD5`` (base64 MD5) or, as api-auth >= 2.5 sends it,
  ``X-Authorization-Content-SHA256`` (base64 SHA-256); either must match the body.

The HMAC key is the ``hmac_secret`` text as given (api-auth does not decode it). Unlike
api-auth, a request with a body but no body digest is refused: the signature would not
cover the body, so anyone who saw one signed request could replay it with another body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets as random_tokens
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .config import Hmac as HmacConfig
from .config import Source, Verify
from .errors import ConfigError, Problem

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Most signatures one header may carry: rotation needs two or three, and a cap keeps a
#: hostile header from buying thousands of ed25519 checks.
MAX_SIGNATURES = 20

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_APIAUTH = re.compile(r"APIAuth(?:-HMAC-(SHA1|SHA256|SHA384|SHA512))? ([^:]+):(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class Request:
    """What verification sees of a request: the raw body and the envelope."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  #: lower-case names
    query: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    #: The request URI as received, query string included ("/hooks/hover?token=x"):
    #: Hover signs the request URI.
    path: str = "/"
    client: str | None = None  #: the peer's IP address as text
    now: float | None = None  #: unix time; None means time.time()

    def clock(self) -> float:
        return time.time() if self.now is None else self.now


class Rejected(Exception):
    """Verification failed.

    ``status`` is 401 (a bad or missing signature or token, a stale timestamp) or 403 (the
    address is not allowed). ``reason`` is precise, for logs only ("timestamp too old",
    "no signature matched"); the HTTP answer must not say which secret or part failed.
    """

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Verifier(Protocol):
    def verify(self, request: Request) -> None:
        """Return if the request proves its sender; raise :class:`Rejected` if not."""
        ...


@dataclass(frozen=True)
class Draft:
    """A request being signed by :func:`sign`: each check adds its headers or query."""

    body: bytes
    now: float
    path: str
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The request URI the sender will use: the path with the query added."""
        if not self.query:
            return self.path
        return self.path + ("&" if "?" in self.path else "?") + urlencode(dict(self.query))

    def with_headers(self, **headers: str) -> Draft:
        return replace(self, headers={**self.headers, **headers})


class Check(Verifier, Protocol):
    """One check of a source: it verifies requests and can sign drafts."""

    def sign(self, draft: Draft) -> Draft: ...


# --- small helpers ----------------------------------------------------------------


def _bytes(text: str) -> bytes:
    """UTF-8 bytes of any text; never raises (lone surrogates pass through)."""
    return text.encode("utf-8", "surrogatepass")


def _header(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if not value:
        raise Rejected(f"missing header {name}")
    return value


def _from_hex(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX.fullmatch(text) and len(text) % 2 == 0 else None


def _from_base64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:  # non-ASCII text, or binascii.Error
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _mac(key: bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    return hmac.digest(key, message, algorithm)


def _any_equal(expected: Sequence[bytes], provided: Sequence[bytes]) -> bool:
    """Whether any provided value equals any expected one. Every pair is compared, in
    constant time, so the time taken does not tell which secret matched."""
    results = [hmac.compare_digest(e, p) for e in expected for p in provided]
    return any(results)


def _require_match(expected: Sequence[bytes], provided: Sequence[bytes | None]) -> None:
    if not _any_equal(expected, [p for p in provided if p is not None]):
        raise Rejected("no signature matched")


def _unix_time(text: str, name: str) -> int:
    if not _UNIX_SECONDS.fullmatch(text):
        raise Rejected(f"malformed {name}: expected unix seconds")
    return int(text)


def _check_fresh(sent: float, request: Request, tolerance: float) -> None:
    """Refuse a timestamp more than ``tolerance`` seconds away from now, either way: a
    replay of an old request, or one signed for later."""
    drift = request.clock() - sent
    if drift > tolerance:
        raise Rejected(f"timestamp too old ({drift:.0f}s > {tolerance:g}s)")
    if -drift > tolerance:
        raise Rejected(f"timestamp too far in the future ({-drift:.0f}s > {tolerance:g}s)")


def _capped(signatures: list[str]) -> list[str]:
    if len(signatures) > MAX_SIGNATURES:
        raise Rejected(f"too many signatures ({len(signatures)} > {MAX_SIGNATURES})")
    return signatures


def _secrets(values: Iterable[str]) -> tuple[bytes, ...]:
    return tuple(_bytes(v) for v in values)


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
        if not _any_equal(self.tokens, [_bytes(value)]):
            raise Rejected("token did not match")

    def sign(self, draft: Draft) -> Draft:
        if not self.tokens:
            raise ValueError("the source has no token yet (its token_file does not exist)")
        token = self.tokens[0].decode("utf-8", "surrogatepass")
        if self.header:
            return draft.with_headers(**{self.header: token})
        return replace(draft, query={**draft.query, "token": token})


# --- provider schemes -------------------------------------------------------------


@dataclass(frozen=True)
class GitHubSignature:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body."""

    secrets: tuple[bytes, ...] = field(repr=False)

    HEADER = "x-hub-signature-256"

    def verify(self, request: Request) -> None:
        value = _header(request, self.HEADER)
        if not value.startswith("sha256="):
            raise Rejected(f"malformed {self.HEADER}: expected sha256=<hex>")
        expected = [_mac(s, request.body) for s in self.secrets]
        _require_match(expected, [_from_hex(value[len("sha256=") :])])

    def sign(self, draft: Draft) -> Draft:
        digest = _mac(self.secrets[0], draft.body).hex()
        # The delivery id is how the github preset de-duplicates (sources.py).
        return draft.with_headers(**{self.HEADER: f"sha256={digest}", "x-github-delivery": str(uuid.uuid4())})


def _stripe_fields(header: str) -> tuple[str, list[str]]:
    """The timestamp and the v1 signatures of a Stripe-Signature header; other schemes
    (v0, Stripe's test scheme) are ignored as Stripe's libraries ignore them."""
    pairs = [item.strip().partition("=") for item in header.split(",")]
    stamps = [value for key, sep, value in pairs if key == "t" and sep]
    if len(stamps) != 1:
        raise Rejected("malformed stripe-signature: expected exactly one t=")
    return stamps[0], _capped([value for key, sep, value in pairs if key == "v1" and sep])


@dataclass(frozen=True)
class StripeSignature:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``, HMAC-SHA256 of
    ``"{t}.{body}"`` keyed with the endpoint secret as written (``whsec_...``)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    tolerance: float

    HEADER = "stripe-signature"

    def verify(self, request: Request) -> None:
        stamp, signatures = _stripe_fields(_header(request, self.HEADER))
        _check_fresh(_unix_time(stamp, "stripe-signature t="), request, self.tolerance)
        signed = _bytes(stamp) + b"." + request.body
        _require_match([_mac(s, signed) for s in self.secrets], [_from_hex(v) for v in signatures])

    def sign(self, draft: Draft) -> Draft:
        stamp = str(int(draft.now))
        digest = _mac(self.secrets[0], _bytes(stamp) + b"." + draft.body).hex()
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
        msg_id = _header(request, "webhook-id")
        stamp = _header(request, "webhook-timestamp")
        _check_fresh(_unix_time(stamp, "webhook-timestamp"), request, self.tolerance)
        entries = _capped(_header(request, "webhook-signature").split())
        signed = _bytes(f"{msg_id}.{stamp}.") + request.body
        # Both kinds are checked, without short-circuit, before deciding.
        matched = [self._v1(signed, entries), self._v1a(signed, entries)]
        if not any(matched):
            raise Rejected("no signature matched")

    def _v1(self, signed: bytes, entries: list[str]) -> bool:
        provided = [_from_base64(sig) for version, _, sig in (e.partition(",") for e in entries) if version == "v1"]
        expected = [_mac(key, signed) for key in self.hmac_keys]
        return _any_equal(expected, [p for p in provided if p is not None])

    def _v1a(self, signed: bytes, entries: list[str]) -> bool:
        provided = [_from_base64(sig) for version, _, sig in (e.partition(",") for e in entries) if version == "v1a"]
        results = [_ed25519_ok(key, sig, signed) for key in self.public_keys for sig in provided if sig is not None]
        return any(results)

    def sign(self, draft: Draft) -> Draft:
        if not self.hmac_keys:
            raise ValueError(
                "cannot sign: this standard source has only whpk_ public keys; signing needs a whsec_ secret"
            )
        msg_id = "msg_" + random_tokens.token_hex(12)
        stamp = str(int(draft.now))
        digest = _mac(self.hmac_keys[0], _bytes(f"{msg_id}.{stamp}.") + draft.body)
        return draft.with_headers(
            **{"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": f"v1,{_b64(digest)}"}
        )


def _hmac_key(secret: str) -> bytes:
    """A Standard Webhooks symmetric secret: base64 after an optional ``whsec_`` prefix
    (padding may be left off, as the reference libraries allow)."""
    if secret.startswith("whsk_"):
        raise ValueError("a whsk_ private key does not belong on the receiver: configure its whpk_ public key")
    text = secret.removeprefix("whsec_")
    key = _from_base64(text + "=" * (-len(text) % 4))
    if not key:
        raise ValueError(
            "not a Standard Webhooks secret: expected whsec_ followed by base64 (or whpk_ for a public key)"
        )
    return key


def _public_key(text: str) -> Ed25519PublicKey:
    raw = _from_base64(text)
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
        stamp = _header(request, "x-slack-request-timestamp")
        value = _header(request, "x-slack-signature")
        _check_fresh(_unix_time(stamp, "x-slack-request-timestamp"), request, self.tolerance)
        if not value.startswith("v0="):
            raise Rejected("malformed x-slack-signature: expected v0=<hex>")
        signed = _bytes(f"v0:{stamp}:") + request.body
        _require_match([_mac(s, signed) for s in self.secrets], [_from_hex(value[3:])])

    def sign(self, draft: Draft) -> Draft:
        stamp = str(int(draft.now))
        digest = _mac(self.secrets[0], _bytes(f"v0:{stamp}:") + draft.body).hex()
        return draft.with_headers(**{"x-slack-request-timestamp": stamp, "x-slack-signature": f"v0={digest}"})


_DECODERS: dict[str, Callable[[str], bytes | None]] = {"hex": _from_hex, "base64": _from_base64}
_ENCODERS: dict[str, Callable[[bytes], str]] = {"hex": bytes.hex, "base64": _b64}


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
        return cls(config.header.lower(), _secrets(config.secret), config.algorithm, config.encoding, config.prefix)

    def verify(self, request: Request) -> None:
        value = _header(request, self.header)
        if not value.startswith(self.prefix):
            raise Rejected(f"malformed {self.header}: expected the prefix {self.prefix!r}")
        provided = _DECODERS[self.encoding](value[len(self.prefix) :])
        _require_match([_mac(s, request.body, self.algorithm) for s in self.secrets], [provided])

    def sign(self, draft: Draft) -> Draft:
        digest = _mac(self.secrets[0], draft.body, self.algorithm)
        return draft.with_headers(**{self.header: self.prefix + _ENCODERS[self.encoding](digest)})


# --- Hover (ApiAuth) --------------------------------------------------------------

#: Body digest headers api-auth sends, and the hash each holds (base64).
_BODY_DIGESTS = (("content-md5", "md5"), ("x-authorization-content-sha256", "sha256"))

#: A bare "APIAuth" label: the digest follows from the signature's length.
_DIGEST_BY_SIZE = {20: "sha1", 32: "sha256"}


def _body_hash(body: bytes, algorithm: str) -> str:
    # MD5 here checks integrity under a signature, not a secret; FIPS builds allow that.
    return _b64(hashlib.new(algorithm, body, usedforsecurity=False).digest())


def _body_digests(request: Request) -> list[str]:
    """The body digest values the signature may cover, each checked against the body."""
    found = []
    for name, algorithm in _BODY_DIGESTS:
        value = request.headers.get(name)
        if value:
            if not hmac.compare_digest(_bytes(value), _bytes(_body_hash(request.body, algorithm))):
                raise Rejected(f"{name} does not match the body")
            found.append(value)
    if not found and request.body:
        raise Rejected("no content-md5: the signature would not cover the body")
    return found or [""]


def _parse_apiauth(value: str) -> tuple[list[str], bytes]:
    """The candidate digests and the signature of an ``Authorization: APIAuth`` header."""
    match = _APIAUTH.fullmatch(value.strip())
    signature = _from_base64(match.group(3)) if match else None
    if match is None or signature is None:
        raise Rejected("malformed authorization: expected APIAuth <id>:<base64>")
    if match.group(1):
        return [match.group(1).lower()], signature
    if len(signature) not in _DIGEST_BY_SIZE:
        raise Rejected("malformed authorization: signature is neither SHA-1 nor SHA-256 sized")
    return [_DIGEST_BY_SIZE[len(signature)]], signature


def _http_date(value: str) -> float:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise Rejected("malformed date: expected an RFC 1123 date") from None
    if moment.tzinfo is None:  # "-0000" means UTC with no claim about local time
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _canonical_strings(request: Request, digests: list[str], date: str) -> list[bytes]:
    """Every canonical string api-auth may have signed: with and without the method
    first, for each body digest header present."""
    content_type = request.headers.get("content-type", "")
    uri = request.path or "/"
    bases = [f"{content_type},{digest},{uri},{date}" for digest in digests]
    return [_bytes(s) for base in bases for s in (base, f"{request.method.upper()},{base}")]


@dataclass(frozen=True)
class HoverSignature:
    """Hover's ``hmac_secret``: api-auth's ``Authorization: APIAuth`` over Content-Type,
    the body digest, the request URI and the Date (module docstring)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    tolerance: float
    access_id: str = "hookwise"  #: what sign() names itself; verification ignores it

    def verify(self, request: Request) -> None:
        algorithms, signature = _parse_apiauth(_header(request, "authorization"))
        date = _header(request, "date")
        _check_fresh(_http_date(date), request, self.tolerance)
        canonical = _canonical_strings(request, _body_digests(request), date)
        expected = [_mac(s, c, a) for s in self.secrets for c in canonical for a in algorithms]
        _require_match(expected, [signature])

    def sign(self, draft: Draft) -> Draft:
        """Sign as Hover's guide describes: Content-MD5, and the canonical string without
        the method, HMAC-SHA1 (api-auth's default)."""
        date = format_datetime(datetime.fromtimestamp(int(draft.now), tz=UTC), usegmt=True)
        md5 = _body_hash(draft.body, "md5")
        canonical = _bytes(f"{draft.content_type},{md5},{draft.uri or '/'},{date}")
        signature = _b64(_mac(self.secrets[0], canonical, "sha1"))
        return draft.with_headers(
            **{
                "content-type": draft.content_type, "content-md5": md5, "date": date,
                "authorization": f"APIAuth {self.access_id}:{signature}"
            }
        )


# --- a source's checks ------------------------------------------------------------

_PRESET_SCHEMES: dict[str, Callable[[Source], Check]] = {
    "github": lambda s: GitHubSignature(_secrets(s.secret or ())),
    "stripe": lambda s: StripeSignature(_secrets(s.secret or ()), s.tolerance),
    "standard": lambda s: StandardSignature.parse(s.secret or (), s.tolerance),
    "slack": lambda s: SlackSignature(_secrets(s.secret or ()), s.tolerance),
}


def _checks(source: Source) -> list[Check]:
    """The source's checks, cheapest first: address, token, then signatures."""
    if source.preset == "hover" and source.secret:
        # The config model lets this through, and ignoring it would leave the source open.
        raise ConfigError(
            [Problem("the hover preset verifies with 'hmac_secret' (or 'token'), not 'secret'", ("secret",))]
        )
    checks: list[Check] = []
    if source.allow_ips:
        checks.append(AllowIps.parse(source.allow_ips))
    if source.token or source.token_file:
        # A token file not made yet holds no token: nothing matches (closed, never open).
        header = source.token_header.lower() if source.token_header else None
        checks.append(TokenCheck(_secrets(source.token or ()), header))
    if source.preset in _PRESET_SCHEMES:
        checks.append(_PRESET_SCHEMES[source.preset](source))
    if source.hmac_secret:
        checks.append(HoverSignature(_secrets(source.hmac_secret), source.tolerance))
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
