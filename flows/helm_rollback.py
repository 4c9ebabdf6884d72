"""Runbook: roll a Helm release back to its previous good revision (or a chosen one), wait, verify, audit."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows._helm_target import HelmReleaseTarget
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, request_approval
from rollbook.helm_releases import (
    RevisionInfo,
    RollbackRefused,
    changes_markdown,
    choose_rollback_target,
    history_table,
    image_changes,
    latest,
    values_changes,
)
from tasks.cluster import resolve_cluster
from tasks.helm import (
    HelmError,
    HelmOperationFailed,
    annotate_release_deployments,
    release_history,
    release_pods_ready,
    release_status,
    revision_details,
    rollback_release,
)

ACTION = "helm-rollback"


class HelmRollbackRequest(HelmReleaseTarget):
    """Which release to roll back, and to what."""

    revision: int | None = Field(
        default=None,
        ge=1,
        description="Revision to roll back to; empty: the newest deployed/superseded revision before the live one.",
    )
    settle_seconds: int = Field(
        default=30, ge=0, le=120, description="After helm's wait, how long to give pods to report Ready."
    )


class RollbackNotHealthy(RuntimeError):
    """The rollback ran but the release is not deployed with all pods Ready."""


@flow(name="helm-rollback")
def helm_rollback(request: HelmRollbackRequest, controls: ChangeControls) -> dict[str, Any]:
    """Show the history, pick the previous good revision, roll back with --wait, verify status and pods, audit."""
    log = get_run_logger()
    ns, name, helm = request.namespace, request.release, request.helm_executable
    key = artifact_key(ACTION, ns, name)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)

    history = release_history(cluster, ns, name, helm)
    log.info("history of %s in %s:\n%s", name, ns, history_table(history))
    live = latest(history)
    try:
        target = choose_rollback_target(history, request.revision)
    except RollbackRefused as exc:
        raise RollbackRefused(f"release {name!r} in namespace {ns!r}: {exc}; nothing was changed") from None

    live_details = revision_details(cluster, ns, name, live.revision, helm)
    target_details = revision_details(cluster, ns, name, target.revision, helm)
    value_diff = values_changes(live_details.values, target_details.values)
    image_diff = image_changes(live_details.manifest, target_details.manifest)
    plan_md = _plan_markdown(request, controls, history, live, target, live_details.chart, target_details.chart)
    plan_md += "\n\n" + changes_markdown(value_diff, image_diff)
    result: dict[str, Any] = {
        "release": name,
        "namespace": ns,
        "from_revision": live.revision,
        "to_revision": target.revision,
        "from_chart": live_details.chart,
        "to_chart": target_details.chart,
        "value_changes": [c.model_dump(mode="json") for c in value_diff],
        "image_changes": [c.model_dump(mode="json") for c in image_diff],
        "changed": False,
    }

    if controls.plan:
        create_markdown_artifact("# Plan (nothing changed)\n\n" + plan_md, key=key, description="helm rollback plan")
        log.info("plan only: would roll back %s from %d to %d; nothing changed", name, live.revision, target.revision)
        return {**result, "planned": True}

    decision = request_approval(controls, plan_md)
    if not decision.approved:
        create_markdown_artifact(
            f"# Not approved: nothing changed\n\n_{decision.comment or 'no comment'}_\n\n" + plan_md,
            key=key,
            description="helm rollback not approved",
        )
        log.warning("rollback of %s not approved (%s): nothing changed", name, decision.comment)
        return {**result, "approved": False, "comment": decision.comment}

    try:
        after = rollback_release(cluster, ns, name, target.revision, live.revision, request.timeout_seconds, helm)
    except HelmError as exc:
        create_markdown_artifact(f"# Rollback FAILED\n\n```\n{exc}\n```\n\n" + plan_md, key=key)
        if isinstance(exc, HelmOperationFailed):  # helm applied the old manifests, then its wait failed
            failed = change_annotations(
                controls,
                ACTION,
                **{"rolled-back-to-revision": str(target.revision), "release": name, "rollback-result": "failed"},
            )
            annotate_release_deployments(cluster, ns, name, failed, return_state=True)  # best effort
        raise
    annotations = change_annotations(
        controls, ACTION, **{"rolled-back-to-revision": str(target.revision), "release": name}
    )
    annotated = annotate_release_deployments(cluster, ns, name, annotations)
    status = release_status(cluster, ns, name, helm)
    pods = release_pods_ready(cluster, ns, name, request.settle_seconds)
    healthy = status.status == "deployed" and status.revision == after.revision and pods.all_ready
    result.update(
        changed=True,
        approved=True,
        new_revision=after.revision,
        status=status.status,
        pods_ready=pods.all_ready,
        pod_problems=pods.problems,
        annotated_deployments=annotated,
        live_images={f"{w.kind}/{w.name}": w.images for w in pods.workloads},
    )
    create_markdown_artifact(
        _summary_markdown(result, annotations, healthy) + "\n\n## Plan that was approved\n\n" + plan_md,
        key=key,
        description="helm rollback result",
    )
    if not healthy:
        raise RollbackNotHealthy(
            f"release {name!r} in namespace {ns!r} rolled back to revision {target.revision} as revision "
            f"{after.revision}, but status is {status.status} (revision {status.revision}) and pods: "
            f"{'; '.join(pods.problems) or 'all Ready'}"
        )
    log.info(
        "rolled back %s in %s to revision %d (now revision %d, all pods Ready)",
        name,
        ns,
        target.revision,
        after.revision,
    )
    return result


def _plan_markdown(
    request: HelmRollbackRequest,
    controls: ChangeControls,
    history: list[RevisionInfo],
    live: RevisionInfo,
    target: RevisionInfo,
    live_chart: str,
    target_chart: str,
) -> str:
    how = "requested" if request.revision is not None else "previous good revision (failed/pending ones skipped)"
    return "\n".join(
        [
            f"## Roll back `{request.release}` in `{request.namespace}`",
            "",
            f"- from live revision **{live.revision}** ({live.status}, chart `{live_chart}`)",
            f"- to revision **{target.revision}** ({target.status}, chart `{target_chart}`), {how}",
            f"- helm rollback with `--wait`, timeout {request.timeout_seconds}s",
            f"- requested by **{controls.requested_by}**: {controls.reason}",
            "",
            "### History",
            "",
            history_table(history),
        ]
    )


def _summary_markdown(result: dict[str, Any], annotations: dict[str, str], healthy: bool) -> str:
    lines = [
        f"# Rollback {'succeeded' if healthy else 'NOT HEALTHY'}: `{result['release']}` in `{result['namespace']}`",
        "",
        f"- revision {result['from_revision']} → {result['to_revision']} (new revision {result['new_revision']}, "
        f"status **{result['status']}**)",
        f"- pods Ready: **{result['pods_ready']}**"
        + (f" ({'; '.join(result['pod_problems'])})" if result["pod_problems"] else ""),
        f"- annotated Deployments: {', '.join(result['annotated_deployments']) or 'none'}",
        "",
        "| annotation | value |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in sorted(annotations.items())),
    ]
    return "\n".join(lines)
