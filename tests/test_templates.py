"""The sandboxed templates (SPEC 5.2, 5.3, 11): native types, filters, undefined names,
compile errors, the sandbox-escape table, the time and size limits, threads, ``if:``
expressions, and a property test that ``{{ x }}`` gives back ``x`` exactly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError, RenderError
from engine.rules.templates import Compiled, Templates, is_template

EVENT = {
    "job_id": 19402492,
    "state": "failed",
    "hours": 2.5,
    "urgent": True,
    "note": None,
    "tags": ["vip", "roof"],
    "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    "address": {"city": "Zürich", "zip": "8001"},
    "raw": "{{ 7 * 7 }}",
}


class Ticks:
    """A clock that moves ``step`` seconds each time it is read: a render's time is the
    number of limit checks it made, so the time limit is tested without waiting for it."""

    def __init__(self, step: float = 0.001) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def calls_made(work: Callable[[], Any]) -> int:
    """How many functions (Python and built-in) ``work()`` called: work counted, not timed."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


CONTEXT: dict[str, Any] = {
    "event": EVENT,
    "headers": {"x-request-id": "abc"},
    "steps": {"fetch": {"status": 200, "json": {"id": 7}}},
    "attempt": 1,
    "received_at": "2024-05-01T12:30:00Z",
}


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates()


def render(templates: Templates, value: Any, context: dict[str, Any] = CONTEXT) -> Any:
    return templates.compile_value(value).render(context)


def render_error(templates: Templates, value: Any, context: dict[str, Any] = CONTEXT) -> str:
    compiled = templates.compile_value(value)
    with pytest.raises(RenderError) as info:
        compiled.render(context)
    return info.value.message


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- types are kept -----------------------------------------------------------------------

NATIVE = [
    ("{{ 3 }}", 3),
    ("{{ 3.5 }}", 3.5),
    ("{{ true }}", True),
    ("{{ none }}", None),
    ("{{ 'text' }}", "text"),
    ("{{ [1, 2] }}", [1, 2]),
    ("{{ {'a': 1, 'b': [true]} }}", {"a": 1, "b": [True]}),
    ("{{ event.job_id }}", 19402492),
    ("{{ event.hours }}", 2.5),
    ("{{ event.urgent }}", True),
    ("{{ event.note }}", None),
    ("{{ event.address }}", {"city": "Zürich", "zip": "8001"}),
    ("{{ event.tags }}", ["vip", "roof"]),
    ("{{event.job_id}}", 19402492),
    ("{{- event.job_id -}}", 19402492),
    ("{{ event.job_id + 1 }}", 19402493),
    ("{{ event.items|map(attribute='sku') }}", ["A-1", "B-2"]),  # lazy sequences become lists
    ("{{ (1, 2) }}", [1, 2]),
    ("{{ range(3) }}", [0, 1, 2]),
    ("{{ event.address.keys() }}", ["city", "zip"]),
    ("{{ '}} {{' }}", "}} {{"),
    ("{{ steps.fetch.json }}", {"id": 7}),
]


@pytest.mark.parametrize(("source", "expected"), NATIVE)
def test_a_single_expression_keeps_its_type(templates: Templates, source: str, expected: Any) -> None:
    assert same(render(templates, source), expected)


TEXT = [
    ("{{ event.job_id }} and {{ event.state }}", "19402492 and failed"),
    (" {{ event.job_id }} ", " 19402492 "),
    ("{{ event.job_id }}\n", "19402492\n"),
    ("{{ event.job_id }}{{ attempt }}", "194024921"),
    ("{{ event.job_id }}{# why #}", "19402492"),
    ("id={{ event.job_id }}", "id=19402492"),
    ("{% if event.urgent %}{{ event.hours }}{% endif %}", "2.5"),
    ("{% for i in event.items %}{{ i.sku }}x{{ i.qty }};{% endfor %}", "A-1x2;B-2x1;"),
    ("{{ event.tags }} ", "['vip', 'roof'] "),
    ("line 1\n{{ event.state }}\n", "line 1\nfailed\n"),
    ("{{ event.raw }}", "{{ 7 * 7 }}"),  # event data is context, never template source
]


