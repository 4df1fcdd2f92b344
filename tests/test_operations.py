"""Operating the daemon (SPEC 10): JSON logs with masked secrets, reload on SIGHUP and on
file changes, draining on SIGTERM. engine/ops/logs.py and engine/ops/daemon.py in process; the
daemon as a real process against a real HTTP sink."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from engine.ops.daemon import Daemon, Options, RuleWatcher, _server
from engine.ops.logs import FIELDS, JsonFormatter, SecretFilter, mask_text, setup_logging
from engine.receive.server import create_app
from engine.rules.loader import load
from engine.secrets import Masker

from .support import DaemonProcess, Hit, Sink, free_port, post

# --- logs, in process --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ****"),
        (
            "headers {'authorization': 'Bearer abc.def', 'accept': '*/*'}",
            "headers {'authorization': '****', 'accept': '*/*'}"
        ),
        ('{"Authorization": "Token xyz123"}', '{"Authorization": "****"}'),
        ("the CRM said: invalid Bearer eyJhbGciOi.x-y_z", "the CRM said: invalid Bearer ****"),
        ("Cookie: session=abc; theme=dark", "Cookie: ****"),
        (
            "GET https://api.example.com/x?page=2&token=tok-123&sort=a",
            "GET https://api.example.com/x?page=2&token=****&sort=a"
        ),
        ("dsn host=db password=hunter2 user=app", "dsn host=db password=**** user=app"),
        ('{"password": "hunter2", "user": "app"}', '{"password": "****", "user": "app"}'),
        (
            "cannot connect to https://user:pass@crm.example.com/api",
            "cannot connect to https://****@crm.example.com/api"
        ),
        ("smtp://mailer@relay.example:25 refused", "smtp://****@relay.example:25 refused"),
        # no credential: left alone
        (
            "malformed authorization: expected APIAuth <id>:<base64>",
            "malformed authorization: expected APIAuth <id>:<base64>"
        ),
        ("token did not match", "token did not match"),
        ("mail ops@example.com about https://example.com/a@b", "mail ops@example.com about https://example.com/a@b"),
    ],
)
def test_credentials_are_masked_by_their_shape(text: str, expected: str) -> None:
    assert mask_text(text) == expected


class Captured:
    """A logger whose handler is set up as setup_logging sets up the root's."""

    def __init__(self, masker: Callable[[], Masker | None]) -> None:
        self.out = io.StringIO()
        handler = logging.StreamHandler(self.out)
        handler.setFormatter(JsonFormatter())
        handler.addFilter(SecretFilter(masker))
        self.logger = logging.getLogger(f"hookwise.test-operations.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(handler)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


def test_json_lines_carry_the_fields_and_the_current_secrets_are_masked() -> None:
    masker = {"now": Masker(["first-s3cret"])}
    captured = Captured(lambda: masker["now"])
    log = captured.logger
    fields = {"event": "ev-1", "rule": "crm", "run": "run-1", "step": "push", "attempt": 2, "duration": 0.25}
    log.info("calling %s with %s", "https://crm.example", "first-s3cret", extra=fields)
    masker["now"] = Masker(["second-s3cret"])  # a reload brings other secrets
    log.warning(
        "step %s: %s", "push", "got second-s3cret back; first-s3cret no longer a secret",
        extra={"step": "push second-s3cret"}
    )
    try:
        raise RuntimeError("the CRM refused second-s3cret")
    except RuntimeError:
        log.exception("crashed", extra={"run": "run-2"})
    first, second, third = captured.lines()
    assert first == {
        "time": first["time"], "level": "info", "logger": log.name, "message": "calling https://crm.example with ****",
        **fields,
    }
    assert first["time"].endswith("Z")
    assert second["message"] == "step push: got **** back; first-s3cret no longer a secret"
    assert second["step"] == "push ****"
    assert set(second) == {"time", "level", "logger", "message", "step"}
    assert third["level"] == "error" and third["run"] == "run-2"
    assert "RuntimeError: the CRM refused ****" in third["error"] and "second-s3cret" not in third["error"]
    assert set(FIELDS) <= set(first)


def test_without_a_format_logs_are_text_on_a_terminal_and_json_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    leader, follower = os.openpty()
    terminal = os.fdopen(follower, "w")
    pipe_read, pipe_write = os.pipe()
    piped = os.fdopen(pipe_write, "w")
    try:
        for stream, wanted in ((terminal, logging.Formatter), (piped, JsonFormatter)):
            monkeypatch.setattr(sys, "stderr", stream)
            setup_logging(None, "info")
            (handler,) = root.handlers
            assert type(handler.formatter) is wanted
            assert any(isinstance(f, SecretFilter) for f in handler.filters)
        setup_logging("text")
        assert type(root.handlers[0].formatter) is logging.Formatter  # an explicit choice wins over the guess
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        terminal.close()
        piped.close()
        os.close(leader)
        os.close(pipe_read)


# --- the watcher, in process -------------------------------------------------------------


def test_rule_watcher_reloads_once_a_change_has_settled(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "a.yaml").write_text("one")
    changes: list[int] = []
    watcher = RuleWatcher(lambda: sorted(folder.glob("*.yaml")), lambda: changes.append(1), interval=60)
    assert not watcher.check() and changes == []  # the first look: what "unchanged" is
    assert not watcher.check() and changes == []

    (folder / "a.yaml").write_text("one, edited")
    assert not watcher.check()  # seen, but it may still be being written
    assert watcher.check() and len(changes) == 1
    assert not watcher.check() and len(changes) == 1  # once per change

    (folder / "b.yaml").write_text("new file")
    assert not watcher.check()
    (folder / "b.yaml").write_text("new file, longer now")  # still changing: wait again
    assert not watcher.check()
    assert watcher.check() and len(changes) == 2

    (folder / "a.yaml").unlink()
    watcher.check()
    assert watcher.check() and len(changes) == 3

    replacement = tmp_path / "b.tmp"
    replacement.write_text("new file, longer now")  # same size and content, new inode: an editor's save
    os.utime(replacement, ns=(os.stat(folder / "b.yaml").st_mtime_ns,) * 2)
    os.replace(replacement, folder / "b.yaml")
    watcher.check()
    assert watcher.check() and len(changes) == 4


def test_rule_watcher_thread_calls_back_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("one")
    called = threading.Event()
    watcher = RuleWatcher(lambda: [path], called.set, interval=0.02)
    watcher.start()
    try:
        path.write_text("two, longer")
        assert called.wait(10)
    finally:
        watcher.stop()
    assert watcher._thread is not None and not watcher._thread.is_alive()


RULE = """\
rules:
  - name: {NAME}
    source: open
    event: {NAME}
    actions:
      - http: {method: POST, url: "{SINK}/{NAME}"}
"""

BROKEN = """\
rules:
  - name: first
    source: open
    event: first
    actions:
      - http: {method: POST, urll: "http://127.0.0.1:9/x"}
"""

CONFIG = """\
store: sqlite:///data/hookwise.db
rules: [rules/]
http: {allow_private: true}
sources:
  open: {type: 'body:type', id: 'body:id', verify: none}
"""


def assert_reload_errors(lines: list[str]) -> None:
    """The lines a reload of BROKEN logs: a summary, then each problem as FILE:LINE:COL."""
    assert len(lines) == 3 and lines[0] == "reload failed, the previous rules stay: 2 problems"
    assert re.fullmatch(r"reload: rules/ops\.yaml:6:\d+: rules\[0\]\.actions\[0\]\.http\.url: required", lines[1])
    assert re.fullmatch(
        r"reload: rules/ops\.yaml:6:\d+: rules\[0\]\.actions\[0\]\.http\.urll: unknown key \(did you mean 'url'\?\)",
        lines[2]
    )


def rule(name: str, sink_url: str = "http://127.0.0.1:9") -> str:
    return RULE.replace("{NAME}", name).replace("{SINK}", sink_url)


@pytest.fixture
def daemon_in_process(project: Callable[..., Path]) -> Iterator[Daemon]:
    config = project({"ops.yaml": rule("first")}, CONFIG)
    daemon = Daemon(load(config), Options(config_path=config))
    yield daemon
    daemon.store.close()


def test_the_daemon_watches_the_config_and_every_rule_file(daemon_in_process: Daemon) -> None:
    root = daemon_in_process.config.path.parent
    assert set(daemon_in_process.watched_files()) == {root / "config.yaml", root / "rules" / "ops.yaml"}
    (root / "rules" / "more").mkdir()
    (root / "rules" / "more" / "extra.yml").write_text(rule("extra"))
    (root / "rules" / "tests").mkdir()
    (root / "rules" / "tests" / "case.yaml").write_text("cases: []")  # test cases are not rules
    assert set(daemon_in_process.watched_files()) == {
        root / "config.yaml", root / "rules" / "ops.yaml", root / "rules" / "more" / "extra.yml"
    }


def test_reload_swaps_a_valid_set_and_keeps_the_old_one_on_errors(
    daemon_in_process: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = daemon_in_process
    root = daemon.config.path.parent
    before = daemon.current()
    (root / "rules" / "ops.yaml").write_text(BROKEN)
    with caplog.at_level(logging.ERROR, "hookwise.daemon"):
        assert daemon.reload() is False
    assert daemon.current() is before
    assert_reload_errors([r.getMessage() for r in caplog.records if r.name == "hookwise.daemon"])

    (root / "rules" / "ops.yaml").write_text(rule("first") + rule("second").replace("rules:\n", ""))
    assert daemon.reload() is True
    assert [r.name for r in daemon.current().rules][:2] == ["first", "second"]
    text = daemon.metrics.exposition().decode()
    assert "hookwise_reloads_total 1.0" in text and "hookwise_reload_failures_total 1.0" in text


def asgi_get(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": [],
        "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_readyz_turns_503_the_moment_the_stop_signal_reaches_the_server(daemon_in_process: Daemon) -> None:
    daemon = daemon_in_process
    app = create_app(daemon.current, None, daemon.health, daemon.store, daemon.metrics)
    server = _server(uvicorn.Config(app, log_config=None), daemon._draining)
    assert asgi_get(app, "/readyz")[0] == 200
    server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler runs
    assert server.should_exit  # uvicorn's own handling goes on
    status, answer = asgi_get(app, "/readyz")
    assert status == 503 and answer["checks"]["draining"] == "yes"


# --- the daemon as a process -------------------------------------------------------------

SECRET = "crm-s3cret-7f3a9c"


class Ops:
    """A project folder, a sink and a daemon process logging JSON."""

    def __init__(
        self, root: Path, sink: Sink, rules: str, start: Callable[[Path], DaemonProcess] | None = None
    ) -> None:
        self.root, self.sink = root, sink
        (root / "rules").mkdir()
        self.write_rules(rules)
        (root / "hookwise.yaml").write_text(CONFIG)
        config = root / "hookwise.yaml"
        self.daemon = (start(config) if start
                       else DaemonProcess(config, free_port(), "--log-format", "json", env={"CRM_TOKEN": SECRET}))
        self.daemon.wait_ready()

    def write_rules(self, text: str) -> None:
        (self.root / "rules" / "ops.yaml").write_text(text.replace("{SINK}", self.sink.url))

    def post(self, type_: str, id_: str) -> None:
        status, _ = post(self.daemon.url + "/hooks/open", json.dumps({"type": type_, "id": id_}))
        assert status == 202

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.daemon.url + "/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.daemon.output().splitlines() if line.strip()]

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.root / "data" / "hookwise.db")
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def reload(self, counter: str = "hookwise_reloads_total") -> None:
        before = self.metric(counter)
        self.daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.metric(counter) == before + 1)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture
def ops(tmp_path: Path, sink: Sink) -> Iterator[Ops]:
    o = Ops(tmp_path, sink, rule("first", "{SINK}"))
    yield o
    assert o.daemon.stop() == 0, o.daemon.output()


def test_sighup_with_a_valid_change_swaps_the_rules(ops: Ops) -> None:
    ops.post("second", "before-reload")
    status = "SELECT status FROM events WHERE json_extract(body, '$.id') = 'before-reload'"
    wait_until(lambda: ops.query(status) == [("matched",)])
    assert ops.query("SELECT COUNT(*) FROM runs") == [(0,)]  # no rule for it yet

    ops.write_rules(rule("first", "{SINK}") + rule("second", "{SINK}").replace("rules:\n", ""))
    ops.reload()
    ops.post("second", "after-reload")
    assert ops.sink.wait_for(1, path="/second")
    assert ops.query("SELECT rule FROM runs") == [("second",)]
    assert any(line["message"] == "reloaded: 2 rules" for line in ops.logs())


def test_sighup_with_a_broken_rule_file_keeps_the_old_rules_and_counts_the_failure(ops: Ops) -> None:
    ops.write_rules(BROKEN)
    ops.reload("hookwise_reload_failures_total")
    assert_reload_errors(
        [line["message"] for line in ops.logs() if line["level"] == "error" and line["logger"] == "hookwise.daemon"]
    )
    assert ops.metric("hookwise_reloads_total") == 0
    ops.post("first", "still-first")
    assert ops.sink.wait_for(1, path="/first")  # the old set still runs


WATCHING = """\
import sys
from pathlib import Path
from engine.ops.daemon import Options, serve
from engine.ops.logs import setup_logging

setup_logging("json")
serve(Options(config_path=Path(sys.argv[1]), port=int(sys.argv[2]), watch=True, watch_interval=0.05))
"""


class WatchingDaemon(DaemonProcess):
    """The daemon run with Options(watch=True), as ``serve --watch`` runs it, in a process of
    its own (signal handlers need the main thread)."""

    def __init__(self, config: Path) -> None:
        self.config, self.port = config, free_port()
        self.log = config.parent / f"watching-{self.port}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", WATCHING, str(config), str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=config.parent)


