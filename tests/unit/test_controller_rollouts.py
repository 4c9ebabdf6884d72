"""`kubectl rollout status` for StatefulSets and DaemonSets (rollbook.controller_rollouts)."""

from __future__ import annotations

from typing import Any

import pytest

from rollbook.controller_rollouts import rollout_state


def _obj(spec: dict[str, Any], status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "x", "generation": generation}, "spec": spec, "status": status}


DS_DONE = {"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}


@pytest.mark.parametrize(
    ("spec", "status", "done", "says"),
    [
        ({}, DS_DONE, True, "successfully rolled out"),
        ({}, {**DS_DONE, "observedGeneration": 1}, False, "spec update to be observed"),
        ({}, {**DS_DONE, "updatedNumberScheduled": 2}, False, "2 out of 3 new pods"),
        ({}, {**DS_DONE, "numberAvailable": 1}, False, "1 of 3 updated pods are available"),
        ({"updateStrategy": {"type": "OnDelete"}}, DS_DONE, False, "uses OnDelete"),
    ],
)
def test_daemonset_rollouts(spec: dict[str, Any], status: dict[str, Any], done: bool, says: str) -> None:
    state = rollout_state("DaemonSet", _obj(spec, status))
    assert (state.done, state.failed) == (done, False) and says in state.message


STS = {
    "observedGeneration": 2,
    "readyReplicas": 3,
    "updatedReplicas": 3,
    "currentRevision": "r2",
    "updateRevision": "r2",
}


@pytest.mark.parametrize(
    ("spec", "status", "done", "says"),
    [
        ({"replicas": 3}, STS, True, "successfully rolled out"),
        ({"replicas": 3}, {**STS, "readyReplicas": 2}, False, "2 of 3 pods are ready"),
        ({"replicas": 3}, {**STS, "currentRevision": "r1", "updatedReplicas": 1}, False, "1 of 3 pods are on"),
        ({"replicas": 3}, {**STS, "observedGeneration": 1}, False, "spec update to be observed"),
        ({}, {**STS, "readyReplicas": 1}, True, "successfully"),  # replicas defaults to 1
        (
            {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
            {**STS, "currentRevision": "r1", "updatedReplicas": 1},
            True,
            "successfully",
        ),
        (
            {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
            {**STS, "currentRevision": "r1", "updatedReplicas": 1},
            False,
            "1 of 2 pods above the partition",
        ),
        ({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}, STS, False, "uses OnDelete"),
    ],
)
def test_statefulset_rollouts(spec: dict[str, Any], status: dict[str, Any], done: bool, says: str) -> None:
    state = rollout_state("StatefulSet", _obj(spec, status))
    assert state.done == done and says in state.message


def test_deployments_keep_kubectls_deployment_rules() -> None:
    deployment = _obj({"replicas": 2}, {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 2})
    assert "1 out of 2 new replicas" in rollout_state("Deployment", deployment).message