@pytest.mark.parametrize(("source", "expected"), TEXT)
def test_anything_else_renders_to_text(templates: Templates, source: str, expected: str) -> None:
    assert same(render(templates, source), expected)


def test_nested_params_render_leaf_by_leaf(templates: Templates) -> None:
    params = {
        "url": "https://crm.example/jobs/{{ event.job_id }}",
        "json": {"id": "{{ event.job_id }}", "skus": ["{{ event.items[0].sku }}", "static", 3], "ok": True},
        "headers": {"{{ not a template key }}": "{{ headers['x-request-id'] }}"},
        "timeout": 5,
    }
    compiled = templates.compile_value(params)
    assert compiled.is_template
    assert sorted(compiled.template_paths(), key=str) == sorted(
        [("url",), ("json", "id"), ("json", "skus", 0), ("headers", "{{ not a template key }}")], key=str
    )
    assert compiled.render(CONTEXT) == {
        "url": "https://crm.example/jobs/19402492",
        "json": {"id": 19402492, "skus": ["A-1", "static", 3], "ok": True},
        "headers": {"{{ not a template key }}": "abc"},
        "timeout": 5,
    }


def test_static_values_pass_through_in_fresh_containers(templates: Templates) -> None:
    params = {"a": [1, {"b": "plain"}], "c": None}
    compiled = templates.compile_value(params)
    assert not compiled.is_template and compiled.template_paths() == []
    first = compiled.render(CONTEXT)
    assert first == params
    first["a"].append("changed by an action")
    assert compiled.render(CONTEXT) == params
    assert templates.compile_value(7).render({}) == 7


def test_is_template() -> None:
    assert is_template("{{ x }}") and is_template("a {% if x %}b{% endif %}") and is_template("{# c #}")
    assert not is_template("plain { braces } and {x}")


def test_data_keys_win_over_dict_methods(templates: Templates) -> None:
    # A body with an "items" key: event.items must be the data, not dict.items.
    assert render(templates, "{{ event.items|length }}") == 2
    assert render(templates, "{{ event['items'][1].sku }}") == "B-2"


# --- filters and globals ------------------------------------------------------------------