def test_a_watching_daemon_reloads_when_a_rule_file_is_added_or_broken(tmp_path: Path, sink: Sink) -> None:
    ops = Ops(tmp_path, sink, rule("first", "{SINK}"), start=WatchingDaemon)
    try:
        (tmp_path / "rules" / "second.yaml").write_text(rule("second", sink.url))
        wait_until(lambda: ops.metric("hookwise_reloads_total") == 1)
        ops.post("second", "watched-1")
        assert sink.wait_for(1, path="/second")
        (tmp_path / "rules" / "second.yaml").write_text(BROKEN.replace("first", "second"))
        wait_until(lambda: ops.metric("hookwise_reload_failures_total") == 1)
        assert ops.metric("hookwise_reloads_total") == 1
    finally:
        assert ops.daemon.stop() == 0, ops.daemon.output()
    assert any(line["message"] == "watching the config and rule files for changes" for line in ops.logs())


HELD = """\
rules:
  - name: held
    source: open
    event: held
    actions:
      - http: {method: POST, url: "{SINK}/hold"}
      - http: {method: POST, url: "{SINK}/after", json: {version: VERSION}}
"""


def holding(release: threading.Event) -> Callable[[Hit], tuple[int, str]]:
    def respond(hit: Hit) -> tuple[int, str]:
        if hit.path == "/hold":
            release.wait(20)
        return 200, "{}"

    return respond


