"""The ``exec`` action: run a command (an argv list; never through a shell).

Outcomes of one attempt:

    exit code 0                               -> {exit_code, stdout, stderr, stdout_truncated, stderr_truncated}
    non-zero exit, killed by a signal,
    timed out (its process group is killed),
    the OS could not start it for now          -> Retry (the step's retry policy bounds it)
    program not found or not executable,
    working directory missing                  -> Fail at once

The command runs in a session (and process group) of its own, so a timeout kills whatever
it started too. Its environment is a small base taken from hookwise's own (PATH, HOME,
LANG, LC_ALL, LC_CTYPE, TZ, TMPDIR, when set) plus the step's ``env``; nothing else of
hookwise's environment (which may hold secrets given as ``${VAR}``) reaches it. A program
named without a slash is looked up in that PATH.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.errors import Fail, Retry
from engine.rules.config import Defaults
from engine.run.action import Action, Context
from engine.units import Duration

#: Bytes kept of stdout and of stderr each; the rest is read and dropped.
MAX_OUTPUT = 64 * 1024
#: Variables passed on from hookwise's environment, when set.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# After the command exits, how long a background child still holding its stdout or stderr
# open may keep the step waiting: the step is over when the command is.
_DRAIN = 0.5
_TICK = 0.05  # how often a quiet command is checked for having exited
_EXCERPT = 200


def _no_nul(value: str) -> str:
    # The OS cannot pass a NUL byte in an argument or variable; say so here, not at run.
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Arg = Annotated[str, AfterValidator(_no_nul)]


class ExecParams(BaseModel):
    """Parameters of the ``exec`` action."""

    model_config = ConfigDict(extra="forbid")

    command: list[Arg] = Field(
        min_length=1, description="The program and its arguments, e.g. [/usr/bin/notify, --job, '123']."
    )
    env: dict[Arg, Arg] | None = Field(
        default=None, description="Environment variables of the command (replacing hookwise's own)."
    )
    stdin: str | None = Field(default=None, description="Text written to the command's standard input.")
    cwd: Arg | None = Field(default=None, description="Working directory of the command.")
    timeout: Duration | None = Field(
        default=None, description="Kill the command after this long; default: defaults.timeout of the config."
    )


class ExecAction(Action):
    """Runs a command and returns ``{exit_code, stdout, stderr, stdout_truncated,
    stderr_truncated}``; a non-zero exit is a temporary failure (Retry).

    ``stdout`` and ``stderr`` are decoded as UTF-8 (bad bytes replaced) and keep their
    first 64 KiB; ``*_truncated`` says more was written. Without ``stdin`` the command
    reads an empty input. ``timeout`` defaults to ``defaults.timeout`` (30 s)."""

    name = "exec"
    Params = ExecParams

    def run(self, params: BaseModel, ctx: Context) -> dict[str, Any]:
        assert isinstance(params, ExecParams)
        timeout = params.timeout or self._default_timeout()
        proc = _start(params)
        try:
            out, err = _communicate(proc, params.stdin, time.monotonic() + timeout)
        except _TimedOut:
            _kill_group(proc)
            killed = f"exec: {_program(params)} timed out after {timeout:g}s; its process group was killed"
            raise Retry(killed) from None
        finally:
            _close_pipes(proc)
        if proc.returncode != 0:
            raise Retry(f"exec: {_program(params)} {_exit_status(proc.returncode)}{_excerpt(err.text())}")
        return {
            "exit_code": proc.returncode,
            "stdout": out.text(),
            "stderr": err.text(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
        }

    def _default_timeout(self) -> float:
        defaults: Defaults = self.settings.defaults if self.settings is not None else Defaults()
        return defaults.timeout


def command_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The command's environment: BASE_ENV from hookwise's own, then ``extra``."""
    env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


def _program(params: ExecParams) -> str:
    # Only the program is named in messages: arguments may carry tokens.
    return repr(params.command[0])


def _start(params: ExecParams) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            params.command,
            stdin=subprocess.PIPE if params.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=params.cwd,
            env=command_env(params.env),
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if params.cwd is not None and exc.filename == params.cwd:
            raise Fail(f"exec: working directory {params.cwd!r} does not exist") from None
        raise Fail(f"exec: command not found: {_program(params)}") from None
    except (PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        raise Fail(f"exec: cannot run {_program(params)}: {exc.strerror}") from None
    except OSError as exc:  # e.g. EAGAIN, ENOMEM: the machine, not the rule
        raise Retry(f"exec: cannot start {_program(params)}: {exc.strerror}") from None


@dataclass
class _Capture:
    """The first MAX_OUTPUT bytes of a stream, and whether more came."""

    head: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = MAX_OUTPUT - len(self.head)
        self.head += chunk[:room]
        self.truncated = self.truncated or len(chunk) > room

    def text(self) -> str:
        return self.head.decode("utf-8", errors="replace")


class _TimedOut(Exception):
    """The command outlived its deadline."""


def _communicate(proc: subprocess.Popen[bytes], stdin: str | None, deadline: float) -> tuple[_Capture, _Capture]:
    """Feed ``stdin``, capture stdout and stderr (capped) and wait for the command to
    exit, all before ``deadline`` (else :class:`_TimedOut`). Unlike
    ``Popen.communicate`` it keeps only the head of each stream, and stops waiting for
    the pipes _DRAIN seconds after the command exits (a background child may hold them)."""
    out, err = _Capture(), _Capture()
    with selectors.DefaultSelector() as selector:
        _register(selector, proc, stdin, out, err)
        exited_at: float | None = None
        while selector.get_map():
            now = time.monotonic()
            if now > deadline:
                raise _TimedOut
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now > exited_at + _DRAIN:
                break
            for key, _ in selector.select(min(_TICK, deadline - now)):
                _service(selector, key)
    _wait(proc, deadline)
    return out, err


def _register(
    selector: selectors.BaseSelector, proc: subprocess.Popen[bytes], stdin: str | None, out: _Capture, err: _Capture
) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, out)
    selector.register(proc.stderr, selectors.EVENT_READ, err)
    if proc.stdin is not None:
        os.set_blocking(proc.stdin.fileno(), False)  # a partial write must not block the loop
        selector.register(proc.stdin, selectors.EVENT_WRITE, memoryview((stdin or "").encode()))


def _service(selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
    """Read from or write to one ready pipe; unregister and close it when done."""
    stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
    if isinstance(key.data, _Capture):
        chunk = os.read(stream.fileno(), 64 * 1024)
        if chunk:
            key.data.add(chunk)
            return
    else:
        pending: memoryview = key.data
        try:
            written = os.write(stream.fileno(), pending[: 64 * 1024])
        except BrokenPipeError:  # the command stopped reading: not our failure
            written = len(pending)
        if written < len(pending):
            selector.modify(stream, selectors.EVENT_WRITE, pending[written:])
            return
    selector.unregister(stream)
    stream.close()


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait for the exit; the pipes may have closed while the command still runs."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise _TimedOut from None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The group outlives its leader while any member lives, so its id cannot have been
    # reused even when the leader is already reaped; ESRCH just means nobody is left.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.kill()  # the leader too, in case it moved itself to another group
    proc.wait()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


def _excerpt(stderr: str) -> str:
    # The end of stderr is where programs say what went wrong.
    flat = " ".join(stderr[-_EXCERPT * 2 :].split())
    if not flat:
        return ""
    return f": {'…' if len(flat) > _EXCERPT else ''}{flat[-_EXCERPT:]}"
