"""The real ``hookwise`` command, run as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import ROOT

HOOKWISE = [sys.executable, "-m", "engine"]
EXAMPLE = ROOT / "config.example.yaml"
FAILED_V2 = ROOT / "rules" / "tests" / "events" / "job-state-changed-v2_failed.json"


def hookwise(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKWISE_", "HOVER_", "CRM_", "OPS_"))}
    environ.update(env or {})
    return subprocess.run(
        [*HOOKWISE, *map(str, args)], cwd=cwd, env=environ, input=stdin, capture_output=True, text=True, timeout=60
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_check_passes_on_the_example_config() -> None:
    result = hookwise("check", "-c", EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "config.example.yaml: ok: 1 source, 7 rules + 1 built-in, 11 steps\n" in result.stdout


def test_check_passes_on_a_fresh_copy_without_warnings(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copy(EXAMPLE, tmp_path / "config.example.yaml")
    result = hookwise("check", "-c", "config.example.yaml", "--strict", cwd=tmp_path)  # nothing in the environment
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config.example.yaml: ok: 1 source, 7 rules + 1 built-in, 11 steps"
    token_file = tmp_path / "data" / "hover-url-token"
    assert result.stderr.strip() == (
        f"note: sources.hover.token_file: {token_file} does not exist yet: "
        "`hookwise serve` makes it (a random token) when it starts"
    )
    token_file.parent.mkdir()
    token_file.write_text("made-by-serve\n")
    result = hookwise("check", "-c", "config.example.yaml", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""


def test_check_strict_promotes_warnings(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rules: [r.yaml]\nsources:\n  hover: {preset: hover, token: \"${HOVER_URL_TOKEN:-abcdef}\"}\n")
    (tmp_path / "r.yaml").write_text("rules:\n  - name: a\n    source: hovr\n    actions: [{log: {message: x}}]\n")
    result = hookwise("check", "--strict", "-c", config)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"{tmp_path / 'r.yaml'}:3:13: rules[0].source: warning: "
        "no source named 'hovr' is configured (did you mean 'hover'?)"
    )
    assert hookwise("check", "-c", config).returncode == 0


def test_an_open_source_or_an_empty_token_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    hover = "  hover: {preset: hover, token: \"${HOVER_URL_TOKEN:-}\"}\n"
    config.write_text(f"rules: []\nsources:\n{hover}  open: {{type: body:kind}}\n")
    result = hookwise("check", "-c", config)
    assert result.returncode == 78
    assert result.stderr.splitlines() == [
        f"{config}:3:33: sources.hover.token: is empty (an unset ${{VAR:-}}?): "
        "an empty token or secret verifies nothing; set it, or say verify: none",
        f"{config}:4:9: sources.open: accepts requests from anyone: "
        "give it a token (or token_file), a secret, verify.hmac or allow_ips, or say verify: none",
    ]
    assert hookwise("check", "-c", config, env={"HOVER_URL_TOKEN": "t0ken"}).returncode == 78  # open still is
    config.write_text(f"rules: []\nsources:\n{hover}  open: {{type: body:kind, verify: none}}\n")
    assert hookwise("check", "-c", config, env={"HOVER_URL_TOKEN": "t0ken"}).returncode == 0


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the example project to break."""
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copy(EXAMPLE, tmp_path / "config.yaml")
    return tmp_path


def test_a_misspelled_key_exits_78_with_file_line_col_path_and_hint(copy: Path) -> None:
    rules = copy / "rules" / "hover.yaml"
    text = rules.read_text()
    rules.write_text(text.replace("          url: \"${CRM_URL", "          urll: \"${CRM_URL", 1))
    line = next(i for i, text in enumerate(rules.read_text().splitlines(), 1) if "urll:" in text)
    result = hookwise("check", "-c", "config.yaml", cwd=copy)
    assert result.returncode == 78
    expected = f"rules/hover.yaml:{line}:11: rules[0].actions[1].http.urll: unknown key (did you mean 'url'?)"
    assert expected in result.stderr.splitlines()
    assert_no_traceback(result)