def test_a_run_in_flight_keeps_the_rule_version_that_created_it(tmp_path: Path, sink: Sink) -> None:
    release = threading.Event()
    sink.responder = holding(release)
    ops = Ops(tmp_path, sink, HELD.replace("VERSION", "one"))
    try:
        ops.post("held", "h-1")
        sink.wait_for(1, path="/hold")  # the run is in its first step
        ops.write_rules(HELD.replace("VERSION", "two"))
        ops.reload()
        release.set()
        assert sink.wait_for(1, path="/after")[0].json() == {"version": "one"}
        ops.post("held", "h-2")
        hits = sink.wait_for(2, path="/after")
        assert [h.json() for h in hits] == [{"version": "one"}, {"version": "two"}]
    finally:
        release.set()
        assert ops.daemon.stop() == 0, ops.daemon.output()


def test_sigterm_lets_a_running_step_finish_and_records_it(tmp_path: Path, sink: Sink) -> None:
    release = threading.Event()
    sink.responder = holding(release)

    def start(config: Path) -> DaemonProcess:  # at debug: a step's success is logged there
        return DaemonProcess(config, free_port(), "--log-format", "json", "--log-level", "debug")

    ops = Ops(tmp_path, sink, HELD.replace("VERSION", "one"), start)
    try:
        ops.post("held", "t-1")
        sink.wait_for(1, path="/hold")
        ops.daemon.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: any(line["message"] == "SIGTERM: draining" for line in ops.logs()))
        wait_until(lambda: not accepts_connections(ops.daemon.port))  # the receiver has stopped taking requests
        assert ops.daemon.proc.poll() is None  # the step is still running, and the daemon waits for it
        release.set()
        assert ops.daemon.proc.wait(30) == 0, ops.daemon.output()
    finally:
        release.set()
        ops.daemon.stop()
    assert ops.query("SELECT status, attempt FROM steps WHERE idx = 0") == [("succeeded", 1)]
    messages = [line["message"] for line in ops.logs()]
    draining = messages.index("SIGTERM: draining")
    finished = next(i for i, m in enumerate(messages) if m.endswith("step 0 (http) succeeded"))
    assert draining < finished < messages.index("stopped")


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


