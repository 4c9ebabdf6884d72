"""`--param` parsing and validation for `rollbook run`."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from rollbook.params import ParamError, parse_assignments, parse_value, validate_for
from rollbook.types import Revision


class Target(BaseModel):
    name: str
    replicas: int = 1


def sample(target: Target, dry_run: bool = False, note: str = "") -> None:
    """A flow-like signature to validate against."""


def test_values_are_json_when_possible() -> None:
    assert parse_value("3") == 3
    assert parse_value("true") is True
    assert parse_value('{"a": 1}') == {"a": 1}
    assert parse_value("plain text") == "plain text"
    assert parse_value('"3"') == "3"
    assert parse_value("") == ""


def test_dotted_keys_build_nested_objects() -> None:
    params = parse_assignments(['target={"name": "web"}', "target.replicas=3", "note=a=b"])
    assert params == {"target": {"name": "web", "replicas": 3}, "note": "a=b"}


@pytest.mark.parametrize("item", ["novalue", "=3", " =x"])
def test_malformed_assignments(item: str) -> None:
    with pytest.raises(ParamError, match="KEY=VALUE"):
        parse_assignments([item])


def test_conflicting_dotted_key() -> None:
    with pytest.raises(ParamError, match="non-object"):
        parse_assignments(["target=3", "target.name=x"])


def test_validation_accepts_good_parameters() -> None:
    validate_for(sample, {"target": {"name": "web"}, "dry_run": True})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"target": {"name": "web"}, "bogus": 1}, "unknown parameter"),
        ({"dry_run": True}, "missing required parameter"),
        ({"target": {"replicas": "many"}}, "target.name"),
        ({"target": {"name": "web"}, "dry_run": "perhaps"}, "dry_run"),
    ],
)
def test_validation_rejects_with_one_line(params: dict[str, object], message: str) -> None:
    with pytest.raises(ParamError) as excinfo:
        validate_for(sample, params)
    assert message in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    revision: Revision | None = None
    replicas: int = 1
    version: str = "1.0"


def strict_sample(request: Strict) -> None:
    """A flow-like signature whose model is strict, as every rollbook request is."""


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (
            "request.revision=" + "[" * 20_000 + "]" * 20_000,
            "value is JSON nested too deeply",
        ),
        ("request.revision=" + "9" * 5000, "--param request.revision: value cannot be read: Exceeds the limit"),
        ("request..revision=1", "empty part in the dotted key"),
        ("request.note=" + "x" * (1 << 21), "at most 1,048,576"),
    ],
)
def test_unreadable_values_are_refused_in_one_line(item: str, words: str) -> None:
    with pytest.raises(ParamError) as excinfo:
        parse_assignments([item])
    assert words in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert len(str(excinfo.value)) < 300


@pytest.mark.parametrize(
    ("assignment", "words"),
    [
        ("request.revision=true", "request.revision: a revision must be a whole number"),
        ('request.revision="1"', "request.revision: a revision must be a whole number"),
        ("request.revision=9223372036854775808", "request.revision: a revision must be at least 1 and below"),
        ("request.replicas=true", "request.replicas: Input should be a valid integer, got True"),
        ('request.replicas="3"', "request.replicas: Input should be a valid integer, got '3'"),
        ("request.version=1.10", "request.version: Input should be a valid string, got 1.1; quote text"),
        ("request.bogus=1", "request.bogus: unknown field"),
    ],
)
def test_strict_numbers_and_messages_name_the_field(assignment: str, words: str) -> None:
    with pytest.raises(ParamError) as excinfo:
        validate_for(strict_sample, parse_assignments([assignment]))
    assert words in str(excinfo.value), str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_many_problems_stay_one_short_line() -> None:
    params = {"request": {f"bogus{i}": i for i in range(50)}}
    with pytest.raises(ParamError) as excinfo:
        validate_for(strict_sample, params)
    assert str(excinfo.value).endswith("and 47 more") and len(str(excinfo.value)) < 400


def test_valid_strict_parameters_pass() -> None:
    validate_for(
        strict_sample, parse_assignments(["request.revision=3", "request.replicas=0", 'request.version="1.10"'])
    )
