"""The Prefect run form of every catalogue deployment tells the truth: every default the flow uses is in it.

The UI renders a deployment's parameter schema. pydantic leaves a `default_factory` out of that schema, so a
field filled in by a factory shows as empty ("Required: 0 selected", "Metrics: No items") while the run uses
something else. Two checks, per deployment: every optional property of the schema, at any depth, carries its
default; and no model reachable from the flow's parameters hides a default in a factory.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, get_type_hints

import pytest
from prefect.deployments.runner import RunnerDeployment
from pydantic import BaseModel

from deployments import all_deployments
from flows import CATALOGUE
from rollbook.checklist import CHECKS

DEPLOYMENTS = {d.name: d for d in all_deployments()}


def schema_of(name: str) -> dict[str, Any]:
    deployment: RunnerDeployment = DEPLOYMENTS[name]
    return deployment._parameter_openapi_schema.model_dump_for_openapi()


def hidden_defaults(schema: dict[str, Any]) -> list[str]:
    """Paths of optional properties whose schema has no default (the form cannot show what the run uses)."""
    definitions = schema.get("definitions", {})
    found: list[str] = []

    def walk(node: dict[str, Any], path: str, seen: tuple[str, ...]) -> None:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(definitions[name], path, (*seen, name))
            return
        for key in ("anyOf", "allOf", "oneOf"):
            for option in node.get(key, []):
                walk(option, path, seen)
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]", seen)
        required = set(node.get("required", []))
        for prop, sub in node.get("properties", {}).items():
            if prop not in required and "default" not in sub:
                found.append(f"{path}.{prop}")
            walk(sub, f"{path}.{prop}", seen)

    walk(schema, "", ())
    return found


def models_of(annotation: Any) -> set[type[BaseModel]]:
    """Every pydantic model reachable from a parameter's type (through unions, lists, dicts and fields)."""
    found: set[type[BaseModel]] = set()
    pending = [annotation]
    while pending:
        current = pending.pop()
        if inspect.isclass(current) and issubclass(current, BaseModel):
            if current not in found:
                found.add(current)
                pending.extend(field.annotation for field in current.model_fields.values())
        else:
            pending.extend(a for a in typing.get_args(current) if a is not type(None) and a is not types.NoneType)
    return found


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_every_default_is_in_the_deployment_form(entry: Any) -> None:
    assert hidden_defaults(schema_of(entry.name)) == []


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_no_parameter_model_hides_a_default_in_a_factory(entry: Any) -> None:
    hints = get_type_hints(entry.flow.fn)
    models = set().union(*(models_of(hints[name]) for name in inspect.signature(entry.flow.fn).parameters))
    assert models, "the flow takes no request model: nothing was checked"
    factories = sorted(
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if field.default_factory is not None
    )
    assert factories == []


def _definition(schema: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = schema["definitions"][name]
    return result


def test_checklist_form_shows_that_every_check_blocks_and_what_weakens_it() -> None:
    schema = schema_of("predeploy-checklist")
    policy = _definition(schema, "CheckPolicy")
    assert "required" not in policy["properties"]  # no selection that, by omission, turns checks into warnings
    assert policy["properties"]["downgrade"]["default"] == []
    assert policy["properties"]["skip"]["default"] == []
    assert set(policy["properties"]["downgrade"]["items"]["enum"]) == set(CHECKS)
    request = _definition(schema, "ChecklistRequest")["properties"]
    assert request["policy"]["default"] == {"downgrade": [], "skip": [], "scanner_unavailable": "warn"}


def test_canary_form_shows_its_default_metrics() -> None:
    schema = schema_of("canary-rollout")
    metrics = _definition(schema, "CanaryAnalysis")["properties"]["metrics"]["default"]
    assert [m["name"] for m in metrics] == ["request-success-rate", "request-duration"]
    assert metrics[0]["min"] == 99 and metrics[1]["max"] == 500
    green = _definition(schema_of("blue-green"), "BlueGreenRequest")["properties"]
    assert [m["name"] for m in green["metrics"]["default"]] == ["request-success-rate", "request-duration"]
    assert green["steps"]["default"] == [10, 25, 50, 75, 100]
