"""engine/config.py: settings, discovery, and FILE:LINE:COL problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import find_config, load_config
from engine.errors import ConfigError


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
    config = load_config(root / "config.example.yaml", {})
    assert config.settings.sources["hover"].preset == "hover"
    assert config.settings.sources["hover"].token is None  # ${HOVER_URL_TOKEN:-} unset
    assert [p.message for p in config.warnings] == ["accepts requests from anyone: set a secret, verify.hmac or token"]


def test_durations_sizes_and_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server: {max_body: 512KiB}\n"
        "defaults: {retry: {backoff: 500ms, max_backoff: 1h}, timeout: 20}\n"
        "sources:\n"
        "  gh: {preset: github, secret: [\"${OLD}\", \"${NEW}\"]}\n"
        "  custom: {type: 'header:X-Kind', id: 'body:delivery.id', token: \"${TOK:-}\"}\n",
    )
    config = load_config(path, {"OLD": "old-secret", "NEW": "new-secret"})
    settings = config.settings
    assert settings.server.max_body == 512 * 1024
    assert (settings.defaults.retry.backoff, settings.defaults.retry.max_backoff, settings.defaults.timeout) == (0.5, 3600.0, 20.0)
    assert settings.sources["gh"].secret == ["old-secret", "new-secret"]
    assert settings.sources["custom"].token is None
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
