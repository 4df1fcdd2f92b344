"""Settings models (pydantic) and the config loader.

The loader reads the file with :mod:`engine.rules.yamlfile` (positions and ``${VAR}``), validates
it against :class:`Settings` and reports every problem at once as
``FILE:LINE:COL: PATH: message``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError, Problem, UsageError
from ..receive import tokenfile
from ..receive.bodies import DEEPEST
from ..secrets import Masker
from ..units import Duration, Rate, Size
from . import yamlfile
from .validation import did_you_mean, validate_rest

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

#: Where a config file is looked for when none is named (after ``$HOOKWISE_CONFIG``).
DEFAULT_LOCATIONS = ("hookwise.yaml", "/etc/hookwise/config.yaml")


class Model(BaseModel):
    """Base of every settings model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


#: Why an empty token or secret is refused: an unset ``${VAR:-}`` must not open a source.
EMPTY_SECRET = "is empty (an unset ${VAR:-}?): an empty token or secret verifies nothing; set it, or say verify: none"


def _not_empty(value: str) -> str:
    if value == "":
        raise ValueError(EMPTY_SECRET)
    return value


Secrets = Annotated[list[Annotated[str, AfterValidator(_not_empty)]], Field(min_length=1)]


def _as_list(value: Any) -> Any:
    """Accept one secret or a list of them (for rotation). An empty one is an error, at
    the value itself (a list's empty entry at its index)."""
    if isinstance(value, str):
        return [_not_empty(value)]
    return value


def _networks(value: list[str]) -> list[str]:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return value


#: IP addresses and networks (``203.0.113.0/24``), each checked.
Networks = Annotated[list[str], AfterValidator(_networks)]


class Server(Model):
    host: str = Field("127.0.0.1", description="Address the receiver listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the receiver listens on.")
    max_body: Size = Field(1024 * 1024, description="Largest request body accepted, e.g. 1MiB.")
    public_url: str | None = Field(None, description="The URL senders reach this server at.")
    max_depth: int = Field(128, ge=1, le=DEEPEST, description="Deepest nesting of a JSON body accepted.")
    max_header: Size = Field(64 * 1024, ge=1024, description="Largest request line and headers, all together (431).")
    max_connections: int = Field(1000, ge=1, description="Open connections at most; idle ones are closed first.")
    read_timeout: Duration = Field(30.0, gt=0, description="Time a client has to send a request's headers and body.")
    trusted_proxies: Networks = Field(
        default_factory=list, description="Proxies (addresses, networks) whose X-Forwarded-For and Forwarded count.",
    )


class Workers(Model):
    concurrency: int = Field(
        256, ge=1, le=1024,
        description="Action steps run at once per worker process (threads); keep it above http.concurrency.",
    )


class Api(Model):
    token: str | None = Field(
        None, description="Bearer token for /api and /ui; without one only loopback clients are served."
    )

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class Smtp(Model):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = None
    from_: str | None = Field(None, alias="from", description='Sender, e.g. "Ops <ops@example.com>".')
    timeout: Duration = 30.0


class Breaker(Model):
    failures: int = Field(10, ge=0, description="Consecutive failed calls that open the breaker; 0: no breaker.")
    cooldown: Duration = Field(30.0, description="How long an open breaker waits before a probe call.")


class HostLimits(Model):
    """Delivery control of one destination host; what is not given comes from ``http:``."""

    concurrency: int | None = Field(None, ge=1, le=4096, description="Calls in flight at once to this host.")
    rate: Rate | None = Field(None, description="Most calls per period to this host, e.g. 10/s, 600/m.")
    breaker: Breaker | None = Field(None, description="The circuit breaker of this host.")


