"""The shipped Hover rules end to end: the daemon as a process, a fake Hover API, a CRM
sink and an SMTP server, all on loopback."""

from __future__ import annotations

import email
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from engine.hover.tokens import NOT_LOGGED_IN

from .conftest import ROOT
from .fakehover import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeHover
from .support import DaemonProcess, Sink, free_port

EVENTS = ROOT / "rules" / "tests" / "events"


class Mailbox:
    """An SMTP handler that keeps what it accepts; ``refuse`` answers the next DATA
    commands with a temporary failure."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []
        self.refuse = 0
        self.refused = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[list[str], email.message.Message]]:
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.messages) < count:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"expected {count} messages, got {len(self.messages)}"
        return self.messages


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    hover = FakeHover()
    crm = Sink()
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    shutil.copy(ROOT / "rules" / "hover.yaml", tmp_path / "hover.yaml")
    config = tmp_path / "hookwise.yaml"
    config.write_text(f"""\
store: sqlite:///data/hookwise.db
rules: [hover.yaml]
defaults: {{retry: {{attempts: 5, backoff: 100ms, max_backoff: 200ms}}}}
http: {{allow_private: true}}
smtp: {{host: 127.0.0.1, port: {smtp_port}, from: "hookwise <hookwise@example.com>"}}
hover: {{base_url: "{hover.url}", client_id: {CLIENT_ID}, client_secret: {CLIENT_SECRET},
         redirect_uri: "{REDIRECT_URI}"}}
sources:
  hover: {{preset: hover, token: "${{HOVER_URL_TOKEN}}"}}
