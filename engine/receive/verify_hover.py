"""Hover's signature scheme: api-auth's ``Authorization: APIAuth`` (SPEC 9).

Hover's guide (developers.hover.to/docs/webhook-signature-verification) says it
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

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from .verify_base import Draft, Rejected, Request, b64, check_fresh, from_base64, header_of, mac, require_match, utf8

# --- Hover (ApiAuth) --------------------------------------------------------------

_APIAUTH = re.compile(r"APIAuth(?:-HMAC-(SHA1|SHA256|SHA384|SHA512))? ([^:]+):(.+)", re.IGNORECASE)

#: Body digest headers api-auth sends, and the hash each holds (base64).
_BODY_DIGESTS = (("content-md5", "md5"), ("x-authorization-content-sha256", "sha256"))

#: A bare "APIAuth" label: the digest follows from the signature's length.
_DIGEST_BY_SIZE = {20: "sha1", 32: "sha256"}


def _body_hash(body: bytes, algorithm: str) -> str:
    # MD5 here checks integrity under a signature, not a secret; FIPS builds allow that.
    return b64(hashlib.new(algorithm, body, usedforsecurity=False).digest())


def _body_digests(request: Request) -> list[str]:
    """The body digest values the signature may cover, each checked against the body."""
    found = []
    for name, algorithm in _BODY_DIGESTS:
        value = request.headers.get(name)
        if value:
            if not hmac.compare_digest(utf8(value), utf8(_body_hash(request.body, algorithm))):
                raise Rejected(f"{name} does not match the body")
            found.append(value)
    if not found and request.body:
        raise Rejected("no content-md5: the signature would not cover the body")
    return found or [""]


def _parse_apiauth(value: str) -> tuple[list[str], bytes]:
    """The candidate digests and the signature of an ``Authorization: APIAuth`` header."""
    match = _APIAUTH.fullmatch(value.strip())
    signature = from_base64(match.group(3)) if match else None
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
    return [utf8(s) for base in bases for s in (base, f"{request.method.upper()},{base}")]


@dataclass(frozen=True)
class HoverSignature:
    """Hover's ``hmac_secret``: api-auth's ``Authorization: APIAuth`` over Content-Type,
    the body digest, the request URI and the Date (module docstring)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    tolerance: float
    access_id: str = "hookwise"  #: what sign() names itself; verification ignores it

    def verify(self, request: Request) -> None:
        algorithms, signature = _parse_apiauth(header_of(request, "authorization"))
        date = header_of(request, "date")
        check_fresh(_http_date(date), request, self.tolerance)
        canonical = _canonical_strings(request, _body_digests(request), date)
        expected = [mac(s, c, a) for s in self.secrets for c in canonical for a in algorithms]
        require_match(expected, [signature])

    def sign(self, draft: Draft) -> Draft:
        """Sign as Hover's guide describes: Content-MD5, and the canonical string without
        the method, HMAC-SHA1 (api-auth's default)."""
        date = format_datetime(datetime.fromtimestamp(int(draft.now), tz=UTC), usegmt=True)
        md5 = _body_hash(draft.body, "md5")
        canonical = utf8(f"{draft.content_type},{md5},{draft.uri or '/'},{date}")
        signature = b64(mac(self.secrets[0], canonical, "sha1"))
        return draft.with_headers(
            **{
                "content-type": draft.content_type, "content-md5": md5, "date": date,
                "authorization": f"APIAuth {self.access_id}:{signature}"
            }
        )