FILTERS = [
    ("{{ event.address|tojson }}", '{"city": "Zürich", "zip": "8001"}'),
    ("{{ {'b': 1, 'a': [1, none]}|tojson }}", '{"b": 1, "a": [1, null]}'),
    ("{{ '<&>'|tojson }}", '"<&>"'),  # not Jinja's HTML-escaped variant
    ("{{ {'a': 1}|tojson(indent=2) }}", '{\n  "a": 1\n}'),
    ("{{ 'hé llo'|b64encode }}", base64.b64encode("hé llo".encode()).decode()),
    ("{{ 'aMOpIGxsbw=='|b64decode }}", "hé llo"),
    ("{{ 'abc'|sha256 }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("{{ event.job_id|sha256 }}", hashlib.sha256(b"19402492").hexdigest()),
    # RFC 4231, test case 2
    (
        "{{ 'what do ya want for nothing?'|hmac_sha256('Jefe') }}",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    ("{{ event.state|hmac_sha256(key=headers['x-request-id']) }}", hmac.new(b"abc", b"failed", "sha256").hexdigest()),
    ("{{ 'a b&c/d'|urlencode }}", "a%20b%26c/d"),
    ("{{ {'q': 'a b', 'n': 1}|urlencode }}", "q=a+b&n=1"),
    ("{{ '../../v3/jobs/4242/archive?x=#f%2F'|path_segment }}", "..%2F..%2Fv3%2Fjobs%2F4242%2Farchive%3Fx%3D%23f%252F"),
    ("/jobs/{{ event.job_id|path_segment }}", "/jobs/19402492"),
    ("{{ 'a b.-_~é'|path_segment }}", "a%20b.-_~%C3%A9"),
    ("{{ '...'|path_segment }}", "..."),
    ("{{ received_at|to_datetime }}", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("{{ '2024-05-01T14:30:00+02:00'|to_datetime }}", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("{{ '2024-05-01T14:30:00+02:00'|to_datetime|strftime('%H:%M %z') }}", "12:30 +0000"),
    ("{{ '2024-05-01 12:30'|to_datetime }}", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("{{ 1714566600|to_datetime }}", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ("{{ 1714566600.5|to_datetime }}", datetime(2024, 5, 1, 12, 30, 0, 500000, tzinfo=UTC)),
    ("{{ received_at|strftime('%d.%m.%Y %H:%M') }}", "01.05.2024 12:30"),
    ("{{ (received_at|to_datetime)|strftime('%Y') }}", "2024"),
    ("{{ 1714566600|strftime('%H') }}", "12"),
    ("{{ event.tags|join(', ')|upper }}", "VIP, ROOF"),  # Jinja's own filters still work
    ("{{ event.items|sum(attribute='qty') }}", 3),
    ("{{ event.items|selectattr('qty', 'gt', 1)|map(attribute='sku')|list }}", ["A-1"]),
    ("{{ 'x'|center(5) }}", "  x  "),
    ("{{ 'a-a'|replace('a', 'bb') }}", "bb-bb"),
    ("{{ '%s=%d'|format('n', 3) }}", "n=3"),
    ("{{ [1, 2, 3]|batch(2, 0)|list }}", [[1, 2], [3, 0]]),
    ("{{ dict(a=event.job_id) }}", {"a": 19402492}),
]


@pytest.mark.parametrize(("source", "expected"), FILTERS)
def test_filters(templates: Templates, source: str, expected: Any) -> None:
    assert same(render(templates, source), expected)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ event.tags|sha256 }}", "sha256 expects text, got list (use |tojson first"),
        ("{{ 'not base64!'|b64decode }}", "Error"),
        ("{{ 'yesterday'|to_datetime }}", "Invalid isoformat string"),
        ("{{ event.tags|to_datetime }}", "to_datetime expects an ISO-8601 string or epoch seconds, got list"),
        ("{{ now()|strftime('%1000Y') }}", "strftime: field widths are not supported"),
        ("{{ '..'|path_segment }}", "path_segment: '..' cannot be a path segment"),
        ("{{ '.'|path_segment }}", "path_segment: '.' cannot be a path segment"),
        ("{{ ''|path_segment }}", "path_segment: '' cannot be a path segment"),
        ("{{ event.tags|path_segment }}", "path_segment expects text or a number, got list"),
        ("{{ event.nope|path_segment }}", "nope"),
    ],
)
def test_filter_misuse_is_a_render_error(templates: Templates, source: str, message: str) -> None:
    assert message in render_error(templates, source)


def test_now_is_aware_utc(templates: Templates) -> None:
    before = datetime.now(UTC)
    value = render(templates, "{{ now() }}")
    assert before <= value <= datetime.now(UTC)
    assert value.utcoffset() == timedelta(0)
    assert render(templates, "{{ now()|strftime('%Y') }}") == str(value.year)


def test_only_the_safe_globals_exist(templates: Templates) -> None:
    assert render(templates, "{{ range(2)|list }} {{ dict(a=1) }}") == "[0, 1] {'a': 1}"
    for name in ("lipsum", "cycler", "joiner", "namespace"):
        assert render_error(templates, f"{{{{ {name} }}}}") == f"undefined name '{name}'"


# --- undefined names and fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{{ evnt.job_id }}", "undefined name 'evnt' (did you mean 'event'?)"),
        ("{{ cycler.__init__ }}", "undefined name 'cycler'"),  # the name, not its attribute
        ({"json": {"job": "{{ steps.job.id }}"}}, "json.job: 'steps' has no attribute 'job'"),
        ({"json": {"job": "{{ steps['job'] }}"}}, "json.job: 'steps' has no attribute 'job'"),
        ({"a": ["x", "{{ event.job_idd }}"]}, "a[1]: 'event' has no attribute 'job_idd' (did you mean 'job_id'?)"),
        ("{{ event.items[5] }}", "'event.items' has no item 5"),
        ("id {{ event.absent }}", "'event' has no attribute 'absent'"),
        ("first line\n{{ event.absent }}", "'event' has no attribute 'absent' (line 2)"),
        ("{{ [event.absent] }}", "'event' has no attribute 'absent'"),  # not "[Undefined]"
        ("{{ {'a': event.absent}|tojson }}", "'event' has no attribute 'absent'"),
        ("{{ event.absent.deeper }}", "'event' has no attribute 'absent'"),
        ("{% for x in event.absent %}{% endfor %}", "'event' has no attribute 'absent'"),
        ("{{ event.absent ~ 'x' }}", "'event' has no attribute 'absent'"),
        ("{{ event.absent|upper }}", "'event' has no attribute 'absent'"),
    ],
)
def test_undefined_names_and_fields_fail_with_their_location(templates: Templates, params: Any, message: str) -> None:
    assert render_error(templates, params) == message


def test_defined_test_and_default_still_work(templates: Templates) -> None:
    assert render(templates, "{{ event.absent is defined }}") is False
    assert render(templates, "{{ event.absent|default('fallback') }}") == "fallback"
    assert render(templates, "{{ [event.absent, event.state]|select('defined')|first }}") == "failed"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
        ("{{ event.state + 1 }}", "TypeError"),
        ("{{ none.x }}", "'None' has no attribute 'x'"),
        ("{{ range(1, 2, 0) }}", "ValueError: range() arg 3 must not be zero"),
        ("{{ event.state() }}", "not callable"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", ""),
    ],
)
def test_no_jinja_or_python_exception_escapes(templates: Templates, source: str, message: str) -> None:
    assert message in render_error(templates, source)