""")
    env = {
        "HOVER_URL_TOKEN": "url-t0ken", "CRM_URL": f"{crm.url}/crm/jobs", "CRM_TOKEN": "crm-s3cret",
        "OPS_EMAIL": "ops@example.com"
    }
    try:
        yield {"hover": hover, "crm": crm, "mailbox": mailbox, "config": config, "env": env, "root": tmp_path}
    finally:
        smtp.stop()
        crm.close()
        hover.close()


def hookwise(world: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "engine", *args, "-c", str(world["config"])], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **world["env"]}, cwd=world["root"])


def send(world: dict[str, Any], daemon: DaemonProcess, event: Path, status: str = "202") -> None:
    result = hookwise(world, "send", "--source", "hover", str(event), "--url", f"{daemon.url}/hooks/hover")
    assert result.returncode == 0 and result.stdout.startswith(status + " "), result.stdout + result.stderr


def test_hover_workflows(world: dict[str, Any]) -> None:
    hover: FakeHover = world["hover"]
    login = hookwise(world, "hover", "login", "--code", hover.authorize())
    assert login.returncode == 0, login.stderr
    job = hover.add_job(19402492)
    job["customer"].update(name="Ada", email="ada@example.com")

    daemon = DaemonProcess(world["config"], free_port(), env=world["env"])
    try:
        daemon.wait_ready()

        # job completed: fetch the job, push its measurements to the CRM, email the customer
        send(world, daemon, EVENTS / "job-state-changed-v2_completed.json")
        (push,) = world["crm"].wait_for(1, path="/crm/jobs")
        assert push.headers["authorization"] == "Bearer crm-s3cret"
        assert push.json()["hover_job_id"] == 19402492 and push.json()["address"] == "4312 Meadow Drive"
        assert [m["id"] for m in push.json()["models"]] == [m["id"] for m in job["models"]]
        assert any(c.path == "/api/v3/jobs/19402492" for c in hover.calls)
        (rcpt, message), = world["mailbox"].wait_for(1)
        assert rcpt == ["ada@example.com"] and "4312 Meadow Drive" in message["Subject"]

        # job failed, and Hover sends it twice: one queue item; the SMTP server refuses the
        # first attempt of ops' email, which arrives on the retry
        world["mailbox"].refuse = 1
        send(world, daemon, EVENTS / "job-state-changed-v2_failed.json")
        send(world, daemon, EVENTS / "job-state-changed-v2_failed.json", status="200")  # identical body: a duplicate
        messages = world["mailbox"].wait_for(2)
        assert world["mailbox"].refused == 1
        assert messages[1][0] == ["ops@example.com"] and messages[1][1]["Subject"] == "Hover job 19402492 failed"
        queue = json.loads(hookwise(world, "queue", "list", "field-techs", "--json").stdout)
        assert [(i["key"], i["status"], i["attempts"], i["data"]["reason"]) for i in queue] == [
            ("19402492", "waiting", 1, "job failed")
        ]

        # the verification handshake: registered, Hover posts the code, hookwise verifies it
        registered = hookwise(world, "hover", "register", f"{daemon.url}/hooks/hover?token=url-t0ken")
        assert registered.returncode == 0, registered.stderr
        webhook_id = next(iter(hover.webhooks))
        code_event = world["root"] / "code.json"
        code = {"event": "webhook-verification-code", "webhook_id": webhook_id, "code": hover.code_for(webhook_id)}
        code_event.write_text(json.dumps(code))
        send(world, daemon, code_event)
        deadline = time.time() + 20
        while time.time() < deadline and not hover.webhooks[webhook_id].get("verified_at"):
            time.sleep(0.05)
        assert hover.webhooks[webhook_id]["verified_at"]
        listed = hookwise(world, "hover", "webhooks", "--json")
        assert listed.returncode == 0, listed.stderr
        (row,) = [w for w in json.loads(listed.stdout) if str(w["id"]) == str(webhook_id)]
        assert row["verified_at"]
    finally:
        assert daemon.stop() == 0, daemon.output()

    first_log = daemon.output()

    # the access token expires while the daemon is down; after a restart the next Hover call
    # gets a 401, refreshes once, and the rotated refresh token is the one kept
    hover.expire_access_tokens()
    refreshes = hover.refreshes
    daemon = DaemonProcess(world["config"], free_port(), env=world["env"])
    try:
        daemon.wait_ready()
        hover.add_job(19402493)
        legacy = world["root"] / "legacy.json"
        legacy.write_text(
            json.dumps({**json.loads((EVENTS / "job-state-changed_complete.json").read_text()), "job_id": 19402493})
        )
        send(world, daemon, legacy)
        world["crm"].wait_for(2, path="/crm/jobs")
        assert hover.refreshes == refreshes + 1
    finally:
        assert daemon.stop() == 0, daemon.output()
    from engine.store import open_store

    store = open_store(f"sqlite:///{world['root'] / 'data' / 'hookwise.db'}")
    tokens = store.hover_tokens()
    store.close()
    assert tokens is not None
    assert hover.refresh_token_alive(tokens.refresh_token) and hover.access_token_valid(tokens.access_token)
    log = first_log + daemon.output()
    for secret in ("crm-s3cret", "url-t0ken"):
        assert secret not in log
    db = sqlite3.connect(world["root"] / "data" / "hookwise.db")
    try:
        stored = " ".join(str(r) for r in db.execute("SELECT params, output, error FROM steps"))
        assert "crm-s3cret" not in stored  # the CRM token came from the environment: masked
        dead = db.execute("SELECT COUNT(*) FROM runs WHERE status != 'succeeded'").fetchone()[0]
    finally:
        db.close()
    assert dead == 0


def get_json(url: str) -> tuple[int, Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def wait_until(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_hostile_values_stay_inside_their_path_segment(world: dict[str, Any]) -> None:
    """A signed event's values go into Hover paths percent-encoded, one segment each: a code
    or job id made of dot segments, slashes and '?' cannot move a call that carries the
    account's token to another endpoint."""
    hover: FakeHover = world["hover"]
    assert hookwise(world, "hover", "login", "--code", hover.authorize()).returncode == 0
    hostile_code = "../../v3/jobs/4242/archive?x="
    hostile_job = "19402492/../../../v2/webhooks"
    code_event = world["root"] / "hostile-code.json"
    code_event.write_text(json.dumps({"event": "webhook-verification-code", "webhook_id": 1, "code": hostile_code}))
    job_event = world["root"] / "hostile-job.json"
    completed = json.loads((EVENTS / "job-state-changed-v2_completed.json").read_text())
    job_event.write_text(json.dumps({**completed, "job_id": hostile_job}))

    # A rule that forgets |path_segment: the hover action refuses the rendered path.
    (world["root"] / "naive.yaml").write_text(
        "rules:\n  - {name: naive, event: naive, actions: [{hover: {path: '/api/v3/jobs/{{ event.job_id }}'}}]}\n")
    config: Path = world["config"]
    config.write_text(config.read_text().replace("rules: [hover.yaml]", "rules: [hover.yaml, naive.yaml]"))
    naive_event = world["root"] / "naive.json"
    naive_event.write_text(json.dumps({"event": "naive", "job_id": "1/../../../v2/webhooks"}))

    daemon = DaemonProcess(config, free_port(), env=world["env"])
    try:
        daemon.wait_ready()
        send(world, daemon, code_event)
        send(world, daemon, job_event)
        send(world, daemon, naive_event)
        calls = wait_until(lambda: len(hover.calls) >= 2 and list(hover.calls))
        db = sqlite3.connect(world["root"] / "data" / "hookwise.db")
        try:
            dead = "SELECT error FROM runs WHERE rule = 'naive' AND status = 'dead'"
            (naive_error,) = wait_until(lambda: db.execute(dead).fetchone())
        finally:
            db.close()
    finally:
        assert daemon.stop() == 0, daemon.output()

    assert sorted((c.method, c.path, c.status) for c in calls) == [
        ("GET", "/api/v3/jobs/19402492%2F..%2F..%2F..%2Fv2%2Fwebhooks", 404),
        ("PUT", "/api/v2/webhooks/..%2F..%2Fv3%2Fjobs%2F4242%2Farchive%3Fx%3D/verify", 404),
    ]
    assert hover.webhooks == {} and not world["crm"].hits
    assert "path: must not contain '.' or '..' segments (templated parts: use |path_segment)" in naive_error


