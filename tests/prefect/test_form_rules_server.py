"""A combination a request model refuses is refused by the Prefect server too, before any flow run exists.

The UI (and `prefect deployment run --params`) create runs from a deployment; the server validates the
parameters against the deployment's schema first (`enforce_parameter_schema`), which carries the cross-field
rules (rollbook.form_rules). Nothing is served here: a refused run must simply never appear.
"""

from __future__ import annotations

import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import PrefectHTTPStatusError

from deployments import all_deployments


def test_server_refuses_a_run_that_breaks_a_cross_field_rule() -> None:
    deployment = next(d for d in all_deployments() if d.name == "hello-cluster")
    deployment.name = f"hello-cluster-rules-{uuid.uuid4().hex[:8]}"
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError, match="409") as refused:
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"request": {"cluster_block": "prod", "kubeconfig_path": "/k"}}
            )
        assert "should not be valid" in refused.value.response.text
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        assert runs == []
        accepted = client.create_flow_run_from_deployment(deployment_id, parameters={"request": {"cluster_block": "x"}})
        assert accepted.parameters == {"request": {"cluster_block": "x"}}
        client.delete_flow_run(accepted.id)
        client.delete_deployment(deployment_id)


def test_server_takes_optional_fields_left_out_or_null() -> None:
    """`FormOptional` fields have no null branch and no default in the schema; the real server still creates the run
    when they are left out (what the form sends for an empty input), given as null (a `--params` JSON), or as
    the request's default the form starts from (its optional fields are null there)."""
    deployment = next(d for d in all_deployments() if d.name == "hello-cluster")
    deployment.name = f"hello-cluster-optional-{uuid.uuid4().hex[:8]}"
    form_default = deployment._parameter_openapi_schema.model_dump_for_openapi()["properties"]["request"]["default"]
    assert form_default["namespace"] is None
    deployment_id = deployment.apply()
    nulls = {"cluster_block": None, "kubeconfig_path": None, "namespace": None}
    with get_client(sync_client=True) as client:
        for request in ({}, nulls, form_default):
            accepted = client.create_flow_run_from_deployment(deployment_id, parameters={"request": request})
            assert accepted.parameters == {"request": request}
            client.delete_flow_run(accepted.id)
        for namespace in ("Not_A_Name", ""):  # an invalid name, or an empty one, is still refused up front
            with pytest.raises(PrefectHTTPStatusError, match="409"):
                client.create_flow_run_from_deployment(deployment_id, parameters={"request": {"namespace": namespace}})
        client.delete_deployment(deployment_id)