# --- compile errors -----------------------------------------------------------------------


def test_every_syntax_error_is_reported_at_compile_time_with_its_location(templates: Templates) -> None:
    params = {
        "json": {"job": "{{ event.job_id }", "fine": "{{ event.job_id }}"},
        "list": ["ok", "{% for x in %}{% endfor %}"],
        "note": "{# never closed",
        "static": "no template",
    }
    with pytest.raises(ConfigError) as info:
        templates.compile_value(params)
    problems = {p.loc: p.message for p in info.value.problems}
    assert problems == {
        ("json", "job"): "template syntax error: unexpected '}' (line 1)",
        ("list", 1): "template syntax error: Expected an expression, got 'end of statement block' (line 1)",
        ("note",): "template syntax error: Missing end of comment tag (line 1)",
    }


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("{% include 'secrets.yaml' %}", "include"),
        ("{% import 'macros.j2' as m %}", "import"),
        ("{% from 'macros.j2' import m %}", "from ... import"),
        ("{% extends 'base.j2' %}", "extends"),
        ("a\n{% if x %}{% include '/etc/passwd' %}{% endif %}", "include"),
    ],
)
def test_templates_cannot_load_other_templates(templates: Templates, source: str, tag: str) -> None:
    with pytest.raises(ConfigError) as info:
        templates.compile_value({"body": source})
    (problem,) = info.value.problems
    assert problem.loc == ("body",)
    assert f"'{{% {tag} %}}' is not allowed, templates cannot load other templates" in problem.message


def test_nothing_is_evaluated_at_compile_time() -> None:
    # Jinja's constant folding would run this filter while compiling, with no limit.
    compiled = Templates(size_limit=1000).compile_value("{{ 'a'|center(1000000000) }}")
    with pytest.raises(RenderError, match="size limit"):
        compiled.render({})


# --- the sandbox --------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''['__class__'] }}",
    "{{ event.__class__ }}",
    "{{ '{0.__class__}'.format(event) }}",
    "{{ '{0.__globals__}'.format(now) }}",
    "{{ '{0.__init__.__globals__}'.format(range) }}",
    "{{ '{job_id.__class__}'.format_map(event) }}",
    "{{ event|attr('__class__') }}",
    "{{ event.tags|map(attribute='__class__')|list }}",
    "{{ event.items|sort(attribute='__class__.__name__')|first }}",
    "{{ (event|attr('__class__')).__base__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ namespace.__init__ }}",
    "{{ self.__init__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ now.__globals__ }}",
    "{{ now.__code__ }}",
    "{{ dict.mro() }}",
    "{{ range.__globals__ }}",
    "{{ config }}",
    "{{ request }}",
    "{{ event.tags.append(1) }}",
    "{{ event.address.update({'city': 'x'}) }}",
    "{{ event.address.pop('city') }}",
    "{{ event.tags.sort() }}",
    "{{ event.tags.clear() }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_fail(templates: Templates, source: str) -> None:
    message = render_error(templates, source)
    assert message.startswith(("not allowed in templates: ", "undefined name ")), message


