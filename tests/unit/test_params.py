"""`--param` parsing and validation for `rollbook run`."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from rollbook.params import ParamError, parse_assignments, parse_value, validate_for


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