def test_every_problem_is_printed(copy: Path) -> None:
    rules = copy / "rules" / "hover.yaml"
    rules.write_text(rules.read_text().replace("state: failed", "state: {regx: failed}").replace("priority", "prio"))
    result = hookwise("check", "-c", "config.yaml", cwd=copy)
    assert result.returncode == 78
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all("did you mean 'regex'" in line for line in lines)


def test_an_unset_variable_is_named(copy: Path) -> None:
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace("token_file: data/hover-url-token", 'token: "${HOVER_URL_TOKEN}"'))
    result = hookwise("check", "-c", "config.yaml", cwd=copy)
    assert result.returncode == 78
    assert result.stderr.strip().endswith("sources.hover.token: environment variable HOVER_URL_TOKEN is not set")


def test_config_discovery_from_the_environment(copy: Path) -> None:
    assert hookwise("check", cwd=copy, env={"HOOKWISE_CONFIG": "config.yaml"}).returncode == 0
    missing = hookwise("check", cwd=copy)
    assert missing.returncode == 78 and "no config file" in missing.stderr


def test_dry_run_explains_every_rule_and_renders_the_match() -> None:
    result = hookwise("dry-run", "-c", EXAMPLE, FAILED_V2)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = {" ".join(line.split()) for line in out.splitlines()}
    assert "event: source=hover type=job-state-changed-v2" in lines
    assert "hover-job-failed yes" in lines
    assert "hover-job-completed no: when.state: expected one of ['complete', 'completed'], got 'failed'" in lines
    assert "hover-model-failed no: event: expected 'model-state-changed', got 'job-state-changed-v2'" in lines
    assert ("hookwise.hover-verify.hover no: event: expected 'webhook-verification-code', got 'job-state-changed-v2'"
            in lines)
    assert '"queue": "field-techs"' in out and '"subject": "Hover job 19402492 failed"' in out


def test_dry_run_json_masks_secrets() -> None:
    completed = ROOT / "rules" / "tests" / "events" / "job-state-changed-v2_completed.json"
    result = hookwise(
        "dry-run", "-c", EXAMPLE, "--json", completed,
        env={"CRM_TOKEN": "crm-very-secret", "CRM_URL": "https://crm.test/x"}
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["rule"] for r in data["explain"] if r["matched"]] == ["hover-job-completed"]
    steps = {s["id"]: s for s in data["actions"]}
    assert steps["job"]["params"] == {"method": "GET", "path": "/api/v3/jobs/19402492"}
    assert "steps" in steps["crm"]["error"]  # its input comes from the hover step, which a dry-run does not call
    assert "crm-very-secret" not in result.stdout