def test_the_context_is_not_mutated(templates: Templates) -> None:
    context = {"event": {"tags": ["a"], "address": {"city": "x"}}}
    for source in ("{{ event.tags.append(1) }}", "{{ event.address.clear() }}", "{{ event.tags.pop() }}"):
        render_error(templates, source, context)
    assert context == {"event": {"tags": ["a"], "address": {"city": "x"}}}


# --- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        # Each would run for minutes and produces no output, so only the deadline stops it;
        # the last two make no call, lookup or operation inside the loops.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set r = range(100000)|list %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
        "{% set r = range(100000)|list %}{% for i in r %}{% for j in r if false %}{% endfor %}{% endfor %}",
    ],
)
def test_the_time_limit_stops_a_long_render(source: str) -> None:
    clock = Ticks(0.001)
    compiled = Templates(time_limit=0.2, clock=clock).compile_value({"body": source})
    with pytest.raises(RenderError, match=r"^body: rendering took longer than the time limit \(0.2 s\)$"):
        compiled.render(CONTEXT)
    assert clock.now < 0.21  # it stopped at the first check past the limit (the loops alone would run for minutes)


SIZE_BOMBS = [
    # (template, the start of the message: which check refused it, so a value built first
    # and refused afterwards does not count as a pass)
    ("{{ 'a' * 10 ** 9 }}", "the result of '*' would exceed"),
    ("{{ [1] * 1000000000 }}", "the result of '*' would exceed"),
    ("{{ 10 ** 1000000 }}", "the result of '**' is too large a number"),
    ("{{ (10 ** 5000) * (10 ** 5000) * (10 ** 5000) * (10 ** 5000) }}", "the result of '*' is too large a number"),
    ("{% for i in range(100000) %}{{ event.state * 10 }}{% endfor %}", "the output is larger than"),
    ("{% for i in range(100000) %}literal text in a loop {% endfor %}", "the output is larger than"),
    (
        "{% set s %}{% for i in range(100000) %}captured {% endfor %}{% endset %}{{ s|length }}",
        "the output is larger than"
    ),
    (
        "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ grow('a', 60) }}",
        "the result of '~' would exceed",
    ),
    (
        "{% macro grow(s, n) %}{{ grow(s + s, n - 1) if n else s|length }}{% endmacro %}{{ grow('a', 25) }}",
        "the result of '+' would exceed",
    ),
    (
        "{% set a = [event, event, event, event, event, event, event, event, event, event] %}"
        "{% set b = [a, a, a, a, a, a, a, a, a, a] %}{% set c = [b, b, b, b, b, b, b, b, b, b] %}"
        "{% set d = [c, c, c, c, c, c, c, c, c, c] %}{% set e = [d, d, d, d, d, d, d, d, d, d] %}{{ e|length }}",
        "a literal would exceed",
    ),
    ("{{ '%100000000d' % 1 }}", "the result of '%' would exceed"),
    ("{{ ('%(s)s' * 10000) % {'s': 'x' * 10000} }}", "the result of '%' would exceed"),
    ("{{ '{:100000000}'.format(1) }}", "the result of format() would exceed"),
    ("{{ '{:{}}'.format(1, 100000000) }}", "the result of format() would exceed"),
    ("{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format('x' * 10000) }}", "the result of format() would exceed"),
    (
        "{{ '{a}{a}{a}{a}{a}{a}{a}{a}{a}{a}{a}'.format_map({'a': 'x' * 10000}) }}",
        "the result of format_map() would exceed"
    ),
    ("{{ 'a'|center(100000000) }}", "the result of |center would exceed"),
    ("{{ 'a\nb'|indent(100000000) }}", "the result of |indent would exceed"),
    ("{{ ('a' * 10000)|replace('a', 'b' * 10000) }}", "the result of |replace would exceed"),
    ("{{ range(100000)|join('x' * 100) }}", "the result of |join would exceed"),
    ("{{ [1]|batch(100000000, 'x')|list }}", "the result of |batch would exceed"),
    ("{{ [1]|slice(100000000)|list }}", "the result of |slice would exceed"),
    ("{{ 'x'|wordwrap(1, wrapstring='y' * 100000) }}", "the result of |wordwrap would exceed"),
    ("{{ '%0100000000d'|format(1) }}", "the result of |format would exceed"),
    ("{{ 'a'.ljust(100000000) }}", "the result of ljust() would exceed"),
    ("{{ 'a'.zfill(100000000) }}", "the result of zfill() would exceed"),
    ("{{ ('x' * 1000).join(range(10000)|map('string')) }}", "the result of join() would exceed"),
    ("{{ ('a' * 10000).replace('a', 'b' * 10000) }}", "the result of replace() would exceed"),
    ("{{ '\t\t'.expandtabs(100000000) }}", "the result of expandtabs() would exceed"),
    ("{{ {}.fromkeys(range(100000), 'x' * 1000)|length }}", "the result of a call would exceed"),
    ("{{ range(1000000) }}", "OverflowError: Range too big"),
]


