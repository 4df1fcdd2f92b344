"""The email action against a real SMTP server (aiosmtpd) on loopback, in a thread.

TLS tests use a CA and a server certificate made here with ``cryptography``; the action
trusts the CA through OpenSSL's ``SSL_CERT_FILE``, as a deployment with a private CA would.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from actions.email import EmailAction, EmailParams, message_id
from engine.errors import Fail, Retry
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context

USER, PASSWORD = "mailer", "s3cret-Pa55"
FROM = "Ops <ops@example.com>"

# -- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    paths = Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(
        _cert("hookwise test CA", "hookwise test CA", ca_key, ca_key, ca=True).public_bytes(serialization.Encoding.PEM)
    )
    paths.cert.write_bytes(
        _cert("localhost", "hookwise test CA", key, ca_key, ca=False).public_bytes(serialization.Encoding.PEM)
    )
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def trust_ca(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))


# -- the server ----------------------------------------------------------------------------


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it accepted, answers MAIL and DATA with
    ``mail_reply`` / ``data_reply`` when set, and refuses the recipients in ``refuse``
    (address -> reply)."""

    refuse: dict[str, str] = field(default_factory=dict)
    mail_reply: str | None = None
    data_reply: str | None = None
    envelopes: list[Envelope] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        # session.ssl is set by STARTTLS; an implicit-TLS transport says so itself.
        self.tls.append(session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted for delivery"

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        if (login, password) == (USER, PASSWORD):
            return AuthResult(success=True)
        # Echoes the password, as a careless server might: the action must mask it.
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 bad credentials ({password})")

    def message(self, index: int = -1) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        # Line ends as a mail store keeps them, so that bodies read back as written.
        parsed = email.message_from_bytes(content.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class Server:
    port: int
    handler: Recorder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtpd() -> Iterator[Callable[..., Server]]:
    """Start an aiosmtpd server on loopback: ``smtpd(**SMTP options)``; stopped after the test."""
    started: list[Controller] = []

    def start(handler: Recorder | None = None, **options: Any) -> Server:
        handler = handler or Recorder()
        if options.pop("auth", False):
            options["authenticator"] = handler.authenticate
        port = _free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="localhost", **options)
        controller.start()
        started.append(controller)
        return Server(port, handler)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def closed_port() -> int:
    return _free_port()  # nothing listens there once the probe socket is closed


# -- the action ----------------------------------------------------------------------------


def action(port: int, **smtp: Any) -> EmailAction:
    return EmailAction(Settings.model_validate({"smtp": {"host": "127.0.0.1", "port": port, "from": FROM, **smtp}}))


def context(run_id: str = "run-1", step: int = 0, timeout: float = 5.0) -> Context:
    return Context(
        event=Event(source="hover", type="job-state-changed", body={"job_id": 42}),
        run_id=run_id,
        step_id="mail",
        attempt=1,
        idempotency_key=f"{run_id}-{step}",
        logger=logging.getLogger("tests.email"),
        rule="hover-job-complete",
        timeout=timeout,
    )


def params(**values: Any) -> EmailParams:
    values.setdefault("to", "Customer <customer@example.org>")
    values.setdefault("subject", "Job 42 is done")
    if "html" not in values:
        values.setdefault("text", "Your measurements are ready.")
    return EmailParams.model_validate(values)


def send(port: int, *, smtp: dict[str, Any] | None = None, ctx: Context | None = None, **values: Any) -> dict[str, Any]:
    return action(port, **(smtp or {})).run(params(**values), ctx or context())


# -- messages ------------------------------------------------------------------------------


def test_plain_send_has_headers_and_text_body(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    out = send(server.port, subject="Job 42 is done — café ✓")

    assert out == {"message_id": "<run-1-0@example.com>"}
    [envelope] = server.handler.envelopes
    assert envelope.mail_from == "ops@example.com"
    assert envelope.rcpt_tos == ["customer@example.org"]
    msg = server.handler.message()
    assert msg["From"] == FROM
    assert msg["To"] == "Customer <customer@example.org>"
    assert msg["Subject"] == "Job 42 is done — café ✓"
    assert msg["Message-ID"] == "<run-1-0@example.com>"
    assert msg["Date"].datetime.tzinfo is not None
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "Your measurements are ready.\n"
    assert "Reply-To" not in msg and "Cc" not in msg
    assert server.handler.tls == [False]


def test_text_and_html_make_multipart_alternative(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    send(server.port, text="plain words", html="<p>rich <b>words</b></p>")

    msg = server.handler.message()
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content() for p in parts] == ["plain words\n", "<p>rich <b>words</b></p>\n"]


def test_html_only_is_a_single_html_part(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    send(server.port, html="<p>only html</p>")

    msg = server.handler.message()
    assert msg.get_content_type() == "text/html"
    assert msg.get_content() == "<p>only html</p>\n"


def test_bcc_is_in_the_envelope_only(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    send(
        server.port, to=["a@example.org", "B <b@example.org>"], cc="Cc Person <c@example.org>",
        bcc=["hidden@example.net"]
    )

    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["a@example.org", "b@example.org", "c@example.org", "hidden@example.net"]
    msg = server.handler.message()
    assert msg["To"] == "a@example.org, B <b@example.org>"
    assert msg["Cc"] == "Cc Person <c@example.org>"
    assert "Bcc" not in msg
    assert isinstance(envelope.content, bytes) and b"hidden@example.net" not in envelope.content


def test_a_recipient_named_twice_is_sent_once(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    send(server.port, to="a@example.org", cc="A <a@example.org>", bcc="a@example.org")

    assert server.handler.envelopes[0].rcpt_tos == ["a@example.org"]


def test_reply_to_and_extra_headers(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    send(
        server.port, reply_to="Support <support@example.com>",
        headers={"X-Hookwise-Job": "42", "List-Id": "Jobs <jobs.example.com>"}
    )

    msg = server.handler.message()
    assert msg["Reply-To"] == "Support <support@example.com>"
    assert msg["X-Hookwise-Job"] == "42"
    assert msg["List-Id"] == "Jobs <jobs.example.com>"


@pytest.mark.parametrize(
    "name", ["From", "to", "BCC", "Message-ID", "Date", "Subject", "Reply-To", "Content-Type", "Sender"]
)
def test_headers_may_not_replace_those_the_action_writes(name: str) -> None:
    with pytest.raises(ValidationError, match=f"header '{name}' is set by the email action"):
        params(headers={name: "x@example.com"})


# -- Message-ID ------------------------------------------------------------------------------


def test_message_id_is_stable_across_attempts_and_differs_across_steps(smtpd: Callable[..., Server]) -> None:
    server = smtpd()
    mailer = action(server.port)
    first = mailer.run(params(), context(step=0))
    again = mailer.run(params(), context(step=0))
    other = mailer.run(params(), context(step=1))
    other_run = mailer.run(params(), context(run_id="run-2", step=0))

    assert first == again == {"message_id": "<run-1-0@example.com>"}
    assert other["message_id"] == "<run-1-1@example.com>"
    assert other_run["message_id"] == "<run-2-0@example.com>"
    sent = [server.handler.message(i)["Message-ID"] for i in range(4)]
    assert sent == ["<run-1-0@example.com>", "<run-1-0@example.com>", "<run-1-1@example.com>", "<run-2-0@example.com>"]


@pytest.mark.parametrize(
    ("key", "sender", "expected"),
    [
        ("01HZX3-2", "ops@example.com", "<01HZX3-2@example.com>"),
        ("run 1.x=2", "ops@Example.COM", "<run=201=2Ex=3D2@example.com>"),
        ("r-0", "ops@bücher.example", "<r-0@xn--bcher-kva.example>"),
        ("r-0", "ops@[192.0.2.1]", "<r-0@hookwise.local>"),
    ],
)
def test_message_id_shape(key: str, sender: str, expected: str) -> None:
    assert message_id(key, sender) == expected


# -- security and login ----------------------------------------------------------------------


def test_starttls_with_login(smtpd: Callable[..., Server], certs: Certs, trust_ca: None) -> None:
    server = smtpd(tls_context=certs.server_context(), require_starttls=True, auth=True)
    out = send(server.port, smtp={"security": "starttls", "username": USER, "password": PASSWORD})

    assert out == {"message_id": "<run-1-0@example.com>"}
    assert server.handler.logins == [(USER, PASSWORD)]
    assert server.handler.tls == [True]


def test_implicit_tls(smtpd: Callable[..., Server], certs: Certs, trust_ca: None) -> None:
    server = smtpd(ssl_context=certs.server_context())
    send(server.port, smtp={"security": "tls"})

    assert server.handler.tls == [True]
    assert server.handler.message()["Message-ID"] == "<run-1-0@example.com>"


def test_implicit_tls_refuses_an_untrusted_certificate(
    smtpd: Callable[..., Server], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = smtpd(ssl_context=certs.server_context())

    with pytest.raises(Fail, match=r"certificate does not verify"):
        send(server.port, smtp={"security": "tls"})
    assert server.handler.envelopes == []


def test_starttls_not_offered_fails_before_credentials(smtpd: Callable[..., Server]) -> None:
    # AUTH is offered in clear here: a client that skipped the STARTTLS check would log in.
    server = smtpd(auth=True, auth_require_tls=False)

    with pytest.raises(Fail, match=r"does not offer STARTTLS"):
        send(server.port, smtp={"security": "starttls", "username": USER, "password": PASSWORD})
    assert server.handler.logins == []
    assert server.handler.envelopes == []


def test_wrong_password_fails_with_the_reply_and_without_the_password(smtpd: Callable[..., Server]) -> None:
    server = smtpd(auth=True, auth_require_tls=False)
    wrong = "not-the-Pa55word"

    with pytest.raises(Fail) as caught:
        send(server.port, smtp={"username": USER, "password": wrong})
    message = str(caught.value)
    assert "login" in message and "535 5.7.8 bad credentials" in message
    assert wrong not in message and "****" in message
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN), all refused
    assert server.handler.logins and set(server.handler.logins) == {(USER, wrong)}
    assert server.handler.envelopes == []


def test_login_without_auth_offered_fails(smtpd: Callable[..., Server]) -> None:
    server = smtpd(auth=True)  # AUTH only after TLS, and this client stays plain

    with pytest.raises(Fail, match=r"AUTH extension not supported"):
        send(server.port, smtp={"username": USER, "password": PASSWORD})
    assert server.handler.envelopes == []


# -- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "signal", "quoted"),
    [
        (Recorder(data_reply="451 4.3.0 try again later"), Retry, "451 4.3.0 try again later"),
        (Recorder(data_reply="554 5.6.0 message refused"), Fail, "554 5.6.0 message refused"),
        (Recorder(mail_reply="553 5.7.1 sender not allowed"), Fail, "553 5.7.1 sender not allowed"),
        (Recorder(mail_reply="452 4.3.1 insufficient storage"), Retry, "452 4.3.1 insufficient storage"),
        (
            Recorder(refuse={"a@example.org": "450 4.2.1 mailbox busy", "b@example.org": "451 4.4.0 later"}), Retry,
            "450 4.2.1 mailbox busy"
        ),
        (
            Recorder(refuse={"a@example.org": "550 5.1.1 no such user", "b@example.org": "550 5.1.1 gone"}), Fail,
            "b@example.org: 550 5.1.1 gone"
        ),
        (
            Recorder(refuse={"a@example.org": "450 4.2.1 mailbox busy", "b@example.org": "550 5.1.1 gone"}), Fail,
            "a@example.org: 450 4.2.1"
        ),
    ],
    ids=["data-451", "data-554", "mail-553", "mail-452", "rcpt-all-4xx", "rcpt-all-550", "rcpt-mixed"],
)
def test_server_replies_decide_retry_or_fail(
    smtpd: Callable[..., Server], handler: Recorder, signal: type[Exception], quoted: str
) -> None:
    server = smtpd(Recorder(refuse=dict(handler.refuse), mail_reply=handler.mail_reply, data_reply=handler.data_reply))

    with pytest.raises(signal) as caught:
        send(server.port, to=["a@example.org", "b@example.org"])
    assert type(caught.value) is signal
    assert quoted in str(caught.value)
    assert str(caught.value).startswith(f"email: 127.0.0.1:{server.port}: sending: ")
    assert server.handler.envelopes == []


def test_some_recipients_refused_is_a_success_listing_them(
    smtpd: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = smtpd(Recorder(refuse={"b@example.org": "550 5.1.1 no such user"}))

    with caplog.at_level(logging.WARNING, logger="tests.email"):
        out = send(server.port, to=["a@example.org", "b@example.org"])

    assert out == {"message_id": "<run-1-0@example.com>", "refused": {"b@example.org": "550 5.1.1 no such user"}}
    assert server.handler.envelopes[0].rcpt_tos == ["a@example.org"]
    assert "b@example.org (550 5.1.1 no such user)" in caplog.text


# -- connections -------------------------------------------------------------------------------


def test_connection_refused_is_retried(closed_port: int) -> None:
    with pytest.raises(Retry, match=rf"^email: 127\.0\.0\.1:{closed_port}: connecting: .*refused"):
        send(closed_port)


def test_a_server_that_hangs_up_is_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        hang_up = threading.Thread(target=lambda: listener.accept()[0].close())
        hang_up.start()
        with pytest.raises(Retry, match=r"closed the connection"):
            send(port)
        hang_up.join()


def test_a_silent_server_times_out_within_the_step_timeout() -> None:
    # Listening but never greeting: only the timeout ends the wait. smtp.timeout is 30s;
    # the step's 0.3s must win.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(Retry, match=r"connecting: timed out after 0\.3s"):
            send(port, ctx=context(timeout=0.3))


# -- configuration -----------------------------------------------------------------------------


def test_from_not_set_fails(closed_port: int) -> None:
    mailer = EmailAction(Settings.model_validate({"smtp": {"host": "127.0.0.1", "port": closed_port}}))
    with pytest.raises(Fail, match=r"^email: smtp\.from is not set"):
        mailer.run(params(), context())


def test_without_settings_from_is_not_set() -> None:
    with pytest.raises(Fail, match=r"smtp\.from is not set"):
        EmailAction(None).run(params(), context())
