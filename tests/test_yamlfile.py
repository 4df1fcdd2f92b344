"""engine/rules/yamlfile.py: positions, the YAML 1.2 scalars, interpolation and secrets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.rules.yamlfile import InterpolationError, interpolate, loads


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: yes", "yes"),  # YAML 1.1 booleans stay strings
        ("a: on", "on"),
        ("a: true", True),
        ("a: False", False),
        ("a: ~", None),
        ("a:", None),
        ("a: 12", 12),
        ("a: -3", -3),
        ("a: 0x1F", 31),
        ("a: 1_000", 1000),
        ("a: 2.5", 2.5),
        ("a: 1e3", 1000.0),
        ("a: '12'", "12"),
        ('a: "true"', "true"),
        ("a: 2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),  # date-times stay strings
        ("a: 2024-01-01", "2024-01-01"),
        ("a: 1:30", "1:30"),  # no sexagesimal numbers
        ("a: [1, x, true]", [1, "x", True]),
        ("a: {b: 1}", {"b": 1}),
    ],
)
def test_scalars_follow_the_core_schema(text: str, expected: object) -> None:
    assert loads(text).data == {"a": expected}


def test_marks_of_keys_and_values() -> None:
    doc = loads("top:\n  list:\n    - name: x\n      url:  http://a\n", file="f.yaml")
    assert doc.keys[("top", "list", 0, "url")].line == 4
    assert doc.keys[("top", "list", 0, "url")].col == 7
    assert doc.values[("top", "list", 0, "url")].col == 13
    assert doc.mark(("top", "list", 0, "missing")) == doc.values[("top", "list", 0)]


def test_source_text_of_a_node() -> None:
    doc = loads("rules:\n  - name: a\n    x: 1\n  - name: b\n")
    assert doc.source(("rules", 0)) == "name: a\n    x: 1\n  "
    assert doc.source(("rules", 1)).startswith("name: b")


def test_merge_keys_expand_and_own_keys_win() -> None:
    doc = loads("base: &b {p: 1, q: 2}\nm:\n  <<: *b\n  q: 3\n")
    assert doc.data["m"] == {"p": 1, "q": 3}


def test_duplicate_keys_are_errors_at_the_second_key() -> None:
    with pytest.raises(ConfigError) as info:
        loads("a: 1\nb: 2\na: 3\n", file="f.yaml")
    assert [str(p) for p in info.value.problems] == ["f.yaml:3:1: a: duplicate key 'a'"]


def test_syntax_error_has_a_position() -> None:
    with pytest.raises(ConfigError) as info:
        loads("a: [1, 2\nb: 3\n", file="f.yaml")
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("f.yaml", 2)
    assert "invalid YAML" in problem.message


def test_several_documents_are_refused() -> None:
    with pytest.raises(ConfigError, match="one YAML document"):
        loads("a: 1\n---\nb: 2\n")


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A:-d}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("$$A", {"A": "x"}, "$A"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost: 5$", {}, "cost: 5$"),
        ("$A", {"A": "x"}, "$A"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A:?needed}", {"A": "v"}, "v"),
    ],
)
def test_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(value, env)[0] == expected


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("${A}", {}, "environment variable A is not set"),
        ("${A:?set A to the token}", {}, "environment variable A: set A to the token"),
        ("${A:?set it}", {"A": ""}, "environment variable A: set it"),
        ("${A", {}, "unclosed"),
        ("${1A}", {}, "invalid variable reference"),
        ("${A-x}", {}, "invalid variable reference"),
        ("${A}", {"A": "two\nlines"}, "contains a newline"),
    ],
)
def test_interpolation_errors(value: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(InterpolationError, match=re.escape(message)):
        interpolate(value, env)


def test_values_from_the_environment_are_secrets_defaults_are_not() -> None:
    doc = loads("a: ${TOKEN}\nb: ${NOPE:-plain}\nc: x-${OTHER}\n", environ={"TOKEN": "s3cret-token", "OTHER": "y"})
    assert doc.data == {"a": "s3cret-token", "b": "plain", "c": "x-y"}
    assert doc.secrets == {"s3cret-token", "y"}


def test_keys_are_never_interpolated() -> None:
    assert loads("${A}: 1\n", environ={"A": "x"}).data == {"${A}": 1}


def test_every_missing_variable_is_reported_with_its_place() -> None:
    with pytest.raises(ConfigError) as info:
        loads("a: ${ONE}\nlist:\n  - ${TWO}\n", file="c.yaml", environ={})
    assert [str(p) for p in info.value.problems] == [
        "c.yaml:1:4: a: environment variable ONE is not set",
        "c.yaml:3:5: list[0]: environment variable TWO is not set",
    ]


_text = st.text(alphabet=st.sampled_from("ab $"), max_size=12)
_names = st.sampled_from(["A", "B", "C_1"])
_piece = st.one_of(
    _text.map(lambda t: ("text", t)),
    _names.map(lambda n: ("var", n)),
    st.tuples(_names, st.text(alphabet="xy ", max_size=4)).map(lambda p: ("default", p)),
)


def _render(pieces: list[tuple[str, object]]) -> tuple[str, str, dict[str, str]]:
    """Build a template and the text a straightforward reference expands it to."""
    env = {"A": "alpha", "B": ""}
    source, expected = "", ""
    for kind, value in pieces:
        if kind == "text":
            assert isinstance(value, str)
            escaped = value.replace("$", "$$")
            source += escaped
            expected += value
        elif kind == "var":
            assert isinstance(value, str)
            source += "${" + value + ":-}"
            expected += env.get(value, "")
        else:
            name, default = value  # type: ignore[misc]
            source += "${" + name + ":-" + default + "}"
            expected += env.get(name) or default
    return source, expected, env


@given(st.lists(_piece, max_size=6))
def test_interpolation_matches_a_reference(pieces: list[tuple[str, object]]) -> None:
    source, expected, env = _render(pieces)
    assert interpolate(source, env)[0] == expected