@pytest.mark.parametrize(("source", "message"), SIZE_BOMBS)
def test_the_size_limit_refuses_huge_values_before_building_them(source: str, message: str) -> None:
    compiled = Templates(size_limit=100_000).compile_value(source)
    with pytest.raises(RenderError) as info:
        compiled.render(CONTEXT)
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ [[1], [2]]|sum(start=[]) }}", "sum: start must be a number"),
        ("{{ 'abc'.translate({97: 'x'}) }}", "translate() is not allowed in templates"),
    ],
)
def test_quadratic_or_unbounded_operations_are_refused(templates: Templates, source: str, message: str) -> None:
    assert render_error(templates, source).startswith(message)


def test_the_size_limit_covers_native_values_and_every_leaf_together() -> None:
    templates = Templates(size_limit=1000)
    big = {"blob": "x" * 600}
    assert templates.compile_value("{{ event.blob }}").render({"event": big}) == "x" * 600
    with pytest.raises(RenderError, match="size limit"):
        templates.compile_value("{{ event }}").render({"event": {"blob": "x" * 2000}})
    both = templates.compile_value({"a": "{{ event.blob }}", "b": "{{ event.blob }}"})
    with pytest.raises(RenderError, match=r"^b: the output is larger than the size limit \(1000 characters\)$"):
        both.render({"event": big})


def test_each_render_gets_a_fresh_budget() -> None:
    templates = Templates(size_limit=1000)
    compiled = templates.compile_value("{{ 'x' * 700 }}")
    for _ in range(3):  # 2,100 characters in all: the budget must not carry over
        assert compiled.render({}) == "x" * 700
    forever = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    slow = Templates(time_limit=0.2, clock=Ticks()).compile_value(forever)
    with pytest.raises(RenderError):
        slow.render({})
    with pytest.raises(RenderError):  # the next render has a whole time limit again
        slow.render({})
    assert templates.compile_value("{{ 1 }}").render({}) == 1


def test_values_within_the_limits_render_normally() -> None:
    templates = Templates(size_limit=100_000)
    assert templates.compile_value("{{ ('ab' * 1000)|length }}").render({}) == 2000
    assert templates.compile_value("{{ range(1000)|join(',')|length }}").render({}) == 3889
    assert templates.compile_value("{{ '%05d|%-3s|' % (42, 'x') }}").render({}) == "00042|x  |"
    assert templates.compile_value("{{ '{:>6}{}'.format('ab', 1) }}").render({}) == "    ab1"
    assert templates.compile_value("{{ 2 ** 64 }}").render({}) == 2**64


# --- threads ------------------------------------------------------------------------------