SECRET_RULES = """\
rules:
  - name: crm
    source: open
    event: crm
    actions:
      - id: note
        log: {message: "calling the CRM as ${CRM_TOKEN} at https://ops:${CRM_TOKEN}@crm.example"}
      - id: push
        http:
          method: POST
          url: "{SINK}/crm"
          auth: {bearer: "${CRM_TOKEN}"}
          json: {job: "{{ event.id }}"}
        retry: {attempts: 1}
"""


def test_json_logs_carry_event_rule_run_step_and_never_the_secret(tmp_path: Path, sink: Sink) -> None:
    # The CRM refuses the token and echoes it in its answer, which ends up in the step's error.
    sink.responder = lambda hit: (401, json.dumps({"error": "bad token", "got": hit.headers.get("authorization")}))
    ops = Ops(tmp_path, sink, SECRET_RULES)
    try:
        ops.post("crm", "job-1")
        # the real token was sent
        assert sink.wait_for(1, path="/crm")[0].headers["authorization"] == f"Bearer {SECRET}"
        wait_until(lambda: ops.query("SELECT status FROM runs") == [("dead",)])
        wait_until(lambda: any(line["level"] == "error" and line.get("step") == "push" for line in ops.logs()))
    finally:
        assert ops.daemon.stop() == 0, ops.daemon.output()
    output = ops.daemon.output()
    assert SECRET not in output
    lines = ops.logs()  # every line is one JSON object
    event_id, run_id = ops.query("SELECT event_id, id FROM runs")[0]
    matched = next(line for line in lines if "matched rule crm" in line["message"])
    assert (matched["event"], matched["rule"], matched["run"]) == (event_id, "crm", run_id)
    note = next(line for line in lines if line["logger"] == "hookwise.action")
    assert note["message"] == "calling the CRM as **** at https://****@crm.example"
    assert (note["event"], note["rule"], note["run"], note["step"], note["attempt"]) == (
        event_id, "crm", run_id, "note", 1
    )
    failed = next(line for line in lines if line["level"] == "error" and line.get("step") == "push")
    assert (failed["event"], failed["rule"], failed["run"], failed["attempt"]) == (event_id, "crm", run_id, 1)
    assert isinstance(failed["duration"], float) and failed["duration"] >= 0
    assert "returned 401" in failed["message"] and "****" in failed["message"]


