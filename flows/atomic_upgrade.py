"""Runbook: upgrade a Helm release atomically (--rollback-on-failure --wait) and say what is live afterwards.

A first install that never finished (the worker killed or the API server restarted mid-install leaves revision 1
`pending-install`, and helm refuses every later command on it) is cleared by a re-run of the same request: when
the request installs and that revision holds exactly this request's chart and values, the plan says so with the
evidence, and once approved the run takes the app's rollout lock, waits until a helm begun with this request's
`--timeout` has certainly given up, reads the release again and, if it is still that very revision, removes it
with `helm uninstall --wait` and installs anew (see `flows._interrupted_install`). A pending install of anything
else is refused with the command that clears it: it may belong to a helm still at work.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from blocks import KubernetesCluster
from flows._checklist_gate import ChecklistOptions, checklist_gate
from flows._helm_target import HelmReleaseTarget
from flows._interrupted_install import clear_interrupted_install, own_interrupted_install, refuse_unless_installing
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, not_approved_state, request_approval
from rollbook.helm_recovery import StuckRelease, helm_may_still_run, interrupted_install
from rollbook.helm_releases import (
    RevisionInfo,
    already_live,
    image_changes,
    latest,
    manifest_changes,
    set_path,
    values_changes,
)
from rollbook.helm_results import AtomicUpgradeResult
from rollbook.reports.helm import titled, upgrade_plan, upgrade_report
from rollbook.types import ChartRef, FormOptional, ImageTag, Values
from rollbook.values import deep_merge
from tasks.cluster import resolve_cluster
from tasks.helm_changes import UpgradeOutcome, upgrade_release
from tasks.helm_release import RevisionDetails, release_history, render_upgrade, revision_details
from tasks.release_workloads import annotate_release_deployments, release_pods_ready
from tasks.rollout_lock import rollout_lock

ACTION = "helm-atomic-upgrade"


class AtomicUpgradeRequest(HelmReleaseTarget):
    """What to upgrade the release to."""

    chart: ChartRef = Field(description="Chart: a directory or archive on the runner, or a chart reference.")
    values: Values = Field(default={}, description="Values to apply (merged like -f).")
    set_values: Values = Field(
        default={}, description='Dotted-path overrides applied last, e.g. {"image.tag": "1.1.0"}.'
    )
    image_tag: FormOptional[ImageTag] = Field(default=None, description="Shortcut for set_values image.tag.")
    reuse_values: bool = Field(
        default=True,
        description="Start from the live revision's values (so setting only the tag keeps everything else).",
    )
    install: bool = Field(default=False, description="Install the release if it does not exist yet.")
    settle_seconds: int = Field(default=30, ge=0, le=120, description="After helm's wait, time for pods to be Ready.")
    run_checklist: bool = Field(
        default=True,
        description="Run the pre-deploy checklist on the values to install first; a failed verdict stops the "
        "upgrade before anything changes.",
    )
    checklist: ChecklistOptions = Field(default=ChecklistOptions(), description="How the checklist judges it.")


class UpgradeRolledBack(RuntimeError):
    """The upgrade failed and helm rolled it back; `result` says what is live and why it failed."""

    def __init__(self, message: str, result: AtomicUpgradeResult | None = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.result))


@flow(name="helm-atomic-upgrade")
def atomic_upgrade(
    request: AtomicUpgradeRequest, controls: ChangeControls
) -> AtomicUpgradeResult | State[AtomicUpgradeResult]:
    """Dry-run the upgrade on the server, plan/approve, upgrade with automatic rollback, report the live revision."""
    ns, name = request.namespace, request.release
    key = artifact_key(ACTION, ns, name)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)

    history = _history(cluster, request)
    stuck = interrupted_install(history, release=name, namespace=ns)  # nothing was ever deployed from it
    refuse_unless_installing(stuck, install=request.install, action=ACTION)
    live = latest(history) if history and stuck is None else None
    live_details = revision_details(cluster, ns, name, live.revision, request.helm_executable) if live else None
    values = _values(request, live_details)
    verdict = checklist_gate(  # a failed verdict raises ChecklistFailed: nothing changed
        request,
        run=request.run_checklist,
        options=request.checklist,
        namespace=ns,
        release=name,
        chart=request.chart,
        values=values,
        helm=request.helm_executable,
    )
    result, plan_md = _plan(cluster, request, controls, history, live_details, values, stuck=stuck)
    result = result.model_copy(update={"checklist": verdict})

    if controls.plan:
        create_markdown_artifact(titled("Plan (nothing changed)", plan_md), key=key, description="helm upgrade plan")
        return result.model_copy(update={"outcome": "planned", "summary": f"plan only: {result.summary}"})
    if result.already_live and live is not None:
        return _already_live(cluster, request, result, live, key)
    decision = request_approval(controls, plan_md)
    if not decision.approved:
        create_markdown_artifact(titled("Not approved: nothing changed", plan_md, decision.comment), key=key)
        summary = f"not approved ({decision.comment}): {result.summary}; nothing changed"
        update = {"outcome": "not-approved", "summary": summary, "approval": decision.comment}
        return not_approved_state(result.model_copy(update=update), decision)

    description = f"rollbook {ACTION} ({flow_run.name or flow_run.id}): {controls.reason}"[:240]
    result = result.model_copy(update={"approval": decision.comment})
    with contextlib.ExitStack() as held:
        if stuck is not None:  # no other rollbook run clears or installs the release meanwhile
            held.enter_context(rollout_lock(cluster, ns, name))
            found = clear_interrupted_install(
                cluster, stuck, timeout_seconds=request.timeout_seconds, helm=request.helm_executable
            )
            if found == "finished":
                return _interrupted_finished(cluster, request, result, key)
        outcome: UpgradeOutcome = upgrade_release(
            cluster,
            ns,
            name,
            request.chart,
            values,
            description,
            live.revision if live else None,
            install=request.install,
            timeout_seconds=request.timeout_seconds,
            helm=request.helm_executable,
        )
        result = _record(cluster, request, controls, result, outcome)
    create_markdown_artifact(upgrade_report(result) + "\n\n## Plan\n\n" + plan_md, key=key)
    if not outcome.succeeded:
        raise UpgradeRolledBack(_failure_message(result), result)
    if not result.pods_ready:
        get_run_logger().warning("upgrade succeeded but pods are not all Ready: %s", result.pod_report_problems)
    get_run_logger().info(result.summary)
    return result


def _history(cluster: KubernetesCluster, request: AtomicUpgradeRequest) -> list[RevisionInfo]:
    # a first install expects the release to be missing: asked with missing_ok, that is an answer, not a failure
    history: list[RevisionInfo] = release_history(
        cluster, request.namespace, request.release, request.helm_executable, missing_ok=request.install
    )
    return history


def _values(request: AtomicUpgradeRequest, live: RevisionDetails | None) -> dict[str, Any]:
    """The values to install: the live ones (if reused), merged with the request's, then the dotted overrides.
    Deep copies, so the overrides never leak into the live values the plan compares against."""
    values: dict[str, Any] = copy.deepcopy(live.values) if (live and request.reuse_values) else {}
    values = deep_merge(values, request.values)
    overrides = dict(request.set_values)
    if request.image_tag:
        overrides["image.tag"] = request.image_tag
    for path, value in overrides.items():
        set_path(values, path, value)
    return values


def _plan(
    cluster: KubernetesCluster,
    request: AtomicUpgradeRequest,
    controls: ChangeControls,
    history: list[RevisionInfo],
    live: RevisionDetails | None,
    values: dict[str, Any],
    *,
    stuck: StuckRelease | None,
) -> tuple[AtomicUpgradeResult, str]:
    """A server-side dry run of the upgrade, compared with the live revision. An interrupted first install is
    planned as a fresh install (helm refuses even a dry-run upgrade of a pending release), once it is known to be
    this request's own."""
    ns, name = request.namespace, request.release
    rendered = render_upgrade(
        cluster, ns, name, request.chart, values, install=request.install, anew=stuck is not None,
        helm=request.helm_executable,
    )  # fmt: skip
    if stuck is not None:
        own_interrupted_install(
            cluster, stuck, install=request.install, rendered=rendered, values=values, action=ACTION,
            helm=request.helm_executable,
        )  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    shown = latest(history) if history and stuck is None else None
    before = live.manifest if live else []
    start = f"revision {live.revision}" if live else "not installed"
    same = already_live(
        shown,
        live_chart=live.chart if live else "",
        live_values=live.values if live else {},
        live_manifest=before,
        chart=rendered.chart,
        values=values,
        manifest=rendered.manifest,
    )
    summary = f"upgrade {name} in {ns} from {start} to chart {rendered.chart}"
    if same:
        summary = f"{name} in {ns}: {start} already is chart {rendered.chart} with these values; nothing to upgrade"
    result = AtomicUpgradeResult(
        outcome="planned",
        summary=summary,
        already_live=same,
        release=name,
        namespace=ns,
        from_revision=live.revision if live else None,
        to_chart=rendered.chart,
        value_changes=values_changes(live.values if live else {}, values),
        image_changes=image_changes(before, rendered.manifest),
        interrupted_install=stuck.evidence(now) if stuck else "",
    )
    plan_md = upgrade_plan(
        result,
        history,
        live=shown,
        chart_source=request.chart,
        app_version=rendered.app_version,
        timeout_seconds=request.timeout_seconds,
        requested_by=controls.requested_by,
        reason=controls.reason,
        manifest_diff=manifest_changes(before, rendered.manifest),
        interrupted=stuck,
        interrupted_wait=helm_may_still_run(stuck, now, helm_timeout_seconds=request.timeout_seconds) if stuck else 0,
        now=now,
    )
    return result, plan_md