class Http(Model):
    timeout: Duration = Field(10.0, description="Default timeout of the http action.")
    allow_private: bool = Field(
        False, description="Let the http action reach private, loopback and link-local addresses."
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="Hosts the http action may reach even when private."
    )
    concurrency: int = Field(128, ge=1, le=4096, description="Calls in flight at once per destination host.")
    rate: Rate | None = Field(None, description="Most calls per period per destination host (default: no limit).")
    breaker: Breaker = Field(Breaker(), description="The circuit breaker of each destination host.")
    hosts: dict[str, HostLimits] = Field(default_factory=dict, description="Delivery control by destination host name.")

    @field_validator("hosts")
    @classmethod
    def _lower_hosts(cls, value: dict[str, HostLimits]) -> dict[str, HostLimits]:
        for host in value:
            bare = host.strip("[]")
            if not bare or any(c in bare for c in "/@ \t") or (":" in bare and not _is_ip(bare)):
                raise ValueError(f"{host!r} is not a host name (no scheme, port or path)")
        return {host.strip("[]").rstrip(".").lower(): limits for host, limits in value.items()}

    @field_validator("allow_hosts", mode="before")
    @classmethod
    def _drop_empty(cls, value: Any) -> Any:
        # An unset ${VAR:-} leaves an empty entry: it names no host.
        return [v for v in value if v != ""] if isinstance(value, list) else value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class RetryPolicy(Model):
    attempts: int = Field(5, ge=1, le=1000, description="Attempts in all, the first included.")
    backoff: Duration = Field(2.0, description="Wait before the second attempt; doubles each time, with jitter.")
    max_backoff: Duration = Field(600.0, description="Longest wait between attempts.")


class Defaults(Model):
    retry: RetryPolicy = RetryPolicy()
    timeout: Duration = Field(30.0, description="Longest time one step may run.")


class Retention(Model):
    events: Duration = Field(30 * 86400.0, description="Events and finished runs older than this are pruned.")


class Hover(Model):
    base_url: str = "https://hover.to"
    client_id: str | None = None
    client_secret: str | None = None
    redirect_uri: str | None = None


class Hmac(Model):
    header: str = Field(description="Header holding the signature.")
    secret: Annotated[Secrets, Field(description="Secret, or a list of secrets during rotation.")]
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field("", description='Text before the signature in the header, e.g. "sha256=".')

    @field_validator("secret", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)


class Verify(Model):
    hmac: Hmac


class Response(Model):
    status: int = Field(202, ge=200, le=299)
    body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


#: What one daemon process runs (``hookwise serve --role``).
Role = Literal["all", "receiver", "worker"]
ROLES: tuple[Role, ...] = get_args(Role)

#: The source presets: the one list of their names (sources.py and verify.py key their tables by it).
Preset = Literal["hover", "github", "stripe", "standard", "slack"]
PRESETS: tuple[Preset, ...] = get_args(Preset)
#: Presets signed with ``secret``; hover signs with ``hmac_secret`` instead.
_NEEDS_SECRET = frozenset(PRESETS) - {"hover"}
_LOCATOR = re.compile(r"^(body|header):(.+)$")


