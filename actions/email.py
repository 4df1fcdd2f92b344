"""The ``email`` action: send a message through the ``smtp:`` server of the config.

Outcomes of one attempt:

    accepted for every recipient                 -> {message_id}
    accepted for some, refused for others        -> {message_id, refused: {addr: "550 ..."}}
    connection refused or reset, timeout,
    disconnect, TLS broken off, a 4xx reply      -> Retry
    a 5xx reply (login, sender, recipients,
    data), STARTTLS or AUTH not offered, a
    certificate that does not verify,
    ``smtp.from`` not set                        -> Fail

``Message-ID`` is ``<{idempotency key}@{domain of smtp.from}>``: the same on every attempt
of a step, so a message sent again after a crash (sent, but the step not yet recorded) is
recognisable as the same message by its recipients and their mail software.

Security (``smtp.security``): ``none`` speaks plain SMTP (credentials, when configured,
then travel in clear: use it only towards a relay on loopback or a trusted network);
``starttls`` upgrades the connection and fails, before any credential is sent, when the
server does not offer STARTTLS; ``tls`` is TLS from the first byte (usually port 465).
Certificates are verified against the system's CAs with hostname checking
(``ssl.create_default_context()``). To trust a private CA, point OpenSSL's own
``SSL_CERT_FILE`` (or ``SSL_CERT_DIR``) environment variable at it; note that this replaces
the system bundle for the whole process rather than adding to it.

This is the only module that imports ``smtplib``.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import getaddresses, parseaddr
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.errors import Fail, Retry
from engine.rules.config import Smtp
from engine.run.action import Action, Context

from ._params import Headers, at_least_one, one_or_many

#: Headers the action writes itself; ``headers:`` may not set them (lower-case names).
#: Addresses and the subject have their own params, the sender comes from ``smtp.from``,
#: Message-ID and Date are the action's, and the MIME headers describe the body it builds.
RESERVED_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding",
    }
)  # fmt: skip

#: The right-hand side of Message-ID when ``smtp.from`` has no usable domain.
FALLBACK_DOMAIN = "hookwise.local"

# Characters of the idempotency key kept as they are in the Message-ID's left part
# (RFC 5322 atext minus "=", which escapes the others, and ".", which may not repeat).
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9!#$%&'*+/?^_`{|}~-]")
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")


def _address(value: str) -> str:
    # Loose on purpose: the SMTP server is the judge; this catches "{{ }}" gone wrong,
    # a name without an address, and line breaks (header injection).
    if "\r" in value or "\n" in value:
        raise ValueError("an email address must not contain a line break")
    if "@" not in parseaddr(value)[1]:
        raise ValueError("not an email address (expected 'user@example.com' or 'Name <user@example.com>')")
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain a line break")
    return value


def _unreserved(headers: dict[str, str]) -> dict[str, str]:
    # Refused rather than silently overridden: a rule that sets From expects it to show.
    for name in headers:
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(
                f"header {name!r} is set by the email action; use its own parameter or smtp settings instead"
            )
    return headers


Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[list[Address], BeforeValidator(one_or_many, json_schema_input_type=Address | list[Address])]


class EmailParams(BaseModel):
    """Parameters of the ``email`` action: at least one of ``text`` and ``html``
    (both make a multipart/alternative message)."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[Addresses, Field(min_length=1)] = Field(
        description="Recipient address, or a list of them (at least one)."
    )
    cc: Addresses | None = Field(default=None, description="Carbon-copy address or list of addresses.")
    bcc: Addresses | None = Field(
        default=None, description="Blind-copy address or list of addresses (not shown in the message)."
    )
    reply_to: Address | None = Field(default=None, description="The Reply-To address.")
    subject: Annotated[str, AfterValidator(_one_line)] = Field(description="The subject line.")
    text: str | None = Field(default=None, description="The plain-text body.")
    html: str | None = Field(default=None, description="The HTML body.")
    headers: Annotated[Headers, AfterValidator(_unreserved)] | None = Field(
        default=None,
        description="Extra message headers (not From, To, Cc, Bcc, Reply-To, Subject, Date, Message-ID or MIME "
                    "headers).",
    )

    @model_validator(mode="after")
    def _has_body(self) -> EmailParams:
        at_least_one(self, "text", "html")
        return self


