"""The exec action, running real commands."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from actions.exec import MAX_OUTPUT, ExecAction, ExecParams, command_env
from engine.errors import Fail, Retry
from engine.events import Event
from engine.rules.config import Settings
from engine.run.action import Context

SH = "/bin/sh"


def context() -> Context:
    event = Event(source="test", type="thing.happened", body={}, id="ev-1")
    return Context(
        event=event, run_id="run-1", step_id="cmd", attempt=1, idempotency_key="run-1-cmd",
        logger=logging.getLogger("test.exec")
    )


def run(action: ExecAction | None = None, **params: Any) -> dict[str, Any]:
    return (action or ExecAction(None)).run(ExecParams.model_validate(params), context())


def gone(pid: int) -> bool:
    """Whether ``pid`` is dead (a zombie not yet reaped by its new parent counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while not gone(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def test_output_of_a_command() -> None:
    out = run(command=["/bin/echo", "hello", "wörld"])
    assert out == {
        "exit_code": 0, "stdout": "hello wörld\n", "stderr": "", "stdout_truncated": False, "stderr_truncated": False
    }


def test_arguments_are_not_interpreted_by_a_shell() -> None:
    assert run(command=["/bin/echo", "$HOME; echo x", "*"])["stdout"] == "$HOME; echo x *\n"


def test_stdout_and_stderr_are_kept_apart() -> None:
    out = run(command=[SH, "-c", "echo out; echo err >&2"])
    assert (out["stdout"], out["stderr"]) == ("out\n", "err\n")


def test_stdin_is_passed() -> None:
    assert run(command=["cat"], stdin="line 1\nlïne 2")["stdout"] == "line 1\nlïne 2"


def test_without_stdin_the_command_reads_nothing() -> None:
    assert run(command=["cat"], timeout=5)["stdout"] == ""


def test_env_is_the_base_plus_the_steps_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKWISE_TEST_SECRET", "s3cret")
    out = run(command=[SH, "-c", 'echo "$FOO|${HOOKWISE_TEST_SECRET-unset}|$PATH"'], env={"FOO": "bar baz"})
    assert out["stdout"] == f"bar baz|unset|{os.environ['PATH']}\n"


def test_command_env_keeps_only_the_base_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = command_env({"LANG": "de_DE.UTF-8", "X": "1"})
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["LANG"] == "de_DE.UTF-8"
    assert env["X"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in env


def test_the_steps_path_finds_the_program(tmp_path: Path) -> None:
    tool = tmp_path / "my-tool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    assert run(command=["my-tool"], env={"PATH": str(tmp_path)})["stdout"] == "tool ran\n"


def test_cwd(tmp_path: Path) -> None:
    assert run(command=["pwd"], cwd=str(tmp_path))["stdout"] == f"{tmp_path.resolve()}\n"


def test_a_non_zero_exit_is_retried_with_the_code_and_stderr() -> None:
    with pytest.raises(Retry, match=r"^exec: '/bin/sh' exited with 3: could not reach the printer$") as caught:
        run(command=[SH, "-c", "echo working; echo could not reach the printer >&2; exit 3"])
    assert caught.value.after is None


def test_a_command_killed_by_a_signal_is_retried() -> None:
    with pytest.raises(Retry, match=r"was killed by SIGTERM"):
        run(command=[SH, "-c", "kill -TERM $$"])


def test_arguments_stay_out_of_messages() -> None:
    with pytest.raises(Retry) as caught:
        run(command=[SH, "-c", "exit 1", "--token=t0psecret"])
    assert "t0psecret" not in str(caught.value)


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(Retry, match=r"^exec: '/bin/sh' timed out after 0.5s; its process group was killed$"):
        run(command=[SH, "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    grandchild = int(pidfile.read_text())
    assert wait_gone(grandchild)


def test_the_default_timeout_comes_from_the_config() -> None:
    action = ExecAction(Settings.model_validate({"defaults": {"timeout": "300ms"}}))
    with pytest.raises(Retry, match=r"timed out after 0.3s"):
        run(action, command=["sleep", "30"])


def test_a_background_child_holding_stdout_does_not_hold_the_step() -> None:
    out = run(command=[SH, "-c", "sleep 30 & echo $!"], timeout=10)
    background = int(out["stdout"])
    try:
        assert out["exit_code"] == 0  # returned, not timed out after 10 s
    finally:
        os.kill(background, signal.SIGKILL)


def test_a_missing_command_fails_at_once() -> None:
    with pytest.raises(Fail, match=r"^exec: command not found: 'no-such-command-hookwise'$"):
        run(command=["no-such-command-hookwise"])


def test_a_file_that_is_not_executable_fails_at_once(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    with pytest.raises(Fail, match=r"cannot run .*script\.sh'?: Permission denied"):
        run(command=[str(script)])


def test_a_missing_working_directory_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(Fail, match=r"working directory .* does not exist"):
        run(command=["pwd"], cwd=str(tmp_path / "nowhere"))


def test_output_is_capped_and_marked() -> None:
    out = run(command=[SH, "-c", "head -c 200000 /dev/zero | tr '\\0' a; head -c 100000 /dev/zero | tr '\\0' b >&2"])
    assert out["stdout"] == "a" * MAX_OUTPUT
    assert out["stderr"] == "b" * MAX_OUTPUT
    assert out["stdout_truncated"] is True and out["stderr_truncated"] is True


def test_a_large_stdin_is_fed_while_output_is_read() -> None:
    data = "0123456789" * 50_000  # 500 kB: more than any pipe buffer, in and out
    out = run(command=["cat"], stdin=data, timeout=10)
    assert out["stdout"] == data[:MAX_OUTPUT]
    assert out["stdout_truncated"] is True


def test_a_command_that_ignores_its_stdin_still_succeeds() -> None:
    assert run(command=["true"], stdin="x" * 500_000, timeout=10)["exit_code"] == 0


def test_invalid_utf8_is_replaced() -> None:
    assert run(command=[SH, "-c", "printf 'a\\377b'"])["stdout"] == "a\ufffdb"