def _interrupted_finished(
    cluster: KubernetesCluster, request: AtomicUpgradeRequest, result: AtomicUpgradeResult, key: str
) -> AtomicUpgradeResult:
    """The interrupted install's own helm completed it while the run waited: it holds this request's chart and
    values, so there is nothing left to install; it is reported as it is, and its pods checked."""
    after = release_history(cluster, request.namespace, request.release, request.helm_executable)
    summary = (
        f"{request.release} in {request.namespace}: the interrupted first install finished after all "
        "(revision 1 deployed with this request's chart and values); nothing to install"
    )
    return _already_live(cluster, request, result.model_copy(update={"summary": summary}), latest(after), key)


def _already_live(
    cluster: KubernetesCluster,
    request: AtomicUpgradeRequest,
    result: AtomicUpgradeResult,
    live: RevisionInfo,
    key: str,
) -> AtomicUpgradeResult:
    """Nothing to upgrade (e.g. a re-run after the first run's helm finished): no approval is asked, no revision
    added and no annotation rewritten, so the record still names the run that made the change; only the pods are
    checked, which a lost first run may not have done."""
    pods = release_pods_ready(cluster, request.namespace, request.release, request.settle_seconds)
    made_by = f" (made by: {live.description})" if live.description else ""
    done = result.model_copy(
        update={
            "outcome": "unchanged",
            "summary": result.summary + made_by,
            "succeeded": True,
            "live_revision": live.revision,
            "live_status": live.status,
            "pods_ready": pods.all_ready,
            "pod_report_problems": pods.problems,
        }
    )
    create_markdown_artifact(upgrade_report(done), key=key, description="helm upgrade: nothing to do")
    get_run_logger().info(done.summary)
    return done