class EmailAction(Action):
    """Sends one email through ``smtp:`` and returns ``{message_id}``, plus ``refused``
    (address -> the server's reply) when the server accepted the message for some
    recipients but refused others.

    A partial refusal is a success on purpose: the message has gone to the accepted
    recipients, and a retry would send it to them again. Bcc recipients are in the SMTP
    envelope only, never in a header. One connection per call; nothing is kept on
    ``self`` between calls."""

    name = "email"
    Params = EmailParams

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self._smtp: Smtp = settings.smtp if settings is not None else Smtp()

    def run(self, params: BaseModel, ctx: Context) -> dict[str, Any]:
        assert isinstance(params, EmailParams)
        if not self._smtp.from_:
            raise Fail(
                "email: smtp.from is not set: add a sender to the config, e.g. smtp: {from: \"Ops <ops@example.com>\"}"
            )
        sender = parseaddr(self._smtp.from_)[1]
        if "@" not in sender:
            raise Fail(f"email: smtp.from {self._smtp.from_!r} is not an email address")
        msg_id = message_id(ctx.idempotency_key, sender)
        message = build_message(params, self._smtp.from_, msg_id)
        refused = _send(self._smtp, min(self._smtp.timeout, ctx.timeout), message, sender, _envelope_recipients(params))
        output: dict[str, Any] = {"message_id": msg_id}
        if refused:
            output["refused"] = refused
            ctx.logger.warning(
                "email %s: refused for %s", output["message_id"], ", ".join(f"{a} ({r})" for a, r in refused.items())
            )
        return output


def message_id(idempotency_key: str, sender: str) -> str:
    """``<key@domain>`` for a step: the key (``<run id>-<step>``) with characters a
    Message-ID cannot hold escaped as ``=XX``; the domain of ``sender``, or
    :data:`FALLBACK_DOMAIN` when it has none usable."""
    left = _ID_UNSAFE.sub(lambda m: "".join(f"={b:02X}" for b in m.group().encode()), idempotency_key)
    return f"<{left or 'step'}@{_id_domain(sender.rpartition('@')[2])}>"


def _id_domain(domain: str) -> str:
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return FALLBACK_DOMAIN
    return ascii_domain if _DOMAIN.fullmatch(ascii_domain) else FALLBACK_DOMAIN


