"""engine/rules/config.py: settings, discovery, and FILE:LINE:COL problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.rules.config import find_config, load_config, missing_token_files


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return [str(p).replace(str(path), "C") for p in info.value.problems]


def test_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n"), {})
    settings = config.settings
    assert (settings.server.host, settings.server.port, settings.server.max_body) == ("127.0.0.1", 8000, 1024 * 1024)
    assert settings.defaults.retry.attempts == 5 and settings.defaults.retry.backoff == 2.0
    assert settings.defaults.retry.max_backoff == 600.0 and settings.retention.events == 30 * 86400
    assert config.store_url() == f"sqlite:///{tmp_path / 'data' / 'hookwise.db'}"


def test_example_config_loads(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    example = tmp_path / "config.example.yaml"
    shutil.copy(root / "config.example.yaml", example)
    config = load_config(example, {})
    hover = config.settings.sources["hover"]
    assert hover.preset == "hover" and hover.authenticated() and config.warnings == ()
    assert hover.token is None and missing_token_files(config) == [("hover", tmp_path / "data" / "hover-url-token")]

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hover-url-token").write_text("t0ken-from-the-file\n")
    config = load_config(example, {})
    assert config.settings.sources["hover"].token == ["t0ken-from-the-file"] and missing_token_files(config) == []
    assert "t0ken-from-the-file" in config.secrets  # masked like a value from the environment


def test_durations_sizes_and_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {max_body: 512KiB}\n"
        "defaults: {retry: {backoff: 500ms, max_backoff: 1h}, timeout: 20}\n"
        "sources:\n"
        "  gh: {preset: github, secret: [\"${OLD}\", \"${NEW}\"]}\n"
        "  custom: {type: 'header:X-Kind', id: 'body:delivery.id', verify: none}\n",
    )
    config = load_config(path, {"OLD": "old-secret", "NEW": "new-secret"})
    settings = config.settings
    assert settings.server.max_body == 512 * 1024
    assert (settings.defaults.retry.backoff, settings.defaults.retry.max_backoff, settings.defaults.timeout) == (
        0.5, 3600.0, 20.0
    )
    assert settings.sources["gh"].secret == ["old-secret", "new-secret"]
    assert settings.sources["custom"].token is None and not settings.sources["custom"].authenticated()
    assert config.secrets == {"old-secret", "new-secret"}


def test_unknown_key_names_file_line_col_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  host: 0.0.0.0\n  prot: 80\n")
    assert problems(path) == ["C:3:3: server.prot: unknown key (did you mean 'port'?)"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n"
        "  port: 99999\n"
        "store: mysql://db\n"
        "sources:\n"
        "  github: {preset: github}\n"
        "  custom:\n"
        "    allow_ips: [nope]\n"
        "    verify: {hmac: {header: X-Sig, secret: \"${S}\"}}\n"
        "smtp: {security: ssl}\n",
    )
    found = problems(path)
    assert len(found) == 6, found
    assert found[0].startswith("C:2:9: server.port: ")
    assert found[1].startswith("C:3:8: store: ") and "sqlite:///" in found[1]
    assert found[2].startswith("C:5:11: sources.github: ") and "the github preset needs 'secret'" in found[2]
    assert found[3].startswith("C:7:16: sources.custom.allow_ips") and "'nope' is not an IP" in found[3]
    assert found[4] == "C:8:44: sources.custom.verify.hmac.secret: environment variable S is not set"
    assert found[5].startswith("C:9:18: smtp.security: ")


def test_source_names_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  Bad_Name: {token: x}\n")
    assert problems(path)[0].startswith("C:2:3: sources.Bad_Name")


def test_a_list_is_not_a_config(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "- a\n")) == ["C:1:1: the config file must be a mapping of settings"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config("given.yaml", {"HOOKWISE_CONFIG": "env.yaml"}) == Path("given.yaml")
    assert find_config(None, {"HOOKWISE_CONFIG": "env.yaml"}) == Path("env.yaml")
    write(tmp_path, "{}", "hookwise.yaml")
    assert find_config(None, {}) == Path("hookwise.yaml")
    (tmp_path / "hookwise.yaml").unlink()
    if not Path("/etc/hookwise/config.yaml").exists():
        with pytest.raises(ConfigError, match="no config file"):
            find_config(None, {})


def test_an_empty_token_or_secret_is_an_error_where_it_is_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http: {allow_hosts: [\"${HOST:-}\"]}\n"          # an empty host names no host: dropped
        "sources:\n"
        "  hover: {preset: hover, token: \"${HOVER_URL_TOKEN:-}\"}\n"
        "  rotated: {token: [k3y-1, \"${NEW_TOKEN:-}\"]}\n"
        "  gh: {preset: github, secret: \"${GH:-}\"}\n"
        "  signed: {hmac_secret: \"${HMAC:-}\", preset: hover}\n"
        "  custom:\n"
        "    verify: {hmac: {header: X-Sig, secret: \"${S:-}\"}}\n",
    )
    empty = "is empty (an unset ${VAR:-}?): an empty token or secret verifies nothing; set it, or say verify: none"
    assert problems(path) == [
        f"C:3:33: sources.hover.token: {empty}",
        f"C:4:28: sources.rotated.token[1]: {empty}",
        f"C:5:32: sources.gh.secret: {empty}",
        f"C:6:25: sources.signed.hmac_secret: {empty}",
        f"C:8:44: sources.custom.verify.hmac.secret: {empty}",
    ]
    environ = {"HOVER_URL_TOKEN": "t0ken", "NEW_TOKEN": "k3y-2", "GH": "g", "S": "s", "HMAC": "h", "HOST": ""}
    config = load_config(path, environ)
    assert config.settings.sources["rotated"].token == ["k3y-1", "k3y-2"] and config.settings.http.allow_hosts == []


def test_a_source_verifies_its_sender_or_says_verify_none(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sources:\n"
        "  open: {type: body:kind}\n"
        "  hover: {preset: hover}\n"
        "  both: {verify: none, token: t0ken}\n"
        "  twice: {token: t0ken, token_file: t.txt}\n",
    )
    anyone = (
        "accepts requests from anyone: give it a token (or token_file), a secret, verify.hmac or allow_ips, "
        "or say verify: none"
    )
    assert problems(path) == [
        f"C:2:9: sources.open: {anyone}",
        f"C:3:10: sources.hover: {anyone}",
        "C:4:9: sources.both: 'verify: none' says anyone may send, but the source also has token: remove one",
        "C:5:10: sources.twice: give 'token' or 'token_file', not both",
    ]
    ok = write(tmp_path, "sources:\n  open: {verify: none}\n  lan: {allow_ips: [10.0.0.0/8]}\n"
                         "  signed: {preset: hover, hmac_secret: s}\n", "ok.yaml")
    sources = load_config(ok, {}).settings.sources
    assert [(n, s.authenticated()) for n, s in sources.items()] == [("open", False), ("lan", True), ("signed", True)]


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty: delete it and `hookwise serve` makes a new token, or write one into it"),
    ("  \n", "is empty"),
    ("two words\n", "must hold one token on one line, without spaces"),
])
def test_a_token_file_must_hold_a_token(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "url-token").write_text(content)
    path = write(tmp_path, "sources:\n  hover: {preset: hover, token_file: url-token}\n")
    [problem] = problems(path)
    assert problem.startswith(f"C:2:38: sources.hover.token_file: {tmp_path / 'url-token'} ") and message in problem
