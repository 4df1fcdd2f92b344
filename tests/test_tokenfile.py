"""engine/receive/tokenfile.py, and the first run of the example project: `hookwise serve` makes the
URL token, logs the URL to register, and `hookwise send` signs with it, with nothing set in
the environment."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.receive import tokenfile

from .conftest import ROOT
from .support import DaemonProcess, free_port, post


def test_create_makes_a_random_token_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "hover-url-token"
    token = tokenfile.create(path)
    assert len(token) >= 40 and path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokenfile.create(path) == token and tokenfile.read(path) == token  # kept, not remade
    assert tokenfile.create(tmp_path / "other") != token
    assert sorted(p.name for p in path.parent.iterdir()) == ["hover-url-token"]  # no drafts left behind


def test_processes_creating_it_at_once_agree_on_one_token(tmp_path: Path) -> None:
    path = tmp_path / "url-token"
    found: list[str] = []
    start = threading.Barrier(8)

    def make() -> None:
        start.wait()
        found.append(tokenfile.create(path))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(found) == 8 and set(found) == {path.read_text().strip()}


def test_read(tmp_path: Path) -> None:
    path = tmp_path / "t"
    assert tokenfile.read(path) is None
    path.write_text("  chosen-by-hand \n")
    assert tokenfile.read(path) == "chosen-by-hand"
    path.write_text("\n")
    with pytest.raises(tokenfile.TokenFileError, match="is empty"):
        tokenfile.read(path)
    with pytest.raises(tokenfile.TokenFileError, match="cannot read"):
        tokenfile.read(tmp_path)  # a folder


def test_create_says_why_it_cannot(tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(tmp_path / "nowhere")  # a dangling link where the folder would be
    with pytest.raises(tokenfile.TokenFileError, match=f"cannot create {tmp_path / 'data' / 'token'}: "):
        tokenfile.create(tmp_path / "data" / "token")


# --- the first run of the example project ---------------------------------------------------


#: Environment variables the example config reads: none is set on a fresh machine.
OURS = ("HOOKWISE_", "HOVER_", "CRM_", "OPS_", "SMTP_", "HTTP_")


def hookwise(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60,
    )


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """The example project as a fresh checkout has it: no data/, nothing in the environment."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.example.yaml")
    return tmp_path


def test_the_first_run_makes_the_token_and_send_uses_it(fresh: Path) -> None:
    config = fresh / "config.example.yaml"
    event = fresh / "rules" / "tests" / "events" / "webhook-verification-code.json"
    early = hookwise(fresh, "send", "-c", str(config), "--source", "hover", str(event))
    assert early.returncode == 2 and early.stderr.strip() == (
        f"error: {fresh / 'data' / 'hover-url-token'} (sources.hover.token_file) does not exist yet: "
        "`hookwise serve` makes it when it starts; start the daemon first"
    )

    env = {k: "" for k in os.environ if k.startswith(OURS)}
    daemon = DaemonProcess(config, free_port(), env=env)
    try:
        daemon.wait_ready()
        token_file = fresh / "data" / "hover-url-token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        url = f"{daemon.url}/hooks/hover"
        sent = hookwise(fresh, "send", "-c", str(config), "--source", "hover", str(event), "--url", url)
        assert sent.returncode == 0 and sent.stdout.startswith("202 "), sent.stdout + sent.stderr
        assert post(f"{daemon.url}/hooks/hover", event.read_text())[0] == 401
        assert post(f"{daemon.url}/hooks/hover?token=wrong", event.read_text())[0] == 401
        checked = hookwise(fresh, "check", "-c", str(config), "--strict")
        assert checked.returncode == 0 and checked.stderr == ""
    finally:
        assert daemon.stop() == 0, daemon.output()

    lines = [json.loads(line) for line in daemon.output().splitlines() if line.startswith("{")]
    showing = [line["message"] for line in lines if token in json.dumps(line)]
    assert showing == [
        f"source hover: register http://127.0.0.1:{daemon.port}/hooks/hover?token={token} with Hover "
        "(`hookwise hover register URL`); it must reach this address: set server.public_url to the one it does; "
        f"the token is kept in {token_file}"
    ]
    made = f"sources.hover.token_file: made {token_file} with a random token (mode 0600)"
    assert any(line["message"] == made for line in lines)

    # a second start keeps the token and says the URL again
    daemon = DaemonProcess(config, free_port(), env=env)
    try:
        daemon.wait_ready()
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert token_file.read_text().strip() == token
    assert sum(f"?token={token} " in line for line in daemon.output().splitlines()) == 1
