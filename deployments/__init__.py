"""Every deployment `rollbook serve` runs, built from the flow registry in one place."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows import FLOWS

# name (a key of FLOWS, also the deployment name) -> (description, tags)
DEPLOYMENTS: dict[str, tuple[str, list[str]]] = {
    "hello-cluster": ("Check that a cluster answers: version and pod count.", ["demo"]),
    "rollout-history": (
        "Revisions of a Deployment: change-cause, images, created, which one is live.",
        ["rollback", "read-only"],
    ),
    "deployment-undo": ("Undo a Deployment to its previous, a chosen or the last known good revision.", ["rollback"]),
    "last-known-good": (
        "The newest Deployment revision known to have rolled out (optionally with verified images).",
        ["rollback", "read-only"],
    ),
    "helm-rollback": (
        "Roll a Helm release back to its previous good revision (or a chosen one), then verify.",
        ["rollback", "helm"],
    ),
    "helm-atomic-upgrade": (
        "Upgrade a Helm release; on failure helm rolls back and the run says why.",
        ["deploy", "helm"],
    ),
    "rollback-rehearsal": (
        "Drill: deploy v1, upgrade to v2, roll back, verify, in a scratch namespace.",
        ["drill", "helm"],
    ),
    "predeploy-checklist": (
        "Pre-deploy checklist: every check concurrently, one verdict; fails when a required check fails.",
        ["deploy", "read-only"],
    ),
    "canary-rollout": (
        "Shift traffic to a canary in steps with metric analysis; revert automatically, approve before 100%.",
        ["deploy", "progressive"],
    ),
    "blue-green": (
        "Install green beside blue, check it, shift traffic with analysis, retire blue.",
        ["deploy", "progressive"],
    ),
    "blue-green-retire": ("Remove a retired blue release after its keep window.", ["deploy", "progressive"]),
}


def all_deployments() -> list[RunnerDeployment]:
    """The deployments to serve.

    Entrypoints are module paths (`flows.demo.hello_cluster`), not file paths: runs execute in subprocesses
    that import the installed package, so they work whatever directory `rollbook serve` was started from.
    """
    return [
        _deployment(FLOWS[name], name, description=description, tags=tags)
        for name, (description, tags) in DEPLOYMENTS.items()
    ]


def _deployment(flow: Flow[..., Any], name: str, **kwargs: Any) -> RunnerDeployment:
    """`to_deployment` with rollbook's defaults; called from sync code, so the result is never a coroutine."""
    deployment = flow.to_deployment(name, entrypoint_type=EntrypointType.MODULE_PATH, **kwargs)
    assert isinstance(deployment, RunnerDeployment)
    return deployment
