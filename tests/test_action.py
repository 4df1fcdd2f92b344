"""The action contract and the registry: built-ins, plugins from config and from entry
points, load-time params checks and run-time validation."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel, BeforeValidator, ConfigDict

from actions import BUILTINS
from actions.http import HttpAction, HttpParams
from actions.log import LogAction, LogParams
from engine.errors import ConfigError, ParamsError
from engine.events import Event
from engine.rules.loader import load
from engine.run.action import Action, Actions, Context
from engine.run.registry import Registry
from engine.units import DURATION_PATTERN

BUILTIN_NAMES = ["email", "emit", "exec", "hover", "http", "log", "requeue"]

PLUGIN = '''
from pydantic import BaseModel, ConfigDict, Field

from engine.run.action import Action


class CrmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: str = Field(description="CRM account")


class CrmAction(Action):
    name = "crm"
    Params = CrmParams

    def run(self, params, ctx):
        return {"account": params.account}


class Nameless(Action):
    Params = CrmParams

    def run(self, params, ctx):
        return None


def helper():
    return None


class NotAnAction:
    pass


class BadParams(Action):
    name = "bad"
    Params = dict

    def run(self, params, ctx):
        return None


class NoRun(Action):
    name = "norun"
    Params = CrmParams
'''

WriteModule = Callable[[str, str], Path]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Write a real module into a folder on sys.path; forget it after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> Path:
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if parent != Path("."):
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
        written.append(name.split(".")[0])
        return path

    yield write
    for top in written:
        for mod in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[mod]


@pytest.fixture
def crm(write_module: WriteModule) -> str:
    write_module("hw_crm", PLUGIN)
    return "hw_crm"


def make_dist(root: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: importlib.metadata finds its *.dist-info on sys.path."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hookwise.actions]\n{lines}")


def context(logger: logging.Logger) -> Context:
    event = Event(source="hover", type="job-state-changed", body={"job_id": 1})
    return Context(
        event=event, run_id="r1", step_id="log", attempt=1, idempotency_key="r1-log", logger=logger, rule="demo"
    )


# --- the contract -------------------------------------------------------------------------


def test_base_run_says_what_to_implement() -> None:
    class Half(Action):
        name = "half"
        Params = LogParams

    with pytest.raises(NotImplementedError, match=r"^Half\.run\(\) must be implemented: it performs the action"):
        Half().run(LogParams(message="x"), context(logging.getLogger("t")))


def test_action_keeps_settings() -> None:
    settings = object()
    assert LogAction(settings).settings is settings
    assert LogAction().settings is None


class Pooled(Action):
    """An action holding a resource: it says when it is made and closed."""

    name = "pooled"
    Params = LogParams
    made: ClassVar[list[Pooled]] = []
    closed: ClassVar[list[Pooled]] = []

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        Pooled.made.append(self)

    def run(self, params: BaseModel, ctx: Context) -> None:
        return None

    def close(self) -> None:
        Pooled.closed.append(self)
        if self.settings == "broken":
            raise OSError("already gone")


def test_actions_are_made_once_per_config_and_closed_when_retired_and_idle() -> None:
    Pooled.made, Pooled.closed = [], []
    actions = Actions({"pooled": Pooled, "log": LogAction}, settings="v1")
    with actions.use("pooled") as first, actions.use("pooled") as again:
        assert first is again and first.settings == "v1"
        actions.retire()
        assert Pooled.closed == []  # steps are still using it
    assert Pooled.closed == [first]
    with actions.use("pooled") as late:  # a step that took the config just before the reload
        assert late is not first
    assert Pooled.closed == [first, late] and len(Pooled.made) == 2


def test_a_failing_close_is_logged_and_stops_nothing(caplog: pytest.LogCaptureFixture) -> None:
    Pooled.made, Pooled.closed = [], []
    actions = Actions({"pooled": Pooled, "log": LogAction}, settings="broken")
    with actions.use("pooled"), actions.use("log"):
        pass
    actions.retire()
    assert len(Pooled.closed) == 1 and "closing Pooled failed" in caplog.text
    assert LogAction(None).close() is None  # the base's close does nothing


def test_context_is_frozen_with_rule_default() -> None:
    ctx = context(logging.getLogger("t"))
    assert ctx.rule == "demo"
    assert Context(ctx.event, "r", "s", 1, "r-s", logging.getLogger("t")).rule == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.attempt = 2  # type: ignore[misc]


@pytest.mark.parametrize("action", BUILTINS, ids=lambda a: a.name)
def test_builtin_keeps_the_contract(action: type[Action]) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", action.name)
    assert issubclass(action.Params, BaseModel)
    assert action.Params.model_config.get("extra") == "forbid"
    undocumented = [n for n, f in action.Params.model_fields.items() if not f.description]
    assert undocumented == []


# --- loading ------------------------------------------------------------------------------


def test_load_builtins() -> None:
    registry = Registry.load(entry_points=False)
    assert registry.names() == BUILTIN_NAMES
    assert registry["http"] is HttpAction
    assert all(registry[n].name == n for n in registry.names())
    assert "http" in registry and "nope" not in registry
    assert len(registry) == len(BUILTINS)


def test_registry_is_immutable() -> None:
    registry = Registry.load(entry_points=False)
    with pytest.raises(TypeError):
        registry["x"] = LogAction  # type: ignore[index]


def test_plugin_from_config(crm: str) -> None:
    registry = Registry.load({"crm": f"{crm}:CrmAction"}, entry_points=False)
    plugin = sys.modules[crm].CrmAction
    assert registry["crm"] is plugin
    assert registry.names() == sorted(BUILTIN_NAMES + ["crm"])
    params = registry.validate("crm", {"account": "acme"})
    assert plugin().run(params, context(logging.getLogger("t"))) == {"account": "acme"}
    assert registry.warnings == ()


def test_plugin_config_key_wins_over_class_name(crm: str) -> None:
    registry = Registry.load({"customers": f"{crm}:CrmAction", "anon": f"{crm}:Nameless"}, entry_points=False)
    assert registry["customers"] is sys.modules[crm].CrmAction
    assert registry["anon"] is sys.modules[crm].Nameless
    assert "crm" not in registry
    assert [(w.loc, w.message, w.warning) for w in registry.warnings] == [
        (("plugins", "customers"), "CrmAction.name is 'crm'; it is registered as 'customers'", True)
    ]


def test_every_bad_plugin_is_reported(crm: str) -> None:
    plugins = {
        "nomod": "mycompany.crm:CrmAction",
        "noattr": f"{crm}:Missing",
        "func": f"{crm}:helper",
        "plain": f"{crm}:NotAnAction",
        "form": "x",
        "params": f"{crm}:BadParams",
        "norun": f"{crm}:NoRun",
        "http": f"{crm}:CrmAction",
        "Bad-Name": f"{crm}:CrmAction",
        "good": f"{crm}:CrmAction",
    }
    with pytest.raises(ConfigError) as info:
        Registry.load(plugins, entry_points=False)
    assert {p.loc: p.message for p in info.value.problems} == {
        ("plugins", "nomod"): "cannot import module 'mycompany.crm': No module named 'mycompany'",
        ("plugins", "noattr"): "module 'hw_crm' has no attribute 'Missing'",
        ("plugins", "func"): "'hw_crm:helper' is not an Action subclass (got function)",
        ("plugins", "plain"): "'hw_crm:NotAnAction' is not an Action subclass (got class NotAnAction)",
        ("plugins", "form"): "'x' is not of the form 'module:Class'",
        ("plugins", "params"): "BadParams.Params must be a pydantic BaseModel subclass",
        ("plugins", "norun"): "NoRun must override run(self, params, ctx)",
        ("plugins", "http"): "'http' is a built-in action: a plugin cannot replace it; choose another name",
        ("plugins", "Bad-Name"):
            "'Bad-Name' is not a valid action name: use lower-case letters, digits and '_', starting with a letter",
    }


def test_plugin_whose_import_fails(write_module: WriteModule) -> None:
    write_module("hw_broken", "raise RuntimeError('boom')\n")
    write_module("hw_pkg.sub", "from hw_pkg.missing import thing\n")
    with pytest.raises(ConfigError) as info:
        Registry.load({"broken": "hw_broken:X", "sub": "hw_pkg.sub:X"}, entry_points=False)
    assert [str(p) for p in info.value.problems] == [
        "plugins.broken: cannot import module 'hw_broken': RuntimeError: boom",
        "plugins.sub: cannot import module 'hw_pkg.sub': No module named 'hw_pkg.missing'",
    ]


def test_plugin_with_dotted_attribute(write_module: WriteModule) -> None:
    write_module("hw_nested", PLUGIN + "\nclass Holder:\n    Inner = CrmAction\n")
    registry = Registry.load({"crm": "hw_nested:Holder.Inner"}, entry_points=False)
    assert registry["crm"] is sys.modules["hw_nested"].CrmAction


def test_entry_point_action_is_loaded(crm: str, tmp_path: Path) -> None:
    make_dist(tmp_path, "hw-crm-plugin", {"crm": f"{crm}:CrmAction"})
    assert Registry.load()["crm"] is sys.modules[crm].CrmAction
    assert "crm" not in Registry.load(entry_points=False)


def test_config_plugin_replaces_an_entry_point(crm: str, tmp_path: Path) -> None:
    make_dist(tmp_path, "hw-crm-plugin", {"crm": f"{crm}:CrmAction"})
    registry = Registry.load({"crm": f"{crm}:Nameless"})
    assert registry["crm"] is sys.modules[crm].Nameless


def test_bad_entry_points_are_reported(crm: str, tmp_path: Path) -> None:
    make_dist(tmp_path, "hw-bad-plugin", {"email": f"{crm}:CrmAction", "gone": "hw_nowhere:Action"})
    with pytest.raises(ConfigError) as info:
        Registry.load()
    assert [p.message for p in info.value.problems] == [
        "entry point 'email' (hookwise.actions) of hw-bad-plugin: "
        "'email' is a built-in action: a plugin cannot replace it; choose another name",
        "entry point 'gone' (hookwise.actions) of hw-bad-plugin: "
        "cannot import module 'hw_nowhere': No module named 'hw_nowhere'",
    ]


# --- load-time params checks --------------------------------------------------------------

Case = tuple[str, dict[str, Any], list[tuple[Any, ...]], dict[tuple[Any, ...], str]]

URL = "https://crm.example.com/jobs"

#: (action, raw params, templated locations, {loc: message prefix}); {} means valid.
CHECKS: list[Case] = [
    ("http", {"url": URL, "method": "POST", "json": {"a": 1}}, [], {}),
    ("http", {"url": URL, "method": "post"}, [], {}),
    ("http", {"urll": URL}, [], {("url",): "required", ("urll",): "unknown key (did you mean 'url'?)"}),
    ("http", {"url": URL, "methd": "GET"}, [], {("methd",): "unknown key (did you mean 'method'?)"}),
    ("http", {"url": URL, "zzz": 1}, [], {("zzz",): "unknown key"}),
    ("http", {"url": 5}, [], {("url",): "Input should be a valid string"}),
    ("http", {"url": "ftp://example.com/x"}, [], {("url",): "must be an http:// or https:// URL with a host"}),
    ("http", {"url": "https:///path"}, [], {("url",): "must be an http:// or https:// URL with a host"}),
    ("http", {"url": URL, "method": "FETCH"}, [], {("method",): "Input should be 'GET', 'HEAD', 'POST'"}),
    ("http", {"url": "{{ event.url }}", "method": "GET"}, [("url",)], {}),
    ("http", {"url": URL, "json": "{{ steps.x }}"}, [("json",)], {}),
    (
        "http", {"url": URL, "timeout": "{{ t }}", "follow_redirects": "{{ f }}"},
        [("timeout",), ("follow_redirects",)], {}
    ),
    ("http", {"url": URL, "expect": [200, "{{ code }}"]}, [("expect", 1)], {}),
    ("http", {"url": URL, "headers": {"X-Job": "{{ event.job_id }}"}}, [("headers", "X-Job")], {}),
    ("http", {"url": URL, "headers": {"X-Job": "{{ event.job_id }}", "X-N": 5}}, [("headers", "X-Job")],
     {("headers", "X-N"): "Input should be a valid string"}),
    ("http", {"url": URL, "timeout": "{{ t }}", "follow_redirects": "yes please"}, [("timeout",)],
     {("follow_redirects",): "Input should be a valid boolean"}),
    (
        "http", {"url": "{{ u }}", "urll": "{{ u }}"}, [("url",), ("urll",)],
        {("urll",): "unknown key (did you mean 'url'?)"}
    ),
    (
        "http", {"url": URL, "json": {"a": 1}, "body": "x"}, [],
        {(): "give at most one of json, form, body (got json and body)"}
    ),
    (
        "http", {"url": URL, "form": {}, "body": "{{ b }}"}, [("body",)],
        {(): "give at most one of json, form, body (got form and body)"}
    ),
    ("http", {"url": URL, "timeout": "10 minutes"}, [], {("timeout",): "invalid duration '10 minutes'"}),
    ("http", {"url": URL, "timeout": "2m", "expect": 201}, [], {}),
    ("http", {"url": URL, "expect": [200, 99]}, [], {("expect", 1): "Input should be greater than or equal to 100"}),
    (
        "http", {"url": URL, "auth": {"basic": ["u", "p"], "bearer": "t"}}, [],
        {("auth",): "give exactly one of basic, bearer"}
    ),
    ("http", {"url": URL, "auth": {}}, [], {("auth",): "give exactly one of basic, bearer"}),
    ("http", {"url": URL, "auth": {"bsic": ["u", "p"]}}, [], {("auth", "bsic"): "unknown key (did you mean 'basic'?)"}),
    ("http", {"url": URL, "auth": {"basic": ["u"]}}, [], {("auth", "basic", 1): "required"}),
    ("http", {"url": URL, "auth": {"bearer": "{{ token }}"}}, [("auth", "bearer")], {}),
    (
        "http", {"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, [],
        {("headers",): "the value of header 'X-A' contains a line break"}
    ),
    ("http", {"url": URL, "params": {"q": "x", "ids": [1, 2], "bad": {"a": 1}}}, [],
     {("params",): "query parameter 'bad' must be a string, number, boolean or a list of them"}),
    ("email", {"to": "ops@example.com", "subject": "Job done", "text": "t"}, [], {}),
    ("email", {"to": ["Ops <ops@example.com>", "b@example.com"], "subject": "s", "html": "<p>h</p>"}, [], {}),
    ("email", {"to": "ops@example.com", "subject": "Job done"}, [], {(): "give at least one of text, html"}),
    ("email", {"to": "nobody", "subject": "s", "text": "t"}, [], {("to", 0): "not an email address"}),
    ("email", {"to": [], "subject": "s", "text": "t"}, [], {("to",): "Value should have at least 1 item"}),
    ("email", {"to": "{{ event.email }}", "subject": "s", "text": "t"}, [("to",)], {}),
    ("email", {"to": "a@example.com", "subject": "a\nBcc: x@example.com", "text": "t"}, [],
     {("subject",): "must not contain a line break"}),
    ("email", {"to": "a@example.com", "subject": "s", "text": "t", "headers": {"X-A\n": "v"}}, [],
     {("headers",): "invalid header name 'X-A\\n'"}),
    (
        "email", {"to": "a@example.com", "cc": "ops", "subject": "s", "text": "t"}, [],
        {("cc", 0): "not an email address"}
    ),
    ("email", {"too": "a@example.com", "subject": "s", "text": "t"}, [],
     {("to",): "required", ("too",): "unknown key (did you mean 'to'?)"}),
    ("requeue", {"queue": "field-techs", "key": 19402492, "data": {"job": 1}}, [], {}),
    ("requeue", {"queue": "Field Techs", "key": "1"}, [], {("queue",): "String should match pattern"}),
    (
        "requeue", {"queue": "q", "key": "1", "max_attempts": 0}, [],
        {("max_attempts",): "Input should be greater than or equal to 1"}
    ),
    ("requeue", {"queue": "q", "key": True}, [], {("key",): "Input should be a valid string"}),
    ("emit", {"type": "crm.synced"}, [], {}),
    ("emit", {"type": ""}, [], {("type",): "String should have at least 1 character"}),
    ("emit", {"data": {}}, [], {("type",): "required"}),
    ("log", {"message": "hi", "level": "WARNING"}, [], {}),
    (
        "log", {"message": "hi", "level": "verbose"}, [],
        {("level",): "Input should be 'debug', 'info', 'warning' or 'error'"}
    ),
    ("exec", {"command": ["/bin/echo", "{{ event.id }}"], "timeout": 5}, [("command", 1)], {}),
    ("exec", {"command": []}, [], {("command",): "List should have at least 1 item"}),
    ("exec", {"command": "ls -l"}, [], {("command",): "Input should be a valid list"}),
    ("hover", {"method": "get", "path": "/api/v3/jobs/{{ event.job_id }}"}, [("path",)], {}),
    ("hover", {"path": "api/v3/jobs"}, [], {("path",): "must be a path on the Hover API starting with a single '/'"}),
    (
        "hover", {"path": "//evil.example/x"}, [],
        {("path",): "must be a path on the Hover API starting with a single '/'"}
    ),
    ("hover", {"path": "/api", "json": {}, "form": {}}, [], {(): "give at most one of json, form (got json and form)"}),
    (
        "hover", {"path": "/api", "method": "OPTIONS"}, [],
        {("method",): "Input should be 'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"}
    ),
]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(entry_points=False)


@pytest.mark.parametrize(("action", "raw", "templated", "expected"), CHECKS)
def test_check_params(
    registry: Registry, action: str, raw: dict[str, Any], templated: list[tuple[Any, ...]],
    expected: dict[tuple[Any, ...], str]
) -> None:
    problems = registry.check_params(action, raw, templated)
    found = {p.loc: p.message for p in problems}
    assert sorted(found, key=str) == sorted(expected, key=str), found
    for loc, prefix in expected.items():
        assert found[loc].startswith(prefix), found[loc]


def _all_numbers(value: Any) -> Any:
    if isinstance(value, dict) and not all(isinstance(v, int) for v in value.values()):
        raise ValueError("every limit must be a number")
    return value


class LimitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limits: Annotated[dict[str, int], BeforeValidator(_all_numbers)]


class LimitAction(Action):
    name = "limit"
    Params = LimitParams

    def run(self, params: BaseModel, ctx: Context) -> None:
        return None


@pytest.mark.parametrize(
    ("templated", "expected"),
    [
        ([], {("limits",): "every limit must be a number"}),
        ([("limits", "b")], {}),  # the error sits above a template: it may render to a number
        ([("other",)], {("limits",): "every limit must be a number"}),
    ],
)
def test_errors_above_a_template_are_left_for_run_time(
    templated: list[tuple[Any, ...]], expected: dict[tuple[Any, ...], str]
) -> None:
    registry = Registry({"limit": LimitAction})
    raw = {"limits": {"a": 1, "b": "{{ event.b }}"}}
    assert {p.loc: p.message for p in registry.check_params("limit", raw, templated)} == expected


def test_check_params_of_unknown_action(registry: Registry) -> None:
    assert [p.message for p in registry.check_params("htp", {}, [])] == ["unknown action 'htp' (did you mean 'http'?)"]


# --- run-time validation ------------------------------------------------------------------


def test_validate_returns_the_params_model(registry: Registry) -> None:
    url = "HTTPS://Example.com:443/a//b?q=1&q=2#frag"
    params = registry.validate(
        "http", {"method": "post", "url": url, "json": {"a": [1]}, "timeout": "1m30s", "expect": 202}
    )
    assert isinstance(params, HttpParams)
    assert (params.method, params.url, params.json_, params.timeout, params.expect) == (
        "POST", url, {"a": [1]}, 90.0, [202]
    )
    assert params.follow_redirects is False and params.body is None


def test_validate_raises_readable_params_error(registry: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        registry.validate("http", {"url": "ftp://example.com", "timeout": "soon", "urll": 1})
    assert str(info.value) == (
        "http.url: must be an http:// or https:// URL with a host; "
        "http.timeout: invalid duration 'soon': use a number of seconds or a number with a unit ms, s, m, h or d "
        "(e.g. '500ms', '10s', '5m', '2h', '7d'); "
        "http.urll: unknown key (did you mean 'url'?)"
    )


def test_validate_catches_what_templates_rendered(registry: Registry) -> None:
    with pytest.raises(ParamsError, match=r"^email\.to\[1\]: not an email address"):
        registry.validate("email", {"to": ["a@example.com", "n/a"], "subject": "s", "text": "t"})
    with pytest.raises(ParamsError, match=r"^requeue\.key: Input should be a valid string$"):
        registry.validate("requeue", {"queue": "q", "key": None})


def test_requeue_key_is_stored_as_text(registry: Registry) -> None:
    assert registry.validate("requeue", {"queue": "q", "key": 19402492}).key == "19402492"  # type: ignore[attr-defined]


def test_defaults(registry: Registry) -> None:
    requeue = registry.validate("requeue", {"queue": "q", "key": "k"})
    emit = registry.validate("emit", {"type": "t"})
    log = registry.validate("log", {"message": "m"})
    hover = registry.validate("hover", {"path": "/api"})
    assert requeue.model_dump() == {"queue": "q", "key": "k", "data": None, "delay": 0.0, "max_attempts": 5}
    assert emit.model_dump() == {"type": "t", "data": {}, "source": "hookwise", "delay": 0.0}
    assert log.model_dump() == {"message": "m", "level": "info"}
    assert hover.model_dump(by_alias=True) == {
        "method": "GET", "path": "/api", "params": None, "json": None, "form": None
    }


# --- the log action -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "levelno"),
    [("debug", logging.DEBUG), ("info", logging.INFO), ("warning", logging.WARNING), ("error", logging.ERROR)]
)
def test_log_action_logs(registry: Registry, caplog: pytest.LogCaptureFixture, level: str, levelno: int) -> None:
    logger = logging.getLogger("hookwise.test.log")
    params = registry.validate("log", {"message": "job 42 at 100% {done}", "level": level})
    with caplog.at_level(logging.DEBUG, logger="hookwise.test.log"):
        assert LogAction().run(params, context(logger)) is None
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("hookwise.test.log", levelno, "job 42 at 100% {done}")
    ]


def test_log_action_through_an_adapter(caplog: pytest.LogCaptureFixture) -> None:
    adapter = logging.LoggerAdapter(logging.getLogger("hookwise.test.adapter"), {"run_id": "r1"})
    with caplog.at_level(logging.INFO, logger="hookwise.test.adapter"):
        LogAction().run(
            LogParams(message="hello"), dataclasses.replace(context(logging.getLogger("x")), logger=adapter)
        )
    assert [(r.levelno, r.getMessage(), getattr(r, "run_id", None)) for r in caplog.records] == [
        (logging.INFO, "hello", "r1")
    ]


# --- schema -------------------------------------------------------------------------------


def test_json_schema(registry: Registry) -> None:
    schema = registry.json_schema()
    assert list(schema) == BUILTIN_NAMES
    http = schema["http"]["properties"]
    assert "json" in http and "json_" not in http
    assert schema["http"]["required"] == ["url"]
    assert schema["http"]["additionalProperties"] is False
    duration, null = http["timeout"]["anyOf"]
    assert duration["anyOf"] == [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}]
    assert null == {"type": "null"}
    assert [s["type"] for s in http["expect"]["anyOf"]] == ["integer", "array", "null"]
    assert schema["email"]["properties"]["to"]["anyOf"] == [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}}
    ]
    assert schema["requeue"]["properties"]["max_attempts"]["default"] == 5


# --- plugin params refuse unknown keys, whatever their model says -------------------------


LAX_PLUGIN = '''
from pydantic import BaseModel, ConfigDict

from engine.run.action import Action


class Contact(BaseModel):  # pydantic's default: unknown keys are dropped
    email: str
    name: str = ""


class ScoreParams(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    score: int = 0
    contact: Contact | None = None
    labels: dict[str, str] = {}


class ScoreAction(Action):
    name = "score"
    Params = ScoreParams

    def run(self, params, ctx):
        return {"score": params.score}
'''


@pytest.fixture
def lax(write_module: WriteModule) -> Registry:
    write_module("hw_lax", LAX_PLUGIN)
    return Registry.load({"score": "hw_lax:ScoreAction"}, entry_points=False)


def test_a_plugins_lax_params_still_refuse_unknown_keys_at_load(lax: Registry) -> None:
    raw = {"scor": 5, "contact": {"emial": "a@example.com", "email": "{{ x }}"}, "labels": {"any": "key"}}
    assert {p.loc: p.message for p in lax.check_params("score", raw, [("contact", "email")])} == {
        ("scor",): "unknown key (did you mean 'score'?)",
        ("contact", "emial"): "unknown key (did you mean 'email'?)",
    }
    assert lax.check_params("score", {"score": 5, "labels": {"x": "y"}}, []) == []


def test_a_plugins_lax_params_still_refuse_unknown_keys_at_run_time(lax: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        lax.validate("score", {"scor": 5})
    assert str(info.value) == "score.scor: unknown key (did you mean 'score'?)"
    with pytest.raises(ParamsError) as info:
        lax.validate("score", {"score": "high", "contact": {"email": "a@example.com", "nmae": "A"}})
    assert str(info.value) == (
        "score.score: Input should be a valid integer, unable to parse string as an integer; "
        "score.contact.nmae: unknown key (did you mean 'name'?)"
    )
    valid = lax.validate("score", {"score": 5, "contact": {"email": "a@example.com"}})
    assert valid.score == 5  # type: ignore[attr-defined]


def test_check_refuses_a_misspelled_plugin_param(write_module: WriteModule, project: Callable[..., Path]) -> None:
    write_module("hw_lax", LAX_PLUGIN)
    config = project(
        "rules:\n  - name: a\n    event: x\n    actions:\n      - score: {scor: 5}\n",
        config="rules: [rules/]\nplugins: {score: \"hw_lax:ScoreAction\"}\n",
    )
    with pytest.raises(ConfigError) as info:
        load(config, {})
    assert [str(p) for p in info.value.problems] == [
        "rules/rules.yaml:5:17: rules[0].actions[0].score.scor: unknown key (did you mean 'score'?)"
    ]
