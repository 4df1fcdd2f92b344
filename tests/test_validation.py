"""Pydantic errors as Problems: locations without union labels, readable messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from engine.errors import Loc
from engine.rules.validation import KEY_ERROR, ModelShape, did_you_mean, key_error, pydantic_problems, validate_rest


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("must be even")
    return value


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = 5
    backoff: float = 1.0


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: int = 0  # a key named like one of pydantic's union labels
    rules: str | list[str] = "rules/"
    retry: Retry | None = None
    by_name: dict[str, Retry | bool] = {}
    mode: Literal["a", "b"] | int = "a"
    even: Annotated[int, AfterValidator(_even)] = 0
    pair: tuple[str, int] | None = None

    @model_validator(mode="after")
    def _not_both(self) -> Settings:
        if self.url and self.even:
            raise key_error("give url or even, not both")
        return self


def problems(data: dict[str, Any], fields_of: Any = Settings) -> dict[Loc, str]:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(data)
    return {p.loc: p.message for p in pydantic_problems(info.value, fields_of)}


CASES: list[tuple[dict[str, Any], dict[Loc, str]]] = [
    ({"rules": 5}, {("rules",): "Input should be a valid string, or input should be a valid list"}),
    ({"rules": ["a", 5]}, {("rules", 1): "Input should be a valid string"}),
    ({"retry": {"atempts": 3}}, {("retry", "atempts"): "unknown key (did you mean 'attempts'?)"}),
    (
        {"retry": {"attempts": "x"}},
        {("retry", "attempts"): "Input should be a valid integer, unable to parse string as an integer"}
    ),
    # The Retry member got further than the bool one: only its error is told.
    ({"by_name": {"x": {"bakoff": 1}}}, {("by_name", "x", "bakoff"): "unknown key (did you mean 'backoff'?)"}),
    ({"by_name": {"x": "maybe"}}, {("by_name", "x"): "Input should be a valid dictionary or instance of Retry, "
                                                     "or input should be a valid boolean, unable to interpret input"}),
    ({"by_name": {5: True}}, {("by_name", 5): "invalid key: Input should be a valid string"}),
    ({"mode": None}, {("mode",): "Input should be 'a' or 'b', or input should be a valid integer"}),
    ({"url": "x"}, {("url",): "Input should be a valid integer, unable to parse string as an integer"}),
    ({"even": 3}, {("even",): "must be even"}),
    ({"url": 1, "even": 2}, {(): "give url or even, not both"}),
    ({"pair": ["a"]}, {("pair", 1): "required"}),
    ({"rulez": "x"}, {("rulez",): "unknown key (did you mean 'rules'?)"}),
    ({"zzzz": 1}, {("zzzz",): "unknown key"}),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_problems_with_the_model(data: dict[str, Any], expected: dict[Loc, str]) -> None:
    assert problems(data) == expected


def test_keys_from_a_callable() -> None:
    def fields_of(loc: Loc) -> list[str] | None:
        return ["rules", "retry"] if loc == () else None

    assert problems({"rulse": 1}, fields_of) == {("rulse",): "unknown key (did you mean 'rules'?)"}
    assert problems({"retry": {"atempts": 3}}, fields_of) == {("retry", "atempts"): "unknown key"}


def test_without_the_model_bracketed_labels_still_go() -> None:
    found = problems({"rules": 5, "even": 3}, None)
    # "str" cannot be told from a key named "str" without the model; "list[str]" can.
    assert found == {
        ("rules", "str"): "Input should be a valid string",
        ("rules",): "Input should be a valid list",
        ("even",): "must be even",
    }


def test_key_error_type() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"url": 1, "even": 2})
    assert [e["type"] for e in info.value.errors()] == [KEY_ERROR]


def test_model_shape() -> None:
    shape = ModelShape(Settings)
    assert shape.clean(("by_name", "x", "Retry", "bakoff")) == ("by_name", "x", "bakoff")
    assert shape.clean(("by_name", 5, "[key]")) == ("by_name", 5)
    assert shape.keys(("retry",)) == ["attempts", "backoff"]
    assert shape.keys(("by_name", "x")) == ["attempts", "backoff"]
    assert shape.keys(("rules",)) is None


@pytest.mark.parametrize(
    ("name", "hint"), [("urll", " (did you mean 'url'?)"), ("zzz", ""), ("metod", " (did you mean 'method'?)")]
)
def test_did_you_mean(name: str, hint: str) -> None:
    assert did_you_mean(name, ["url", "method", "headers"]) == hint


class Named(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    retry: Retry | None = None
    tags: list[int] = []


# (data, what is left of it, the problems' places): refused values go (a missing key takes
# its mapping), so that defaults take their places and the rest can still be checked.
REST: list[tuple[Any, dict[str, Any] | None, list[Loc]]] = [
    ({"name": "a"}, {"name": "a", "retry": None, "tags": []}, []),
    ({"name": "a", "retry": {"atempts": 3, "backoff": 2}, "tags": [1, "x", 3]},
     {"name": "a", "retry": {"attempts": 5, "backoff": 2.0}, "tags": [1, 3]}, [("retry", "atempts"), ("tags", 1)]),
    ({"name": 5, "tags": [1]}, {"name": "stand-in", "retry": None, "tags": [1]}, [("name",)]),
    ({"tags": "x"}, {"name": "stand-in", "retry": None, "tags": []}, [("name",), ("tags",)]),
    ("not a mapping", None, [()]),
]


@pytest.mark.parametrize(("data", "left", "places"), REST)
def test_validate_rest(data: Any, left: dict[str, Any] | None, places: list[Loc]) -> None:
    model, found = validate_rest(Named, data, placeholders={"name": "stand-in"})
    assert (model.model_dump() if model else None) == left
    assert [p.loc for p in found] == places


def test_validate_rest_without_a_stand_in_gives_up_on_a_missing_key() -> None:
    model, found = validate_rest(Named, {"tags": [1]})
    assert model is None and [(p.loc, p.message) for p in found] == [(("name",), "required")]