def test_dry_run_reads_stdin_and_headers(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "rules: [r.yaml]\nsources:\n  gh: {preset: github, secret: s3cret-value}\n  other: {token: abcd1234}\n"
    )
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: pushes\n    source: gh\n    event: push\n    when: {$headers.x-trace: abc}\n"
        "    actions: [{log: {message: '{{ headers[\"x-trace\"] }} {{ event.ref }}'}}]\n"
    )
    result = hookwise(
        "dry-run", "-c", config, "--source", "gh", "--header", "X-GitHub-Event: push", "--header", "X-Trace: abc", "-",
        stdin='{"ref": "main"}'
    )
    assert result.returncode == 0, result.stderr
    assert "pushes  yes" in result.stdout and '"message": "abc main"' in result.stdout
    ambiguous = hookwise("dry-run", "-c", config, "-", stdin="{}")
    assert ambiguous.returncode == 2 and "--source is required" in ambiguous.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dry-run", "-c", str(EXAMPLE), "/nonexistent.json"], "No such file or directory"),
        (["dry-run", "-c", str(EXAMPLE), "--header", "nocolon", str(FAILED_V2)], "expected 'Name: value'"),
        (["frobnicate"], "No such command"),
        (["check", "--bogus"], "No such option"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = hookwise(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)


def test_dry_run_of_invalid_json_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = hookwise("dry-run", "-c", EXAMPLE, bad)
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_test_passes_on_the_shipped_cases() -> None:
    result = hookwise("test", "-c", EXAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("17 passed, 0 failed")


def test_test_fails_with_a_diff(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "rules" / "tests" / "events", tmp_path / "events")
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: wrong key\n    source: hover\n    event: {file: events/job-state-changed-v2_failed.json}\n"
        "    expect:\n      rules: [hover-job-failed, hover-model-failed]\n"
        "      actions: [{rule: hover-job-failed, step: 0, requeue: {key: '42'}}]\n"
    )
    result = hookwise("test", "-c", EXAMPLE, cases)
    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "rules: expected ['hover-job-failed', 'hover-model-failed'], got ['hover-job-failed']" in result.stdout
    assert "hover-model-failed: no: event: expected 'model-state-changed', got 'job-state-changed-v2'" in result.stdout
    assert 'hover-job-failed step 0 (requeue): requeue.key: expected "42", got 19402492' in result.stdout
    assert result.stdout.strip().endswith("0 passed, 1 failed")


def test_an_invalid_case_file_exits_78(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - name: x\n    source: hover\n    event: {}\n    expekt: {}\n")
    result = hookwise("test", "-c", EXAMPLE, cases)
    assert result.returncode == 78
    assert "cases.yaml:5:5: cases[0].expekt: unknown key (did you mean 'expect'?)" in result.stderr


def test_schema_prints_the_three_schemas() -> None:
    result = hookwise("schema")
    assert result.returncode == 0
    schemas = json.loads(result.stdout)
    assert set(schemas) == {"config", "rules", "cases"}
    assert "sources" in schemas["config"]["properties"]
    step = schemas["rules"]["$defs"]["Step"]
    assert {"http", "email", "requeue", "emit", "log", "exec", "hover", "retry", "if"} <= set(step["properties"])
    rules_only = json.loads(hookwise("schema", "rules").stdout)
    assert rules_only["title"] == "hookwise rules"


def test_version() -> None:
    result = hookwise("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout


SECRET = "crmtoken-5f3a9c"


@pytest.mark.parametrize("command", [["check"], ["dry-run", "-"], ["serve", "--port", "0"]])
def test_problem_messages_never_show_a_secret(tmp_path: Path, command: list[str]) -> None:
    # The secret misplaced as a duration, a size, a number, an enum and a URL, in the
    # config and in a rule file: every place is reported, the secret never shown.
    (tmp_path / "config.yaml").write_text(
        "rules: [r.yaml]\nserver: {max_body: \"${CRM_TOKEN}\"}\ndefaults: {timeout: \"${CRM_TOKEN}\"}\n"
        "sources:\n  shop: {token: \"${CRM_TOKEN}\"}\n"
    )
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: a\n    source: shop\n    when: {total: {gt: \"${CRM_TOKEN}\"}}\n    actions:\n"
        "      - http: {url: \"${CRM_TOKEN}\", method: \"${CRM_TOKEN}\"}\n        timeout: \"${CRM_TOKEN}\"\n"
    )
    result = hookwise(*command, "-c", "config.yaml", cwd=tmp_path, env={"CRM_TOKEN": SECRET}, stdin="{}")
    assert result.returncode == 78, result.stderr
    places = [line.split(": ", 2)[:2] for line in result.stderr.splitlines()]
    assert places == [
        ["config.yaml:2:20", "server.max_body"],
        ["config.yaml:3:21", "defaults.timeout"],
        ["r.yaml:4:24", "rules[0].when.total.gt"],
        ["r.yaml:6:21", "rules[0].actions[0].http.url"],
        ["r.yaml:6:45", "rules[0].actions[0].http.method"],
        ["r.yaml:7:18", "rules[0].actions[0].timeout"],
    ]
    assert SECRET not in result.stderr + result.stdout and "'****'" in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("args", [[], ["runs"], ["hover"]])
def test_a_command_without_arguments_prints_its_help(args: list[str]) -> None:
    result = hookwise(*args)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: hookwise {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in result.stdout


def test_send_defaults_to_the_only_source_and_takes_a_base_url(tmp_path: Path) -> None:
    from .support import Sink

    (tmp_path / "c.yaml").write_text("rules: []\nsources:\n  shop: {token: shop-t0ken}\n")
    (tmp_path / "e.json").write_text('{"id": 1}')
    sink = Sink()
    try:
        for given, path in [("", "/hooks/shop"), ("/", "/hooks/shop"), ("/proxy", "/proxy/hooks/shop"),
                            ("/hooks/shop", "/hooks/shop"), ("/in/hooks/shop?x=1", "/in/hooks/shop?x=1")]:
            url = sink.url + given
            result = hookwise("send", "-c", tmp_path / "c.yaml", "--url", url, tmp_path / "e.json")
            assert result.returncode == 0, result.stderr
            hit = sink.hits[-1]
            assert hit.path.split("token=")[0].rstrip("?&") == path and "token=shop-t0ken" in hit.path
            assert hit.json() == {"id": 1}
    finally:
        sink.close()
    (tmp_path / "c.yaml").write_text("rules: []\nsources:\n  shop: {token: shop-t0ken}\n  crm: {token: crm-t0ken}\n")
    ambiguous = hookwise("send", "-c", tmp_path / "c.yaml", tmp_path / "e.json")
    assert ambiguous.returncode == 2
    assert ambiguous.stderr == "error: --source is required: c.yaml has 2 sources (crm, shop)\n"
    unknown = hookwise("send", "-c", tmp_path / "c.yaml", "--source", "shp", tmp_path / "e.json")
    assert unknown.returncode == 2
    assert "no source named 'shp'" in unknown.stderr and "did you mean 'shop'?" in unknown.stderr


def test_dry_run_refuses_a_source_that_is_not_configured() -> None:
    result = hookwise("dry-run", "-c", EXAMPLE, "--source", "nope", FAILED_V2)
    assert result.returncode == 2
    assert result.stderr == (
        "error: no source named 'nope' in config.example.yaml "
        "(sources: hover; hookwise for the events hookwise emits itself)\n"
    )
    exhausted = '{"queue": "field-techs", "key": "1"}'
    emitted = hookwise("dry-run", "-c", EXAMPLE, "--source", "hookwise", "-", stdin=exhausted)
    assert emitted.returncode == 0, emitted.stderr


def test_an_empty_config_is_valid_and_warns_that_there_are_no_rules(tmp_path: Path) -> None:
    (tmp_path / "hookwise.yaml").write_text("")
    result = hookwise("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "hookwise.yaml: warning: no rules: 'rules:' is not set and the default folder rules/ holds no rule file\n"
    )
    assert result.stdout == "hookwise.yaml: ok: 0 sources, 0 rules, 0 steps, 1 warning\n"
    assert hookwise("check", "--strict", cwd=tmp_path).returncode == 1
    (tmp_path / "hookwise.yaml").write_text("rules: [mine/]\n")  # a folder the user names must exist
    named = hookwise("check", cwd=tmp_path)
    assert named.returncode == 78
    assert named.stderr == f"hookwise.yaml:1:9: rules[0]: no such file or folder: {tmp_path / 'mine'}\n"


def test_check_strict_fails_on_a_url_the_ssrf_guard_will_refuse(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("rules: [r.yaml]\nsources:\n  shop: {token: shop-t0ken}\n")
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - name: a\n    source: shop\n"
        "    actions: [{http: {url: 'http://169.254.169.254/latest/meta-data/'}}]\n"
    )
    assert hookwise("check", "-c", tmp_path / "c.yaml").returncode == 0
    strict = hookwise("check", "--strict", "-c", tmp_path / "c.yaml")
    assert strict.returncode == 1
    warning = "r.yaml:4:28: rules[0].actions[0].http.url: warning: the SSRF guard will refuse 169.254.169.254"
    assert warning in strict.stderr


def _open_store_files(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open (the SQLite store and its -wal/-shm)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list"],
        ["runs", "list"],
        ["queue", "list"],
        ["queue", "claim", "q"],
        ["explain", "no-such-event"],
        ["store", "migrate"],
    ],
)
def test_a_command_closes_the_store_it_opens(project: Callable[..., Path], tmp_path: Path, args: list[str]) -> None:
    from engine.cli import run

    config = project("rules: []\n")
    assert run([*args, "-c", str(config)]) in (0, 2)
    assert _open_store_files(tmp_path / "data") == []
