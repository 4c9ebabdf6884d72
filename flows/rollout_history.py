"""Rollout history of a Deployment: its revisions (like `kubectl rollout history`) and one revision's template."""

from __future__ import annotations

from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import Field

from flows._deployment_target import DeploymentTarget
from rollbook import revisions
from rollbook.artifacts import artifact_key
from rollbook.types import FormOptional, Revision
from tasks.cluster import resolve_cluster
from tasks.kube import read_deployment_and_replica_sets


class HistoryRequest(DeploymentTarget):
    """Which Deployment; optionally one revision to show in full."""

    revision: FormOptional[Revision] = Field(default=None, description="Show this revision's pod template as well.")


@flow(name="rollout-history")
def rollout_history(request: HistoryRequest) -> dict[str, Any]:
    """List a Deployment's revisions (number, change-cause, images, created, live) and optionally one in detail."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    deployment, replica_sets = read_deployment_and_replica_sets(cluster, namespace, request.deployment)
    rows = revisions.history(deployment, replica_sets)
    table = [r.row() for r in rows]
    key = artifact_key("rollout-history", namespace, request.deployment)
    create_table_artifact(
        table or [{"revision": "-", "change_cause": "no rollout history found"}],
        key=key,
        description=f"Revisions of deployment {request.deployment!r} in namespace {namespace!r}",
    )
    result: dict[str, Any] = {"namespace": namespace, "deployment": request.deployment, "revisions": table}
    if request.revision is not None:
        chosen = next((r for r in rows if r.revision == request.revision), None)
        if chosen is None:
            known = ", ".join(str(r.revision) for r in rows) or "none"
            raise revisions.RevisionNotFound(
                f"revision {request.revision} not found for deployment {request.deployment!r} "
                f"in namespace {namespace!r} (revisions: {known})"
            )
        result["detail"] = {**chosen.row(), "template": chosen.template}
        create_markdown_artifact(
            f"### Revision {chosen.revision} of `{namespace}/{request.deployment}`\n\n"
            f"ReplicaSet `{chosen.replica_set}`, change-cause: {chosen.change_cause or '<none>'}\n\n"
            f"```yaml\n{yaml.safe_dump(chosen.template, sort_keys=True)}```\n",
            key=f"{key}-revision-{chosen.revision}",
        )
    get_run_logger().info("deployment %r has %d revision(s)", request.deployment, len(table))
    return result