def _record(
    cluster: KubernetesCluster,
    request: AtomicUpgradeRequest,
    controls: ChangeControls,
    result: AtomicUpgradeResult,
    outcome: UpgradeOutcome,
) -> AtomicUpgradeResult:
    """The upgrade's evidence on the result and as annotations on the release's Deployments; pods checked."""
    ns, name = request.namespace, request.release
    verdict = "succeeded" if outcome.succeeded else "rolled-back"
    annotations = change_annotations(
        controls, ACTION, release=name, **{"live-revision": str(outcome.live_revision), "upgrade-result": verdict}
    )
    annotated = annotate_release_deployments(cluster, ns, name, annotations) if outcome.live_status != "absent" else []
    pods = release_pods_ready(cluster, ns, name, request.settle_seconds) if outcome.succeeded else None
    summary = (
        f"upgraded {name} in {ns}: revision {outcome.live_revision} is live"
        if outcome.succeeded
        else f"upgrade of {name} in {ns} failed; helm rolled back, revision {outcome.live_revision} is live"
    )
    return result.model_copy(
        update={
            "outcome": "changed" if outcome.succeeded else "reverted",
            "summary": summary,
            "succeeded": outcome.succeeded,
            "live_revision": outcome.live_revision,
            "live_status": outcome.live_status,
            "attempted_revision": outcome.attempted_revision,
            "rolled_back": outcome.rolled_back,
            "helm_error": outcome.helm_error,
            "failure_reasons": sorted({p.reason for p in outcome.pod_problems}),
            "pod_problems": outcome.pod_problems,
            "seconds": outcome.seconds,
            "annotated_deployments": annotated,
            "pods_ready": pods.all_ready if pods else None,
            "pod_report_problems": pods.problems if pods else [],
        }
    )


def _failure_message(result: AtomicUpgradeResult) -> str:
    reasons = ", ".join(result.failure_reasons) or "no pod waiting reason observed"
    helm_line = result.helm_error.splitlines()[-1] if result.helm_error else "-"
    return (
        f"upgrade of release {result.release!r} in namespace {result.namespace!r} failed (attempted revision "
        f"{result.attempted_revision}); live revision is {result.live_revision} ({result.live_status}"
        f"{', rolled back' if result.rolled_back else ''}). Pod reasons: {reasons}. helm: {helm_line}"
    )
