"""Runbook: upgrade a Helm release atomically (--rollback-on-failure --wait) and say what is live afterwards."""

from __future__ import annotations

import copy
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import Field, JsonValue

from flows._helm_target import HelmReleaseTarget
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, request_approval
from rollbook.helm_releases import (
    RevisionInfo,
    changes_markdown,
    deep_merge,
    history_table,
    image_changes,
    latest,
    manifest_changes,
    set_path,
    values_changes,
)
from tasks.cluster import resolve_cluster
from tasks.helm import (
    ReleaseNotFound,
    UpgradeOutcome,
    annotate_release_deployments,
    release_history,
    release_pods_ready,
    render_upgrade,
    revision_details,
    upgrade_release,
)

ACTION = "helm-atomic-upgrade"


class AtomicUpgradeRequest(HelmReleaseTarget):
    """What to upgrade the release to."""

    chart: str = Field(min_length=1, description="Chart: a directory or archive on the runner, or a chart reference.")
    values: dict[str, JsonValue] = Field(default_factory=dict, description="Values to apply (merged like -f).")
    set_values: dict[str, JsonValue] = Field(
        default_factory=dict, description='Dotted-path overrides applied last, e.g. {"image.tag": "1.1.0"}.'
    )
    image_tag: str | None = Field(
        default=None, min_length=1, max_length=128, description="Shortcut for set_values image.tag."
    )
    reuse_values: bool = Field(
        default=True,
        description="Start from the live revision's values (so setting only the tag keeps everything else).",
    )
    install: bool = Field(default=False, description="Install the release if it does not exist yet.")
    settle_seconds: int = Field(default=30, ge=0, le=120, description="After helm's wait, time for pods to be Ready.")


