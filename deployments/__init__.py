"""Every deployment `rollbook serve` runs, built from the flow registry in one place."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from flows import (
    atomic_upgrade,
    deployment_undo,
    hello_cluster,
    helm_rollback,
    last_known_good,
    rollback_rehearsal,
    rollout_history,
)


def all_deployments() -> list[RunnerDeployment]:
    """The deployments to serve.

    Entrypoints are module paths (`flows.demo.hello_cluster`), not file paths: runs execute in subprocesses
    that import the installed package, so they work whatever directory `rollbook serve` was started from.
    """
    return [
        _deployment(
            hello_cluster,
            "hello-cluster",
            description="Check that a cluster answers: version and pod count.",
            tags=["demo"],
        ),
        _deployment(
            rollout_history,
            "rollout-history",
            description="Revisions of a Deployment: change-cause, images, created, which one is live.",
            tags=["rollback", "read-only"],
        ),
        _deployment(
            deployment_undo,
            "deployment-undo",
            description="Undo a Deployment to its previous, a chosen or the last known good revision.",
            tags=["rollback"],
        ),
        _deployment(
            last_known_good,
            "last-known-good",
            description="The newest Deployment revision known to have rolled out (optionally with verified images).",
            tags=["rollback", "read-only"],
        ),
        _deployment(
            helm_rollback,
            "helm-rollback",
            description="Roll a Helm release back to its previous good revision (or a chosen one), then verify.",
            tags=["rollback", "helm"],
        ),
        _deployment(
            atomic_upgrade,
            "helm-atomic-upgrade",
            description="Upgrade a Helm release; on failure helm rolls back and the run says why.",
            tags=["deploy", "helm"],
        ),
        _deployment(
            rollback_rehearsal,
            "rollback-rehearsal",
            description="Drill: deploy v1, upgrade to v2, roll back, verify, in a scratch namespace.",
            tags=["drill", "helm"],
        ),
    ]


def _deployment(flow: Flow[..., Any], name: str, **kwargs: Any) -> RunnerDeployment:
    """`to_deployment` with rollbook's defaults; called from sync code, so the result is never a coroutine."""
    deployment = flow.to_deployment(name, entrypoint_type=EntrypointType.MODULE_PATH, **kwargs)
    assert isinstance(deployment, RunnerDeployment)
    return deployment
