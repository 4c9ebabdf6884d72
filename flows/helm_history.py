"""Helm release history (read-only), beside rollout-history: every stored revision with its status, chart,
app version and description, which one is deployed, and the evidence when an interrupted helm left the
release pending (what `helm-rollback` with `recover_pending` would clear)."""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows._helm_target import HelmReleaseTarget
from rollbook.artifacts import artifact_key
from rollbook.helm_recovery import stuck_release
from rollbook.helm_results import HelmHistoryResult
from rollbook.reports.helm import history_report
from tasks.cluster import resolve_cluster
from tasks.helm_release import release_history


class HelmHistoryRequest(HelmReleaseTarget):
    """Which release (the target's `timeout_seconds` is unused: nothing waits)."""


@flow(name="helm-history")
def helm_history(request: HelmHistoryRequest) -> HelmHistoryResult:
    """Read the release's history (`helm history`) and publish it as a table and a report; changes nothing."""
    ns, name = request.namespace, request.release
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    revisions = release_history(cluster, ns, name, request.helm_executable)
    deployed = [r.revision for r in revisions if r.status == "deployed"]
    result = HelmHistoryResult(
        release=name,
        namespace=ns,
        revisions=revisions,
        deployed=deployed[-1] if deployed else None,
        stuck=stuck_release(revisions, release=name, namespace=ns),
        read_at=dt.datetime.now(dt.UTC),
    )
    key = artifact_key("helm-history", ns, name)
    rows = [
        {**r.model_dump(mode="json", exclude={"rollback_revision"}), "deployed": r.revision == result.deployed}
        for r in revisions
    ]
    create_table_artifact(rows, key=f"{key}-table", description=f"helm history of {name!r} in {ns!r}")
    create_markdown_artifact(history_report(result), key=key, description=f"helm history of {name!r} in {ns!r}")
    if result.stuck:
        get_run_logger().warning(result.stuck.evidence(result.read_at))
    get_run_logger().info("release %r has %d revision(s); deployed: %s", name, len(revisions), result.deployed)
    return result
