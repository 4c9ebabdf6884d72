"""Cross-field rules hold before a run exists: the deployment's schema (what the Prefect UI's form and the server
check before creating a run) refuses exactly what the request models refuse, and `validate_for` (what
`rollbook run` checks first) names the rule.

Each row is one flow, a parameter set, and whether it is valid. Both checks must give the same answer; rules JSON
Schema cannot express (two fields that must differ) are checked only by the models, and listed as such.
"""

from __future__ import annotations

from typing import Any

import pytest
from prefect.utilities.schema_tools.validation import validate

from deployments import all_deployments
from flows import FLOWS
from rollbook.params import ParamError, validate_for

DEPLOYMENTS = {d.name: d for d in all_deployments()}
CONTROLS = {"reason": "test the form rules", "requested_by": "ci"}
TRAFFIC = {"prometheus_url": "http://127.0.0.1:9090", "kubeconfig_path": "/k"}
CANARY = {
    "namespace": "app",
    "stable_release": "web",
    "canary_release": "web-canary",
    "chart": "oci://registry.example/charts/web",
    **TRAFFIC,
}
BLUE_GREEN = {
    "namespace": "app",
    "blue_release": "b",
    "green_release": "g",
    "chart": "oci://registry.example/charts/web",
    "version": "1.1.0",
}
CHECKLIST = {"namespace": "app", "release": "web", "chart": "oci://registry.example/charts/web"}
UNDO = {"deployment": "web"}
DSN = "postgresql://u:p@db/app"

# (flow, parameters, valid)
ROWS: list[tuple[str, dict[str, Any], bool]] = [
    ("hello-cluster", {"request": {"cluster_block": "prod"}}, True),
    ("hello-cluster", {"request": {"cluster_block": "prod", "kubeconfig_path": "/k"}}, False),
    ("hello-cluster", {"request": {"cluster_block": "prod", "context": "admin"}}, False),
    ("hello-cluster", {"request": {"cluster_block": "prod", "kubeconfig_path": None, "context": ""}}, True),
    ("hello-cluster", {"request": {"kubeconfig_path": "/k", "context": "admin"}}, True),
    ("deployment-undo", {"request": {**UNDO, "to_revision": 3}, "controls": CONTROLS}, True),
    ("deployment-undo", {"request": {**UNDO, "to_revision": 3, "last_known_good": True}, "controls": CONTROLS}, False),
    ("deployment-undo", {"request": {**UNDO, "verify_images": True}, "controls": CONTROLS}, False),
    (
        "deployment-undo",
        {"request": {**UNDO, "last_known_good": True, "verify_images": True}, "controls": CONTROLS},
        False,
    ),
    (
        "deployment-undo",
        {
            "request": {**UNDO, "last_known_good": True, "verify_images": True, "cosign_public_key": "/k.pub"},
            "controls": CONTROLS,
        },
        True,
    ),
    ("last-known-good", {"request": {**UNDO, "verify_images": True}}, False),
    ("last-known-good", {"request": {**UNDO, "verify_images": True, "cosign_public_key": "/k.pub"}}, True),
    ("last-known-good", {"request": {**UNDO, "verify_images": True, "registry_block": "r"}}, True),
    (
        "last-known-good",
        {"request": {**UNDO, "verify_images": True, "registry_block": "r", "cosign_public_key": "/k.pub"}},
        False,
    ),
    (
        "deployment-undo",
        {
            "request": {**UNDO, "last_known_good": True, "verify_images": True, "registry_block": "r"},
            "controls": CONTROLS,
        },
        True,
    ),
    ("predeploy-checklist", {"request": CHECKLIST}, True),
    ("predeploy-checklist", {"request": {**CHECKLIST, "registry_block": "r", "cosign_public_key": "/k.pub"}}, False),
    ("predeploy-checklist", {"request": {**CHECKLIST, "policy": {"downgrade": ["chart"], "skip": ["chart"]}}}, False),
    ("predeploy-checklist", {"request": {**CHECKLIST, "policy": {"downgrade": ["chart"], "skip": ["capacity"]}}}, True),
    ("predeploy-checklist", {"request": {**CHECKLIST, "policy": {"required": ["chart"]}}}, False),
    (
        "predeploy-checklist",
        {"request": {**CHECKLIST, "migration": {"kind": "golang-migrate", "expected_version": "3"}}},
        False,
    ),
    (
        "predeploy-checklist",
        {
            "request": {
                **CHECKLIST,
                "migration": {"kind": "golang-migrate", "expected_version": "3", "database_block": "db", "dsn": DSN},
            }
        },
        False,
    ),
    (
        "predeploy-checklist",
        {"request": {**CHECKLIST, "migration": {"kind": "golang-migrate", "expected_version": "3", "dsn": DSN}}},
        True,
    ),
    ("canary-rollout", {"request": CANARY, "controls": CONTROLS}, True),
    ("canary-rollout", {"request": {**CANARY, "prometheus_block": "p"}, "controls": CONTROLS}, False),
    ("canary-rollout", {"request": {**CANARY, "prometheus_url": None}, "controls": CONTROLS}, False),
    ("canary-rollout", {"request": {**CANARY, "router": "gateway-api"}, "controls": CONTROLS}, False),
    (
        "canary-rollout",
        {"request": {**CANARY, "router": "gateway-api", "http_route": "web"}, "controls": CONTROLS},
        True,
    ),
    ("canary-rollout", {"request": {**CANARY, "http_route": "web"}, "controls": CONTROLS}, False),
    (
        "canary-rollout",
        {
            "request": {**CANARY, "checklist": {"registry_block": "r", "cosign_public_key": "/k.pub"}},
            "controls": CONTROLS,
        },
        False,
    ),
    ("blue-green", {"request": {**BLUE_GREEN, **TRAFFIC}, "controls": CONTROLS}, True),
    ("blue-green", {"request": {**BLUE_GREEN, "kubeconfig_path": "/k"}, "controls": CONTROLS}, False),
]

