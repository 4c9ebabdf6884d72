"""Cross-field rules of the request models, written into their JSON schema too, so they hold before a run exists.

A model validator ("give cluster_block or kubeconfig_path, not both") runs when the flow starts: from the Prefect
UI, the run already exists by then and fails. The deployment's parameter schema is what the UI's form checks as
you type and what the server checks before it creates a run from a deployment (`enforce_parameter_schema`), so
each rule that JSON Schema can say is said there as well: a model lists its rules in `FORM_RULES` and
`form_rules_schema` (the models' `json_schema_extra`) adds the rules of the class and its bases as `allOf`.
The model validator stays the authority (and the only check of rules JSON Schema cannot express, such as two
fields that must differ); tests/unit/test_form_rules.py holds both to the same answers.

A field counts as given when it is truthy, exactly as the validators test it (`if self.cluster_block and ...`).
"""

from __future__ import annotations

from typing import Any

# "truthy": not null, not an empty string, not false, not 0, not an empty list or object
_GIVEN: dict[str, Any] = {"not": {"enum": [None, "", False, 0, [], {}]}}
_NOT_NULL: dict[str, Any] = {"not": {"type": "null"}}


def given(*names: str, not_null: bool = False) -> dict[str, Any]:
    """Every one of `names` is given (with `not_null`: present and not null, so 0 counts)."""
    test = _NOT_NULL if not_null else _GIVEN
    return {"required": list(names), "properties": {name: test for name in names}}


def any_given(*names: str) -> dict[str, Any]:
    return {"anyOf": [given(name) for name in names]}


def rule(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One rule; its description is what the form shows next to a schema error."""
    return {"description": description, **schema}


def not_both(first: dict[str, Any], second: dict[str, Any], description: str) -> dict[str, Any]:
    return rule(description, {"not": {"allOf": [first, second]}})


def exactly_one(first: str, second: str, description: str) -> dict[str, Any]:
    return rule(description, {"oneOf": [given(first), given(second)]})


def requires(condition: dict[str, Any], then: dict[str, Any], description: str) -> dict[str, Any]:
    return rule(description, {"if": condition, "then": then})


def when_value(field: str, value: Any) -> dict[str, Any]:
    """`field` is set to `value` (or, when absent, its default is assumed not to be `value`)."""
    return {"required": [field], "properties": {field: {"const": value}}}


def form_rules_schema(schema: dict[str, Any], cls: type) -> None:
    """`json_schema_extra` for request models: the `FORM_RULES` of the class and all its bases, as `allOf`."""
    rules: list[dict[str, Any]] = []
    for klass in reversed(cls.__mro__):
        for item in klass.__dict__.get("FORM_RULES", ()):
            if item not in rules:
                rules.append(item)
    if rules:
        schema["allOf"] = [*schema.get("allOf", []), *rules]