class UpgradeRolledBack(RuntimeError):
    """The upgrade failed and helm rolled it back; `report` says what is live and why it failed."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.report))


@flow(name="helm-atomic-upgrade")
def atomic_upgrade(request: AtomicUpgradeRequest, controls: ChangeControls) -> dict[str, Any]:
    """Dry-run the upgrade on the server, plan/approve, upgrade with automatic rollback, report the live revision."""
    log = get_run_logger()
    ns, name, helm = request.namespace, request.release, request.helm_executable
    key = artifact_key(ACTION, ns, name)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)

    try:
        history: list[RevisionInfo] = release_history(cluster, ns, name, helm)
    except ReleaseNotFound:
        if not request.install:
            raise
        history = []
    live = latest(history) if history else None
    live_details = revision_details(cluster, ns, name, live.revision, helm) if live else None

    # Deep copies: the overrides below must not leak into the live values the plan compares against.
    values: dict[str, Any] = copy.deepcopy(live_details.values) if (live_details and request.reuse_values) else {}
    values = deep_merge(values, copy.deepcopy(request.values))
    overrides = dict(request.set_values)
    if request.image_tag:
        overrides["image.tag"] = request.image_tag
    for path, value in overrides.items():
        set_path(values, path, value)

    rendered = render_upgrade(cluster, ns, name, request.chart, values, request.install, helm)
    before_manifest = live_details.manifest if live_details else []
    value_diff = values_changes(live_details.values if live_details else {}, values)
    image_diff = image_changes(before_manifest, rendered.manifest)
    plan_md = "\n".join(
        [
            f"## Upgrade `{name}` in `{ns}`",
            "",
            "- from: "
            + (f"revision **{live.revision}** ({live.status}, chart `{live.chart}`)" if live else "not installed"),
            f"- to: chart `{rendered.chart}` (app version {rendered.app_version or '-'}) from `{request.chart}`",
            f"- `--rollback-on-failure --wait --timeout {request.timeout_seconds}s`",
            f"- requested by **{controls.requested_by}**: {controls.reason}",
            "",
            changes_markdown(value_diff, image_diff, manifest_changes(before_manifest, rendered.manifest)),
        ]
    )
    if history:
        plan_md += "\n\n### History\n\n" + history_table(history)
    result: dict[str, Any] = {
        "release": name,
        "namespace": ns,
        "from_revision": live.revision if live else None,
        "to_chart": rendered.chart,
        "value_changes": [c.model_dump(mode="json") for c in value_diff],
        "image_changes": [c.model_dump(mode="json") for c in image_diff],
        "changed": False,
    }

    if controls.plan:
        create_markdown_artifact("# Plan (nothing changed)\n\n" + plan_md, key=key, description="helm upgrade plan")
        log.info("plan only: %d value change(s), %d image change(s); nothing changed", len(value_diff), len(image_diff))
        return {**result, "planned": True}

    decision = request_approval(controls, plan_md)
    if not decision.approved:
        create_markdown_artifact(
            f"# Not approved: nothing changed\n\n_{decision.comment or 'no comment'}_\n\n" + plan_md, key=key
        )
        return {**result, "approved": False, "comment": decision.comment}

    description = f"rollbook {ACTION} ({flow_run.name or flow_run.id}): {controls.reason}"[:240]
    outcome: UpgradeOutcome = upgrade_release(
        cluster,
        ns,
        name,
        request.chart,
        values,
        description,
        live.revision if live else None,
        request.install,
        request.timeout_seconds,
        helm,
    )
    result.update(
        changed=True,
        approved=True,
        succeeded=outcome.succeeded,
        live_revision=outcome.live_revision,
        live_status=outcome.live_status,
        attempted_revision=outcome.attempted_revision,
        rolled_back=outcome.rolled_back,
        helm_error=outcome.helm_error,
        failure_reasons=sorted({p.reason for p in outcome.pod_problems}),
        pod_problems=[p.model_dump(mode="json") for p in outcome.pod_problems],
        seconds=outcome.seconds,
    )
    annotations = change_annotations(
        controls,
        ACTION,
        release=name,
        **{
            "live-revision": str(outcome.live_revision),
            "upgrade-result": "succeeded" if outcome.succeeded else "rolled-back",
        },
    )
    if outcome.live_status != "absent":
        result["annotated_deployments"] = annotate_release_deployments(cluster, ns, name, annotations)
    if outcome.succeeded:
        pods = release_pods_ready(cluster, ns, name, request.settle_seconds)
        result.update(pods_ready=pods.all_ready, pod_report_problems=pods.problems)

    create_markdown_artifact(_report_markdown(result) + "\n\n## Plan\n\n" + plan_md, key=key)
    if not outcome.succeeded:
        reasons = ", ".join(result["failure_reasons"]) or "no pod waiting reason observed"
        raise UpgradeRolledBack(
            f"upgrade of release {name!r} in namespace {ns!r} failed (attempted revision "
            f"{outcome.attempted_revision}); live revision is {outcome.live_revision} ({outcome.live_status}"
            f"{', rolled back' if outcome.rolled_back else ''}). Pod reasons: {reasons}. "
            f"helm: {outcome.helm_error.splitlines()[-1] if outcome.helm_error else '-'}",
            result,
        )
    if not result.get("pods_ready", True):
        log.warning("upgrade succeeded but pods are not all Ready: %s", result["pod_report_problems"])
    log.info("upgraded %s in %s: revision %d is live", name, ns, outcome.live_revision)
    return result


def _report_markdown(result: dict[str, Any]) -> str:
    ok = result["succeeded"]
    lines = [
        f"# Upgrade {'succeeded' if ok else 'FAILED and was rolled back'}: `{result['release']}` in "
        f"`{result['namespace']}`",
        "",
        f"- live revision: **{result['live_revision']}** ({result['live_status']})",
        f"- attempted revision: {result['attempted_revision']}, took {result['seconds']}s",
    ]
    if not ok:
        lines.append(f"- why: {', '.join(result['failure_reasons']) or 'no pod waiting reason observed'}")
        lines += ["", "| pod | container | image | reason | message |", "|---|---|---|---|---|"]
        lines += [
            f"| {p['pod']} | {p['container']} | {p['image']} | {p['reason']} | {p['message']} |"
            for p in result["pod_problems"]
        ]
        lines += ["", "helm error:", "", "```", result["helm_error"], "```"]
    elif result.get("pod_report_problems"):
        lines.append(f"- pods not Ready: {'; '.join(result['pod_report_problems'])}")
    return "\n".join(lines)
