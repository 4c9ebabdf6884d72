"""The Prefect run form of every catalogue deployment tells the truth: every default the flow uses is in it.

The UI renders a deployment's parameter schema. pydantic leaves a `default_factory` out of that schema, so a
field filled in by a factory shows as empty ("Required: 0 selected", "Metrics: No items") while the run uses
something else. Three checks, per deployment: every optional property of the schema, at any depth, carries its
default (or is a `FormOptional` field, whose default is None and whose empty input is left out, so None); no model
reachable from the flow's parameters hides a default in a factory; and no property renders as the
`anyOf [X, null]` type toggle ("Property is type None") unless `NULL_TOGGLES` lists it, with its reason.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, get_type_hints

import pytest
from prefect.deployments.runner import RunnerDeployment
from prefect.utilities.schema_tools import validate
from pydantic import BaseModel

from deployments import all_deployments
from flows import CATALOGUE
from rollbook.checklist import CHECKS
from rollbook.types import InnerTypeSchema

DEPLOYMENTS = {d.name: d for d in all_deployments()}


def schema_of(name: str) -> dict[str, Any]:
    deployment: RunnerDeployment = DEPLOYMENTS[name]
    return deployment._parameter_openapi_schema.model_dump_for_openapi()


def hidden_defaults(schema: dict[str, Any], none_when_omitted: frozenset[str] = frozenset()) -> list[str]:
    """Paths of optional properties whose schema has no default (the form cannot show what the run uses).

    `none_when_omitted` names the `Model.field`s whose default is None and whose schema leaves it out on purpose
    (rollbook.types.FormOptional): their input starts empty, and an empty input is left out, so the run gets None."""
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
        model = seen[-1] if seen else ""
        for prop, sub in node.get("properties", {}).items():
            if prop not in required and "default" not in sub and f"{model}.{prop}" not in none_when_omitted:
                found.append(f"{path}.{prop}")
            walk(sub, f"{path}.{prop}", seen)

    walk(schema, "", ())
    return found


def null_toggles(schema: dict[str, Any]) -> set[str]:
    """`Model.field` of every property that renders as a type toggle with "None": `anyOf` with a null branch."""
    found: set[str] = set()
    for name, definition in {"Parameters": schema, **schema.get("definitions", {})}.items():
        for prop, sub in definition.get("properties", {}).items():
            if {"type": "null"} in sub.get("anyOf", []):
                found.add(f"{name}.{prop}")
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


def parameter_models(entry: Any) -> set[type[BaseModel]]:
    hints = get_type_hints(entry.flow.fn)
    return set().union(*(models_of(hints[name]) for name in inspect.signature(entry.flow.fn).parameters))


def form_optional(entry: Any) -> frozenset[str]:
    """The `FormOptional` fields of the flow's models: default None, and `FormOptional`'s schema marker."""
    return frozenset(
        f"{model.__name__}.{name}"
        for model in parameter_models(entry)
        for name, field in model.model_fields.items()
        if field.default is None and any(isinstance(m, InnerTypeSchema) for m in field.metadata)
    )


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_every_default_is_in_the_deployment_form(entry: Any) -> None:
    assert hidden_defaults(schema_of(entry.name), form_optional(entry)) == []


# Properties that keep the `anyOf [X, null]` toggle, and why. Each is a nested model or a list, where None is a
# choice of its own that an empty input cannot express; every scalar (text, number, URL, choice) is
# `FormOptional` instead.
NULL_TOGGLES: dict[str, str] = {
    # an object with required fields of its own: "None" is the honest way to say "no migration check"
    "ChecklistRequest.migration": "optional nested model (MigrationCheck)",
    "ChecklistOptions.migration": "optional nested model (MigrationCheck)",
    "UndoRequest.schema_guard": "optional nested model (SchemaGuard, the migration check's shape)",
    "LastKnownGoodRequest.schema_guard": "optional nested model (SchemaGuard, the migration check's shape)",
    "HelmRollbackRequest.schema_guard": "optional nested model (SchemaGuard, the migration check's shape)",
    "CanaryRequest.schema_guard": "optional nested model (SchemaGuard, the migration check's shape)",
    "BlueGreenRequest.schema_guard": "optional nested model (SchemaGuard, the migration check's shape)",
    # the same: "None" says "the dual-read code is deployed another way", a whole upgrade request otherwise
    "ExpandContractRequest.deploy": "optional nested model (AtomicUpgradeRequest)",
    # lists: None means "derive the weights from step_weight and max_weight", which an empty list does not say
    "CanaryAnalysis.step_weights": "optional list, None distinct from []",
    # None means "no acceptance command"; an empty command list is no command either, but would be a change
    # of the field's type (list[str] = []), left for its own decision
    "BlueGreenRequest.acceptance_command": "optional list, None distinct from []",
}


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_no_form_field_is_a_none_toggle_unless_listed(entry: Any) -> None:
    toggles = null_toggles(schema_of(entry.name))
    assert toggles - set(NULL_TOGGLES) == set()


def test_every_listed_none_toggle_still_exists() -> None:
    """The allow-list does not outlive its fields: each entry is a toggle in some deployment's form."""
    every = set().union(*(null_toggles(schema_of(entry.name)) for entry in CATALOGUE))
    assert set(NULL_TOGGLES) - every == set()


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_optional_fields_are_plain_inputs_the_server_takes_left_out_or_null(entry: Any) -> None:
    """What the Prefect server checks (`validate`, with its `preprocess_schema`, as when it creates a run from
    a deployment): a `FormOptional` field left out is valid, and so is an explicit null (a `--params` JSON), because
    a property that is neither required nor defaulted may be null. With `"default": null` in its schema, the
    same null would be refused: that is why `FormOptional` leaves the default out."""
    schema = schema_of(entry.name)
    fields = form_optional(entry)
    for field in sorted(fields):
        model, prop = field.split(".")
        sub = schema["definitions"][model]["properties"][prop]
        assert "anyOf" not in sub and "default" not in sub and "type" in sub, (field, sub)
        alone: dict[str, Any] = {"type": "object", "properties": {prop: sub}}
        assert validate({}, alone, preprocess=True) == [], field
        assert validate({prop: None}, alone, preprocess=True) == [], field
        defaulted = {"type": "object", "properties": {prop: {**sub, "default": None}}}
        assert validate({prop: None}, defaulted, preprocess=True) != [], field


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_no_parameter_model_hides_a_default_in_a_factory(entry: Any) -> None:
    models = parameter_models(entry)
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