class Source(Model):
    preset: Preset | None = None
    type: str | None = Field(
        None, description="Where the event type comes from: body:PATH, header:NAME, or a fixed type."
    )
    id: str | None = Field(
        None, description="Where the delivery id comes from: body:PATH or header:NAME; default: a hash of the body."
    )
    secret: Secrets | None = Field(None, description="Signing secret of the preset (a list during rotation).")
    hmac_secret: Secrets | None = Field(
        None, description="Hover: the hmac_secret returned when the webhook was registered."
    )
    verify: Verify | Literal["none"] | None = Field(
        None,
        description="verify.hmac: a custom signature; or none: the source accepts requests from anyone, on purpose.",
    )
    token: Secrets | None = Field(
        None, description="Shared secret the sender puts in the URL (?token=) or in token_header."
    )
    token_file: str | None = Field(
        None, min_length=1,
        description=(
            "A file holding the token (relative to the config file); "
            "`serve` creates it with a random token when missing."
        ),
    )
    token_header: str | None = None
    tolerance: Duration = Field(300.0, description="Largest clock difference accepted for timestamped signatures.")
    allow_ips: Networks = Field(default_factory=list, description="Networks allowed to send, e.g. 203.0.113.0/24.")
    response: Response | None = None
    dedupe_window: Duration = Field(7 * 86400.0, description="How long a delivery id is remembered.")

    @field_validator("secret", "hmac_secret", "token", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not _LOCATOR.match(value):
            raise ValueError("expected body:PATH or header:NAME")
        return value

    @model_validator(mode="after")
    def _check_preset(self) -> Source:
        if self.preset in _NEEDS_SECRET and not self.secret:
            raise ValueError(f"the {self.preset} preset needs 'secret'")
        if self.preset == "hover" and self.secret:
            raise ValueError("the hover preset takes 'hmac_secret' (and 'token'), not 'secret'")
        if self.preset is None and self.secret:
            raise ValueError("'secret' belongs to a preset; a custom source uses verify.hmac")
        if self.hmac_secret and self.preset != "hover":
            raise ValueError("'hmac_secret' belongs to the hover preset")
        return self._check_verified()

    def _check_verified(self) -> Source:
        # SPEC 4: a source verifies its sender or says explicitly that it does not.
        if self.token and self.token_file:
            raise ValueError("give 'token' or 'token_file', not both")
        checks = self.checks()
        if self.verify == "none" and checks:
            also = ", ".join(checks)
            raise ValueError(f"'verify: none' says anyone may send, but the source also has {also}: remove one")
        if self.verify != "none" and not checks:
            raise ValueError(
                "accepts requests from anyone: give it a token (or token_file), a secret, verify.hmac or allow_ips, "
                "or say verify: none"
            )
        return self

    def checks(self) -> list[str]:
        """The keys that make the source verify its sender."""
        keys = ("token", "token_file", "secret", "hmac_secret", "allow_ips")
        found = [k for k in keys if getattr(self, k)]
        return found + (["verify.hmac"] if isinstance(self.verify, Verify) else [])

    def authenticated(self) -> bool:
        """Whether any check proves where a request came from."""
        return bool(self.checks())


class Settings(Model):
    """The whole config file."""

    server: Server = Server()
    store: str = Field(
        "sqlite:///data/hookwise.db", description="sqlite:///PATH (relative to the config file) or postgresql://..."
    )
    workers: Workers = Workers()
    rules: list[str] = Field(
        default_factory=lambda: ["rules/"], description="Rule files or folders of *.yaml, relative to the config file."
    )
    plugins: dict[str, str] = Field(default_factory=dict, description='Extra actions: name -> "module:Class".')
    api: Api = Api()
    smtp: Smtp = Smtp()
    http: Http = Http()
    defaults: Defaults = Defaults()
    retention: Retention = Retention()
    hover: Hover = Hover()
    sources: dict[Annotated[str, Field(pattern=SOURCE_PATTERN)], Source] = Field(default_factory=dict)

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DB")
        return value


@dataclass(frozen=True)
class Config:
    """A loaded config: its settings, where it came from, and the secrets it holds."""

    settings: Settings
    path: Path
    secrets: frozenset[str] = field(default_factory=frozenset)
    warnings: tuple[Problem, ...] = ()
    document: yamlfile.Document | None = field(default=None, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path named in the config, taken relative to the config file."""
        return (self.base_dir / relative).resolve() if not os.path.isabs(relative) else Path(relative)

    def store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute."""
        url = self.settings.store
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return "sqlite:///" + str(self.resolve(url[len("sqlite:///") :]))
        return url


def choose_source(config: Config, name: str | None, *, also: Sequence[str] = ()) -> str:
    """The source an event is taken to arrive on: ``name`` when the config has it (or it is
    one of ``also``), else, when no name is given, the only source configured. Raises
    :class:`UsageError` naming the sources there are."""
    sources = sorted(config.settings.sources)
    known = ", ".join(sources) or "none"
    if name is None:
        if len(sources) == 1:
            return sources[0]
        raise UsageError(f"--source is required: {config.path.name} has {len(sources)} sources ({known})")
    if name in sources or name in also:
        return name
    others = "".join(f"; {extra} for the events hookwise emits itself" for extra in also)
    hint = did_you_mean(name, [*sources, *also])
    raise UsageError(f"no source named {name!r} in {config.path.name} (sources: {known}{others}){hint}")


def find_config(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to use: ``explicit``, else ``$HOOKWISE_CONFIG``, else the defaults."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get("HOOKWISE_CONFIG"):
        return Path(environ["HOOKWISE_CONFIG"])
    for candidate in DEFAULT_LOCATIONS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError(
        "no config file: pass -c FILE, set HOOKWISE_CONFIG, or create ./hookwise.yaml or /etc/hookwise/config.yaml"
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the config file; raise :class:`ConfigError` with
    every problem."""
    config, problems = read_config(path, environ)
    if problems:
        raise ConfigError(problems)
    return config


def read_config(path: str | Path, environ: Mapping[str, str] | None = None) -> tuple[Config, list[Problem]]:
    """Read, interpolate and validate the config file: the config and every problem found
    (their messages masked with the file's secrets). Where values were refused the config
    holds defaults, so that what depends on the rest (the rule files) can still be loaded
    and checked. Raises :class:`ConfigError` only when the file cannot be read, parsed or
    taken as a mapping."""
    path = Path(path)
    doc = yamlfile.load(path, environ=environ, collect=True)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.locate(Problem("the config file must be a mapping of settings"))])
    settings, refused = validate_rest(Settings, data)
    if settings is None:
        settings = Settings()
    elif "rules" in data and "rules" not in settings.model_fields_set:
        # `rules:` itself was refused: load none rather than the default folder the user did not name.
        settings = settings.model_copy(update={"rules": []})
    settings, file_tokens, token_problems = _read_token_files(settings, path.resolve().parent, doc)
    masker = Masker(doc.secrets)
    problems = [p.masked(masker.mask) for p in merge_problems(doc.problems, locate_all(doc, refused)) + token_problems]
    secrets = frozenset(doc.secrets) | file_tokens
    return Config(settings=settings, path=path.resolve(), secrets=secrets, document=doc), problems


def _read_token_files(
    settings: Settings, base: Path, doc: yamlfile.Document,
) -> tuple[Settings, frozenset[str], list[Problem]]:
    """Settings whose sources with ``token_file`` carry the file's token as their
    ``token`` (a file that does not exist yet leaves it unset: see
    :func:`missing_token_files`), those tokens, which are secrets, and the problems of
    files that cannot be read."""
    sources = dict(settings.sources)
    tokens: set[str] = set()
    problems: list[Problem] = []
    for name, source in settings.sources.items():
        if source.token_file is None:
            continue
        try:
            token = tokenfile.read(base / source.token_file)
        except tokenfile.TokenFileError as exc:
            problems.append(doc.locate(Problem(str(exc), ("sources", name, "token_file"))))
            continue
        if token is not None:
            sources[name] = source.model_copy(update={"token": [token]})
            tokens.add(token)
    return settings.model_copy(update={"sources": sources}), frozenset(tokens), problems


def missing_token_files(config: Config) -> list[tuple[str, Path]]:
    """(source, path) of each ``token_file`` that does not exist yet."""
    return [
        (name, config.resolve(source.token_file)) for name, source in config.settings.sources.items()
        if source.token_file is not None and not source.token
    ]


def merge_problems(first: list[Problem], second: list[Problem]) -> list[Problem]:
    """Both lists in file order, without a second report for the same place."""
    seen = {(p.line, p.col) for p in first}
    merged = first + [p for p in second if (p.line, p.col) not in seen]
    return sorted(merged, key=lambda p: (p.line or 0, p.col or 0))


def locate_all(doc: yamlfile.Document, problems: list[Problem]) -> list[Problem]:
    """Give each problem its place in ``doc``: the key for unknown keys, else the value."""
    return [doc.locate(p, key=p.message.startswith(("unknown key", "invalid key"))) for p in problems]
