"""``hookwise plugin new NAME``: a working plugin package to start from (SPEC 15).

It writes a folder ``hookwise-NAME`` holding a package advertising one action under the
``hookwise.actions`` entry point, its ``Params`` refusing unknown keys as every built-in
action's do, tests that run the action with a real context and the rule cases of a small
example config, and a README saying how to install, test and use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from actions import BUILTINS

from ..errors import UsageError

_NAME = re.compile(r"[a-z][a-z0-9_]*")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "hookwise-$dash"
version = "0.1.0"
description = "The $name action for hookwise."
requires-python = ">=3.11"
dependencies = ["hookwise", "pydantic>=2.6"]

[project.optional-dependencies]
test = ["pytest>=8"]

# hookwise finds the action here once the package is installed: rules use it as `$name:`.
[project.entry-points."hookwise.actions"]
$name = "$package:$cls"

[tool.setuptools]
packages = ["$package"]
"""

PACKAGE = '''\
"""The ``$name`` action for hookwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine import Action, Context, Fail


class $params(BaseModel):
    """The parameters of a ``$name`` step (rendered from the rule's templates)."""

    # Unknown keys are refused, as every built-in action's are: a misspelt key is an
    # error when the rules load, never a default silently used.
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The text to act on.")
    shout: bool = Field(False, description="Upper-case it.")


class $cls(Action):
    """Returns the text it was given (upper-cased when ``shout``), and the event's id.

    Replace :meth:`run` with what the action does. Raise ``engine.Retry`` for a failure
    worth trying again, ``engine.Fail`` for one that is not; return a JSON-able dict,
    which later steps read as ``steps.<id>``."""

    name = "$name"
    Params = $params

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, $params)
        if not params.text.strip():
            raise Fail("text is empty")
        text = params.text.upper() if params.shout else params.text
        ctx.logger.info("%s: %s", self.name, text)
        return {"text": text, "event_id": ctx.event.id}
'''

TEST = '''\
"""The $name action: run with a real context, and the example's rule cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ParamsError
from engine.testing import assert_cases_pass, event, render_steps, run_action
from $package import $cls

EXAMPLE = Path(__file__).resolve().parent.parent / "example" / "hookwise.yaml"


def test_it_returns_the_text() -> None:
    assert run_action($cls, {"text": "hi", "shout": True}, event=event({"id": 1}, id="e1")) == {
        "text": "HI", "event_id": "e1"
    }


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ParamsError, match="txt: unknown key"):
        run_action($cls, {"txt": "hi"})


def test_a_rule_renders_its_params() -> None:
    (step,) = render_steps(EXAMPLE, {"kind": "greeting", "who": "Ann"})
    assert step["params"] == {"text": "hello Ann", "shout": True}


def test_the_example_rule_cases_pass() -> None:
    assert_cases_pass(EXAMPLE)
'''

CONFIG = """\
# A config to try the $name action with: `hookwise check -c example/hookwise.yaml`
rules: [rules/]
sources:
  demo: {verify: none, type: "body:kind"}
"""

RULES = """\
rules:
  - name: $dash-greeting
    source: demo
    event: greeting
    actions:
      - $name: {text: "hello {{ event.who }}", shout: true}
"""

CASES = """\
cases:
  - name: a greeting is shouted back
    source: demo
    event: {kind: greeting, who: Ann}
    expect:
      rules: [$dash-greeting]
      actions:
        - {rule: $dash-greeting, step: 0, $name: {text: hello Ann, shout: true}}
"""

README = """\
# hookwise-$dash

The `$name` action for hookwise.

    pip install -e .                        # hookwise finds the action through its entry point
    python -m pytest tests                  # the action with a real context, and the example's rule cases
    hookwise check -c example/hookwise.yaml # the example's rules, the action's params checked

In a rule:

    actions:
      - $name: {text: "hello {{ event.who }}", shout: true}
"""


def files_for(name: str) -> dict[str, str]:
    """The skeleton's files (path relative to its folder -> text) for action ``name``."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid action name: use lower-case letters, digits and '_', starting with a letter"
        )
    if name in {action.name for action in BUILTINS}:
        raise UsageError(f"{name!r} is a built-in action, which no plugin may replace: choose another name")
    words = {
        "name": name, "dash": name.replace("_", "-"), "package": f"hookwise_{name}",
        "cls": "".join(part.capitalize() for part in name.split("_")) + "Action",
        "params": "".join(part.capitalize() for part in name.split("_")) + "Params",
    }
    package = words["package"]
    texts = {
        "pyproject.toml": PYPROJECT, f"{package}/__init__.py": PACKAGE, f"tests/test_{name}.py": TEST,
        "example/hookwise.yaml": CONFIG, f"example/rules/{name}.yaml": RULES,
        f"example/rules/tests/{name}.yaml": CASES, "README.md": README,
    }
    return {path: Template(text).substitute(words) for path, text in texts.items()}


def write(name: str, where: Path) -> Path:
    """Write the skeleton for ``name`` into ``where/hookwise-NAME``; its path. Refuses to
    write into a folder that exists."""
    files = files_for(name)
    root = where / f"hookwise-{name.replace('_', '-')}"
    if root.exists():
        raise UsageError(f"{root} exists already: choose another name or folder")
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root