# Rules only the models check (JSON Schema cannot compare two fields); they fail when the run starts.
MODEL_ONLY: list[tuple[str, dict[str, Any]]] = [
    ("canary-rollout", {"request": {**CANARY, "canary_release": "web"}, "controls": CONTROLS}),
]


def schema_accepts(flow: str, params: dict[str, Any]) -> bool:
    schema = DEPLOYMENTS[flow]._parameter_openapi_schema.model_dump_for_openapi()
    return not validate(params, schema, raise_on_error=False, ignore_required=False)


def model_accepts(flow: str, params: dict[str, Any]) -> bool:
    try:
        validate_for(FLOWS[flow].fn, params)
    except ParamError:
        return False
    return True


@pytest.mark.parametrize(("flow", "params", "valid"), ROWS)
def test_form_schema_and_models_agree(flow: str, params: dict[str, Any], valid: bool) -> None:
    assert model_accepts(flow, params) is valid
    assert schema_accepts(flow, params) is valid


@pytest.mark.parametrize(("flow", "params"), MODEL_ONLY)
def test_rules_only_the_models_can_check(flow: str, params: dict[str, Any]) -> None:
    assert not model_accepts(flow, params)
    assert schema_accepts(flow, params)  # documented gap: the run starts, then fails naming the field


def test_validate_for_names_the_rule() -> None:
    with pytest.raises(ParamError, match="give cluster_block or kubeconfig_path/context, not both"):
        validate_for(FLOWS["hello-cluster"].fn, {"request": {"cluster_block": "prod", "kubeconfig_path": "/k"}})


@pytest.mark.parametrize(
    ("form_name", "answer", "valid"),
    [
        ("Decision", {"approved": True}, False),
        ("Decision", {"approved": True, "approver": "alice"}, True),
        ("Decision", {"approved": False}, True),
        ("RolloutDecision", {"action": "approve"}, False),
        ("RolloutDecision", {"action": "approve", "approver": "alice"}, True),
        ("RolloutDecision", {"action": "hold"}, True),  # what a gate answers itself at its deadline
    ],
)
def test_approving_needs_a_name_in_the_resume_form_and_the_model(
    form_name: str, answer: dict[str, Any], valid: bool
) -> None:
    from pydantic import ValidationError

    from flows._canary_model import RolloutDecision
    from rollbook.change import Decision

    form = {"Decision": Decision, "RolloutDecision": RolloutDecision}[form_name]
    assert (not validate(answer, form.model_json_schema())) is valid
    try:
        form.model_validate(answer)
    except ValidationError:
        assert not valid
    else:
        assert valid