def test_serve_tells_systemd_it_is_ready_and_stopping(tmp_path: Path) -> None:
    """Type=notify: READY=1 once the listener is up, STOPPING=1 when draining starts."""
    import socket as socketlib

    from .support import DaemonProcess, free_port

    address = str(tmp_path / "notify.sock")
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(20)
    config = tmp_path / "hookwise.yaml"
    config.write_text("store: sqlite:///s.db\nrules: []\nsources: {}\n")
    daemon = DaemonProcess(config, free_port(), env={"NOTIFY_SOCKET": address})
    try:
        assert listener.recv(100) == b"READY=1"
        daemon.wait_ready()
    finally:
        assert daemon.stop() == 0, daemon.output()
    assert listener.recv(100) == b"STOPPING=1"
    listener.close()


def test_rule_counts_are_said_the_same_by_check_readyz_and_the_reload_log(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "rules:\n  - name: a\n    event: x\n    actions: [{log: {message: a}}]\n"
        "  - name: b\n    event: y\n    actions: [{log: {message: b}}]\n"
    )
    config = tmp_path / "hookwise.yaml"
    config.write_text(
        "store: sqlite:///data/hookwise.db\nrules: [rules/]\nsources:\n  hover: {preset: hover, token: t0ken-abc}\n"
    )
    said = "2 rules + 1 built-in"  # the user's, and Hover's handshake
    checked = subprocess.run(
        [sys.executable, "-m", "engine", "check", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.stdout == f"hookwise.yaml: ok: 1 source, {said}, 2 steps\n", checked.stderr
    daemon = DaemonProcess(config, free_port(), "--log-format", "json")
    try:
        daemon.wait_ready()
        status, ready = post(daemon.url + "/readyz", b"", method="GET")
        assert status == 200 and ready["checks"]["rules"] == f"{said} loaded"  # type: ignore[index]
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: f'"reloaded: {said}"' in daemon.output())
    finally:
        assert daemon.stop() == 0, daemon.output()