def build_message(params: EmailParams, from_: str, msg_id: str) -> EmailMessage:
    """The message as sent: headers, then a text or html body, or both as
    multipart/alternative. No Bcc header."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = from_
    message["To"] = ", ".join(params.to)
    if params.cc:
        message["Cc"] = ", ".join(params.cc)
    if params.reply_to:
        message["Reply-To"] = params.reply_to
    message["Subject"] = params.subject
    message["Date"] = datetime.now(UTC)
    message["Message-ID"] = msg_id
    for name, value in (params.headers or {}).items():
        message[name] = value
    _set_body(message, params.text, params.html)
    return message


def _set_body(message: EmailMessage, text: str | None, html: str | None) -> None:
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")


def _envelope_recipients(params: EmailParams) -> list[str]:
    """Bare addresses of to, cc and bcc, each once, in that order."""
    named = [*params.to, *(params.cc or []), *(params.bcc or [])]
    return list(dict.fromkeys(address for _, address in getaddresses(named) if address))


# -- the SMTP conversation -------------------------------------------------------------------


def _send(smtp: Smtp, timeout: float, message: EmailMessage, sender: str, recipients: list[str]) -> dict[str, str]:
    """Connect, secure, log in and send; returns the refused recipients (address ->
    ``"code reply"``). Every failure leaves as Retry or Fail (see the module docstring)."""
    where = f"{smtp.host}:{smtp.port}"
    with _translated(where, "connecting", timeout, smtp.password):
        client = _connect(smtp, timeout)
    try:
        if smtp.security == "starttls":
            with _translated(where, "STARTTLS", timeout, smtp.password):
                _starttls(client, where)
        if smtp.username:
            with _translated(where, "login", timeout, smtp.password):
                client.login(smtp.username, smtp.password or "")
        with _translated(where, "sending", timeout, smtp.password):
            refused = client.send_message(message, sender, recipients)
    finally:
        _close(client)
    return {address: _reply(code, text) for address, (code, text) in refused.items()}


def _connect(smtp: Smtp, timeout: float) -> smtplib.SMTP:
    if smtp.security == "tls":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout, context=ssl.create_default_context())
    return smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)


def _starttls(client: smtplib.SMTP, where: str) -> None:
    # Checked here, not left to smtplib, for a message that says what to do; either way
    # nothing after this (credentials, the message) is sent over a plain connection.
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("starttls"):
        raise Fail(f"email: {where} does not offer STARTTLS (smtp.security is starttls); nothing was sent")
    client.starttls(context=ssl.create_default_context())
    client.ehlo()


def _close(client: smtplib.SMTP) -> None:
    # A failing QUIT after the message was accepted must not turn into a Retry (and a
    # second copy): the outcome is already decided when we get here.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


@contextmanager
def _translated(where: str, phase: str, timeout: float, password: str | None) -> Iterator[None]:
    """Turn smtplib's and the socket's errors into Retry or Fail naming ``phase`` and
    the server; the password is masked should a server ever echo it."""
    try:
        yield
    except (Retry, Fail):
        raise
    except Exception as exc:  # noqa: BLE001 - every error becomes Retry or Fail, with its message
        signal, message = _classify(exc, timeout)
        raise signal(_mask(f"email: {where}: {phase}: {message}", password)) from None


def _classify(exc: Exception, timeout: float) -> tuple[type[Retry] | type[Fail], str]:
    """Whether ``exc`` is worth another attempt, and what to say about it. The order
    matters: smtplib's exceptions and ssl's are OSErrors too."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _recipients_refused(exc.recipients)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code), f"the server replied {_reply(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib reports a read that timed out as a disconnect; say what happened.
        if isinstance(exc.__context__, TimeoutError):
            return Retry, f"timed out after {timeout:g}s"
        return Retry, f"the server closed the connection ({exc or 'unexpectedly'})"
    if isinstance(exc, smtplib.SMTPException):  # AUTH not offered, no common mechanism, ...
        return Fail, str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Another attempt meets the same certificate; the config or the CA must change.
        return Fail, f"the server's certificate does not verify: {exc.verify_message or exc.reason}"
    if isinstance(exc, TimeoutError):
        return Retry, f"timed out after {timeout:g}s"
    if isinstance(exc, OSError):
        return Retry, exc.strerror or str(exc) or type(exc).__name__
    return Retry, f"{type(exc).__name__}: {exc}"


def _recipients_refused(refused: Mapping[str, tuple[int, bytes]]) -> tuple[type[Retry] | type[Fail], str]:
    # smtplib raises this only when every recipient was refused: nothing was sent. Worth
    # another attempt only when every refusal is temporary.
    signal = Retry if all(_by_code(code) is Retry for code, _ in refused.values()) else Fail
    return signal, "every recipient was refused: " + "; ".join(f"{a}: {_reply(c, t)}" for a, (c, t) in refused.items())


def _by_code(code: int) -> type[Retry] | type[Fail]:
    # 5xx is permanent by RFC 5321; 4xx temporary; anything else is a confused server,
    # which the step's retry policy bounds.
    return Fail if 500 <= code < 600 else Retry


def _reply(code: int, text: bytes | str) -> str:
    """``"550 5.1.1 no such user"``: the reply's lines joined, decoded leniently."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return " ".join([str(code), *_lines(text)])


def _lines(text: str) -> Iterable[str]:
    return (line.strip() for line in text.splitlines() if line.strip())


def _mask(text: str, password: str | None) -> str:
    return text.replace(password, "****") if password else text
