"""The plugin kit (SPEC 15): engine.testing's helpers, and ``hookwise plugin new`` from the
skeleton to an installed package whose tests pass and whose params ``check`` validates."""

from __future__ import annotations

import site
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pydantic
import pytest

from engine import Action, Context, Retry, cli
from engine.errors import ParamsError
from engine.run.plugin_new import files_for
from engine.testing import Emitted, assert_cases_pass, context, event, render_steps, run_action, run_cases

from .conftest import ROOT


class Echo(Action):
    name = "echo"

    class Params(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        word: str
        times: int = 1

    def run(self, params: pydantic.BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, Echo.Params) and ctx.emit is not None
        if params.word == "busy":
            raise Retry("try later", after=3)
        ctx.emit("echoed", {"word": params.word}, "hookwise", 0.0)
        return {"said": " ".join([params.word] * params.times), "event": ctx.event.body, "key": ctx.idempotency_key}


def test_run_action_validates_the_params_and_runs_with_a_real_context() -> None:
    out = run_action(Echo, {"word": "hi", "times": 2}, event=event({"n": 1}))
    assert out == {"said": "hi hi", "event": {"n": 1}, "key": "test-run-0"}
    with pytest.raises(ParamsError) as refused:
        run_action(Echo, {"wrd": "hi"})
    assert str(refused.value) == "echo.word: required; echo.wrd: unknown key (did you mean 'word'?)"
    with pytest.raises(Retry):
        run_action(Echo, {"word": "busy"})
    emitted = Emitted()
    run_action(Echo, {"word": "x"}, ctx=context(emitted=emitted, attempt=2))
    assert emitted.events == [("echoed", {"word": "x"}, "hookwise", 0.0)]


def test_render_steps_and_rule_cases_run_the_real_renderer(project: Callable[..., Path]) -> None:
    config = project({
        "rules.yaml": """\
rules:
  - name: relay
    source: github
    event: push
    actions:
      - log: {message: "{{ event.ref }} by {{ event.pusher.name }}"}
      - id: next
        log: {message: "{{ steps.log.nothing }}"}
""",
        "tests/relay.yaml": """\
cases:
  - name: a push is relayed
    source: github
    headers: {X-GitHub-Event: push}
    event: {ref: refs/heads/main, pusher: {name: ann}}
    expect:
      rules: [relay]
      actions: [{rule: relay, step: 0, log: {message: refs/heads/main by ann}}]
"""})
    steps = render_steps(config, {"ref": "r", "pusher": {"name": "bo"}}, source="github",
                         headers={"X-GitHub-Event": "push"})
    assert steps[0] == {"rule": "relay", "step": 0, "id": "log", "action": "log", "params": {"message": "r by bo"}}
    assert steps[1]["error"] == "message: 'steps' has no attribute 'log'"  # no step ran: no outputs
    assert_cases_pass(config)
    (config.parent / "rules" / "tests" / "relay.yaml").write_text(
        (config.parent / "rules" / "tests" / "relay.yaml").read_text().replace("by ann", "by bo")
    )
    assert run_cases(config).failed == 1
    with pytest.raises(AssertionError, match="rule test cases failed"):
        assert_cases_pass(config)


def test_plugin_new_refuses_a_bad_name_and_an_existing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["plugin", "new", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "is not a valid action name" in capsys.readouterr().err
    assert cli.run(["plugin", "new", "crm_push", "--dir", str(tmp_path)]) == 0
    assert cli.run(["plugin", "new", "crm_push", "--dir", str(tmp_path)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert set(files_for("crm_push")) == {p.relative_to(tmp_path / "hookwise-crm-push").as_posix()
                                          for p in (tmp_path / "hookwise-crm-push").rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["http", "email", "emit"])
def test_plugin_new_refuses_the_name_of_a_built_in_action(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["plugin", "new", name, "--dir", str(tmp_path)]) == 2
    assert f"{name!r} is a built-in action" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def plugin_venv(root: Path) -> Path:
    """A fresh venv that sees this one's packages (hookwise and its dependencies, through a
    .pth), and nothing else: what a plugin author gets after `pip install hookwise`."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (purelib,) = [p for p in Path(venv / "lib").glob("python*/site-packages")]
    (purelib / "hookwise-dev.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    return venv / "bin" / "python"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_new_plugin_installs_passes_its_tests_and_check_validates_its_params(tmp_path: Path) -> None:
    assert cli.run(["plugin", "new", "shout_it", "--dir", str(tmp_path)]) == 0
    package = tmp_path / "hookwise-shout-it"
    python = plugin_venv(tmp_path)
    installed = run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(package)], tmp_path)
    assert installed.returncode == 0, installed.stderr
    tested = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], package)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "4 passed" in tested.stdout
    checked = run([str(python), "-m", "engine", "check", "-c", "example/hookwise.yaml"], package)
    assert (checked.returncode, checked.stdout.strip()) == (0, "hookwise.yaml: ok: 1 source, 1 rule, 1 step")
    rules = package / "example" / "rules" / "shout_it.yaml"
    rules.write_text(rules.read_text().replace("shout: true", "shoot: true"))
    refused = run([str(python), "-m", "engine", "check", "-c", "example/hookwise.yaml"], package)
    assert refused.returncode == 78
    assert refused.stderr.strip() == (
        "example/rules/shout_it.yaml:6:51: rules[0].actions[0].shout_it.shoot: unknown key (did you mean 'shout'?)"
    )
    # Without the package installed, the action is unknown to hookwise. (Not from the package's folder:
    # the egg-info an editable install leaves there would advertise it to any Python started there.)
    missing = run([sys.executable, "-m", "engine", "check", "-c", str(package / "example" / "hookwise.yaml")], tmp_path)
    assert missing.returncode == 78 and "shout_it: unknown key" in missing.stderr


def test_the_example_plugin_is_installed_with_the_project() -> None:
    """make test installs examples/hookwise-jsonl (Makefile): its action is found through
    its entry point, and its own tests run with the suite (pyproject's testpaths)."""
    from engine.run.registry import Registry

    assert "jsonl" in Registry.load()
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "examples/hookwise-jsonl/tests" in settings["tool"]["pytest"]["ini_options"]["testpaths"]
    assert "-e $(EXAMPLE)" in (ROOT / "Makefile").read_text()