def test_renders_from_many_threads_do_not_interfere(templates: Templates) -> None:
    compiled = templates.compile_value(
        {"id": "{{ event.job_id }}", "text": "{% for i in range(event.n) %}{{ event.job_id }}-{% endfor %}"}
    )
    barrier, errors = threading.Barrier(8), []

    def work(worker: int) -> None:
        barrier.wait()
        try:
            for n in range(200):
                out = compiled.render({"event": {"job_id": worker, "n": n % 7}})
                assert out == {"id": worker, "text": f"{worker}-" * (n % 7)}
        except BaseException as exc:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- if: expressions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("event.hours > 1", True),
        ("event.hours > 3 or 'vip' in event.tags", True),
        ("event.state == 'completed'", False),
        ("event.items|map(attribute='qty')|sum", 3),
        ("event.items|map(attribute='sku')", ["A-1", "B-2"]),
        ("event.absent is defined", False),
        ("steps.fetch.status == 200 and attempt == 1", True),
        ("(received_at|to_datetime).year", 2024),
    ],
)
def test_expressions_evaluate_in_the_sandbox(templates: Templates, source: str, value: Any) -> None:
    expression = templates.compile_expression(source)
    assert same(expression.evaluate(CONTEXT), value)
    assert expression.truthy(CONTEXT) is bool(value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("event.absent > 1", "'event' has no attribute 'absent'"),
        ("evnt.hours > 1", "undefined name 'evnt' (did you mean 'event'?)"),
        ("event.absent", "'event' has no attribute 'absent'"),
        ("''.__class__", "not allowed in templates: access to attribute '__class__' of 'str' object is unsafe."),
        ("event.tags.append(1)", "not allowed in templates"),
    ],
)
def test_expression_failures_are_render_errors(templates: Templates, source: str, message: str) -> None:
    expression = templates.compile_expression(source)
    with pytest.raises(RenderError) as info:
        expression.truthy(CONTEXT)
    assert info.value.message.startswith(message)


def test_an_expression_keeps_to_the_time_limit() -> None:
    # Mapping many items is legitimate work: at most two limit checks per item (100,000
    # items within 0.2 s on a clock that moves 1 µs per check) ...
    templates = Templates(time_limit=0.2, clock=Ticks(1e-6))
    expression = templates.compile_expression("range(100000)|map('string')|list|length > 0")
    assert expression.truthy({}) is True
    # ... and work in proportion to the items, never quadratic (counted in calls, not seconds).
    def mapping(items: int) -> int:
        mapped = Templates().compile_expression(f"range({items})|map('string')|list|length > 0")
        return calls_made(lambda: mapped.truthy({}))

    assert mapping(10_000) < 11 * mapping(1_000)
    spin = Templates(time_limit=0.2).compile_expression("'a' * 10 ** 9")
    with pytest.raises(RenderError, match="size limit"):
        spin.evaluate({})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("event.hours >", "template syntax error: unexpected 'end of template' (line 1)"),
        ("event.hours > 1 event", "template syntax error: unexpected text after the expression (line 1)"),
        ("", "template syntax error: unexpected 'end of template' (line 1)"),
        ("{{ event.hours > 1 }}", "; write the expression without {{ }}"),
    ],
)
def test_expression_syntax_errors_are_config_errors(templates: Templates, source: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        templates.compile_expression(source)
    (problem,) = info.value.problems
    assert problem.loc == ()
    assert message in problem.message


# --- construction -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"time_limit": 0}, {"size_limit": 0}, {"time_limit": -1.0}])
def test_limits_must_be_positive(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Templates(**kwargs)


def test_compiled_values_are_frozen(templates: Templates) -> None:
    compiled = templates.compile_value("{{ 1 }}")
    assert isinstance(compiled, Compiled)
    with pytest.raises(AttributeError):
        compiled.paths = ()  # type: ignore[misc]


# --- property: {{ x }} gives back x -------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
_PROPERTY_TEMPLATES = Templates()


@settings(max_examples=150, deadline=None, database=None)
@given(value=JSON)
def test_a_bare_expression_returns_its_value_exactly(value: Any) -> None:
    compiled = _PROPERTY_TEMPLATES.compile_value({"v": "{{ x }}", "s": "{{ x }} "})
    out = compiled.render({"x": value})
    assert same(out["v"], value)
    assert isinstance(out["s"], str)