def step_errors(world: dict[str, Any], rule: str) -> list[tuple[str, str, str | None]]:
    db = sqlite3.connect(world["root"] / "data" / "hookwise.db")
    try:
        return db.execute(
            "SELECT r.status, s.status, s.error FROM runs r JOIN steps s ON s.run_id = r.id WHERE r.rule = ? "
            "ORDER BY r.created_at", (rule,),
        ).fetchall()
    finally:
        db.close()


def test_a_handshake_waits_for_the_login_and_no_webhook_appears_from_events(world: dict[str, Any]) -> None:
    """The tour's first run: events arrive before any Hover login. The handshakes wait with
    a clear message instead of dying; the login wakes them at once; an unknown webhook (the
    example event's) stays unknown; Hover's older POST verification is used when PUT is
    answered 405, and the method that worked is shown."""
    hover: FakeHover = world["hover"]
    hover.verify_method = "POST"
    webhook_id, code = hover.add_webhook("http://127.0.0.1/hooks/hover?token=url-t0ken")
    registered = world["root"] / "registered.json"
    registered.write_text(json.dumps({"event": "webhook-verification-code", "webhook_id": webhook_id, "code": code}))
    daemon = DaemonProcess(world["config"], free_port(), env=world["env"])
    try:
        daemon.wait_ready()
        send(world, daemon, EVENTS / "webhook-verification-code.json")  # webhook 230293: unknown to this Hover
        send(world, daemon, registered)
        def handshakes(done: set[str] | None = None) -> list[tuple[str, str, str | None]] | None:
            rows = step_errors(world, "hookwise.hover-verify.hover")
            if done is None:
                return rows if len(rows) == 2 and all(r[2] for r in rows) else None
            return rows if {r[0] for r in rows} == done else None

        waiting = wait_until(handshakes)
        waits = NOT_LOGGED_IN + "; the handshake runs as soon as the account is connected"
        assert waiting == [("active", "ready", waits)] * 2
        assert hover.calls == []
        _, sources = get_json(f"{daemon.url}/api/sources")
        assert sources["sources"][0]["hover"]["webhooks"] == []  # nothing appears from events alone

        login = hookwise(world, "hover", "login", "--code", hover.authorize())
        assert login.returncode == 0, login.stderr
        # due at once, not in the ten minutes the steps were told to wait
        wait_until(lambda: hover.webhooks[webhook_id]["verified_at"], timeout=20)
        outcomes = wait_until(lambda: handshakes({"dead", "succeeded"}))
        _, sources = get_json(f"{daemon.url}/api/sources")
    finally:
        assert daemon.stop() == 0, daemon.output()

    assert [c.method for c in hover.calls if c.path == f"/api/v2/webhooks/{code}/verify"] == ["PUT", "POST"]
    assert sorted(o[0] for o in outcomes) == ["dead", "succeeded"]
    (dead_error,) = [o[2] for o in outcomes if o[0] == "dead"]
    assert dead_error.startswith("hover: POST /api/v2/webhooks/03947FE2-28C3-4EB1-AD44-B4258B3345BB/verify: 404")
    (hook,) = sources["sources"][0]["hover"]["webhooks"]
    assert (hook["webhook_id"], hook["verify_method"], hook["last_error"]) == (str(webhook_id), "POST", None)
    assert hook["verified_at"]
    listed = json.loads(hookwise(world, "hover", "webhooks", "--json").stdout)
    assert [(w["id"], w["verify_method"]) for w in listed] == [(str(webhook_id), "POST")]  # no 230293
