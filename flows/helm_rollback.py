"""Runbook: roll a Helm release back to its previous good revision (or a chosen one), wait, verify, audit.

A re-run finishes the job instead of reversing it: the target is resolved once and recorded on the release's
Deployments before helm runs, so a rollback already applied by rollbook is recognised ("unchanged"), and a
release an interrupted helm left pending is shown with its evidence and, when asked (`recover_pending`) and
approved, marked failed the way helm's storage allows and then rolled back.

With `schema_guard`, the target revision is judged by the `rollbook.dev/schema-compatible` annotation in its own
stored manifest (`flows._schema_gate`): a target that cannot work with the database's schema is refused, naming
the newest compatible revision or rolling forward; `override_schema_guard` asks for approval and is recorded.
"""

from __future__ import annotations

import datetime as dt

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from blocks import KubernetesCluster
from flows._helm_target import HelmReleaseTarget
from flows._schema_gate import (
    NO_GUARD,
    GateDecision,
    SchemaGate,
    SchemaGuardFields,
    audit_details,
    decide,
    open_gate,
)
from rollbook.artifacts import artifact_key
from rollbook.change import (
    ANNOTATION_PREFIX,
    ChangeControls,
    Outcome,
    change_annotations,
    not_approved_state,
    request_approval,
)
from rollbook.helm_recovery import (
    FROM_REVISION,
    RESULT,
    TO_REVISION,
    RollbackRecord,
    StuckRelease,
    applied_rollback,
    failed_rollback_target,
    recovery_target,
    refusal,
    rollback_record,
    stuck_release,
    too_recent,
)
from rollbook.helm_releases import (
    GOOD_STATUSES,
    HelmRollbackRefused,
    RevisionInfo,
    choose_rollback_target,
    image_changes,
    latest,
    values_changes,
)
from rollbook.helm_results import HelmRollbackResult
from rollbook.reports.helm import rollback_plan, rollback_summary, stuck_markdown, titled
from rollbook.types import FormOptional, Revision
from tasks.cluster import resolve_cluster
from tasks.helm_changes import rollback_release
from tasks.helm_errors import HelmError, HelmOperationFailed
from tasks.helm_release import ReleaseStatus, release_history, release_status, revision_details
from tasks.helm_storage import mark_revision_failed
from tasks.release_workloads import annotate_release_deployments, release_deployment_annotations, release_pods_ready

ACTION = "helm-rollback"


class HelmRollbackRequest(HelmReleaseTarget, SchemaGuardFields):
    """Which release to roll back, and to what."""

    revision: FormOptional[Revision] = Field(
        default=None,
        description="Revision to roll back to; empty: the newest deployed/superseded revision before the live one.",
    )
    settle_seconds: int = Field(
        default=30, ge=0, le=120, description="After helm's wait, how long to give pods to report Ready."
    )
    cleanup_on_fail: bool = Field(
        default=False,
        description="helm --cleanup-on-fail: when applying the rollback fails, delete the objects it had just created "
        "(helm does not clean up when only its --wait times out).",
    )
    recover_pending: bool = Field(
        default=False,
        description="If an interrupted helm left the release pending-install/-upgrade/-rollback, mark that revision "
        "failed (helm's release Secret) and roll back; without it such a release is refused with the evidence.",
    )
    pending_grace_seconds: int = Field(
        default=300, ge=0, le=86400, description="Refuse recovery while the pending revision is younger than this."
    )


class ReleaseStuck(RuntimeError):
    """The release is pending after an interrupted helm; the message shows the evidence and what to run."""


class RollbackNotHealthy(RuntimeError):
    """The rollback ran but the release is not deployed with all pods Ready."""


@flow(name="helm-rollback")
def helm_rollback(
    request: HelmRollbackRequest, controls: ChangeControls
) -> HelmRollbackResult | State[HelmRollbackResult]:
    """Read the history, recognise a rollback already applied or a stuck release, plan, approve, roll back
    with --wait, verify status and pods, and record it on the release's Deployments."""
    ns, name, helm = request.namespace, request.release, request.helm_executable
    key = artifact_key(ACTION, ns, name)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)

    history = release_history(cluster, ns, name, helm)
    record = _rollbook_record(cluster, request, history)
    live = applied_rollback(history, record, request.revision)
    if live is not None and record is not None:
        return _confirm_applied(cluster, request, controls, live, record, key=key)
    stuck = _stuck_or_refuse(request, history)
    target, how = _target(request, history, stuck, record)
    gate = open_gate(request)
    result, plan_md, schema = _plan(cluster, request, controls, history, target, stuck, how=how, gate=gate)
    controls = schema.controls(controls)  # an override always asks for approval

    if controls.plan:
        create_markdown_artifact(titled("Plan (nothing changed)", plan_md), key=key, description="helm rollback plan")
        return result.model_copy(update={"outcome": "planned", "summary": f"plan only: {result.summary}"})
    decision = request_approval(controls, plan_md)
    if not decision.approved:
        create_markdown_artifact(titled("Not approved: nothing changed", plan_md, decision.comment), key=key)
        get_run_logger().warning("rollback of %s not approved (%s): nothing changed", name, decision.comment)
        summary = f"not approved ({decision.comment}): {result.summary}; nothing changed"
        update = {"outcome": "not-approved", "summary": summary, "approval": decision.comment}
        return not_approved_state(result.model_copy(update=update), decision)

    if stuck is not None:
        note = f"marked failed by rollbook {ACTION}: interrupted {stuck.status} ({controls.reason})"
        mark_revision_failed(cluster, ns, name, stuck.revision, expected_status=stuck.status, note=note)
    after = _roll_back(cluster, request, controls, result, plan_md, key)
    result = result.model_copy(update={"approval": decision.comment, "recovered": stuck})
    return _verify(cluster, request, controls, result, after, key=key, plan_md=plan_md)


def _annotations(controls: ChangeControls, result: HelmRollbackResult, outcome: str, **extra: str) -> dict[str, str]:
    details = {
        TO_REVISION: str(result.to_revision),
        FROM_REVISION: str(result.from_revision),
        RESULT: outcome,
        "release": result.release,
        **audit_details(result.schema_guard),
        **extra,
    }
    return change_annotations(controls, ACTION, **{k.removeprefix(ANNOTATION_PREFIX): v for k, v in details.items()})


def _rollbook_record(
    cluster: KubernetesCluster, request: HelmRollbackRequest, history: list[RevisionInfo]
) -> RollbackRecord | None:
    """rollbook's record of its last rollback of the release, read only when the live revision is a rollback
    (applied: not again; failed: finish it), the two cases in which a re-run must not pick "previous"."""
    if latest(history).rollback_revision is None:
        return None
    annotations = release_deployment_annotations(cluster, request.namespace, request.release)
    return next((r for a in annotations.values() if (r := rollback_record(a, release=request.release))), None)


def _confirm_applied(
    cluster: KubernetesCluster,
    request: HelmRollbackRequest,
    controls: ChangeControls,
    live: RevisionInfo,
    record: RollbackRecord,
    *,
    key: str,
) -> HelmRollbackResult:
    """A re-run after the rollback was applied: verify it, complete an unfinished audit record (a run that died
    after helm), roll back nothing."""
    target = live.rollback_revision or 0
    result = HelmRollbackResult(
        outcome="unchanged",
        summary=f"revision {live.revision} is already rollbook's rollback to revision {target}; not rolling back again",
        release=request.release,
        namespace=request.namespace,
        from_revision=live.revision - 1,
        to_revision=target,
    )
    get_run_logger().info(result.summary)
    status = ReleaseStatus(
        release=request.release, namespace=request.namespace, revision=live.revision, status=live.status
    )
    audit = record.result != "succeeded" and not controls.plan
    return _verify(cluster, request, controls, result, status, key=key, annotate=audit)


def _stuck_or_refuse(request: HelmRollbackRequest, history: list[RevisionInfo]) -> StuckRelease | None:
    stuck = stuck_release(history, release=request.release, namespace=request.namespace)
    if stuck is None:
        return None
    now = dt.datetime.now(dt.UTC)
    if not request.recover_pending:
        try:
            target: int | None = recovery_target(history, stuck, request.revision).revision
        except HelmRollbackRefused:
            target = None
        raise ReleaseStuck(refusal(stuck, now, target=target))
    young = too_recent(stuck, now, grace_seconds=request.pending_grace_seconds)
    if young:
        raise ReleaseStuck(young)
    get_run_logger().warning("recovering: %s", stuck.evidence(now))
    return stuck


def _target(
    request: HelmRollbackRequest,
    history: list[RevisionInfo],
    stuck: StuckRelease | None,
    record: RollbackRecord | None,
) -> tuple[RevisionInfo, str]:
    """The revision to roll back to and, for the plan, how it was chosen."""
    try:
        if stuck is not None:
            target = recovery_target(history, stuck, request.revision)
            if request.revision is None and stuck.rollback_to is not None:
                return target, f"the target of the interrupted rollback (revision {stuck.revision})"
            return target, _how(request)
        if (unfinished := failed_rollback_target(history, record, request.revision)) is not None:
            failed = latest(history).revision
            return unfinished, f"the target of rollbook's rollback that failed as revision {failed}, finished"
        return choose_rollback_target(history, request.revision), _how(request)
    except HelmRollbackRefused as exc:
        where = f"release {request.release!r} in namespace {request.namespace!r}"
        raise HelmRollbackRefused(f"{where}: {exc}; nothing was changed") from None


def _how(request: HelmRollbackRequest) -> str:
    return "requested" if request.revision is not None else "previous good revision (failed/pending ones skipped)"


def _plan(
    cluster: KubernetesCluster,
    request: HelmRollbackRequest,
    controls: ChangeControls,
    history: list[RevisionInfo],
    target: RevisionInfo,
    stuck: StuckRelease | None,
    *,
    how: str,
    gate: SchemaGate | None = None,
) -> tuple[HelmRollbackResult, str, GateDecision]:
    """What the rollback would change (values, images, chart) as the result so far, the plan's markdown and the
    schema guard's decision on the target (SchemaGuardRefused, before anything changed, when it must not go)."""
    ns, name, helm = request.namespace, request.release, request.helm_executable
    live = latest(history)
    live_details = revision_details(cluster, ns, name, live.revision, helm)
    target_details = revision_details(cluster, ns, name, target.revision, helm)
    result = HelmRollbackResult(
        outcome="planned",
        summary=f"roll back {name} in {ns} from revision {live.revision} to {target.revision}",
        release=name,
        namespace=ns,
        from_revision=live.revision,
        to_revision=target.revision,
        from_chart=live_details.chart,
        to_chart=target_details.chart,
        value_changes=values_changes(live_details.values, target_details.values),
        image_changes=image_changes(live_details.manifest, target_details.manifest),
    )
    schema = NO_GUARD
    if gate is not None:
        verdict = gate.judge_manifest(target_details.manifest)
        alternative = "" if verdict.allowed else _newest_compatible(cluster, request, history, target, gate)
        what = f"to roll release {name!r} in namespace {ns!r} back to revision {target.revision}"
        schema = decide(gate, verdict, what=what, alternative=alternative)
        result = result.model_copy(update={"schema_guard": schema.line()})
    then = f"Secret `{stuck.secret}` will be marked **failed**, as helm does when an operation fails" if stuck else ""
    note = stuck_markdown(stuck, dt.datetime.now(dt.UTC), then=then) if stuck else ""
    plan_md = rollback_plan(
        result,
        history,
        how=how,
        timeout_seconds=request.timeout_seconds,
        requested_by=controls.requested_by,
        reason=controls.reason,
        stuck_note=note,
    )
    return result, plan_md, schema


MAX_ALTERNATIVES = 10  # older revisions read (one helm call each) to name a compatible one


def _newest_compatible(
    cluster: KubernetesCluster,
    request: HelmRollbackRequest,
    history: list[RevisionInfo],
    target: RevisionInfo,
    gate: SchemaGate,
) -> str:
    """The safe alternative a refusal names: the newest good revision whose manifest declares the schema."""
    live = latest(history).revision
    older = [r for r in history if r.revision not in (live, target.revision) and r.status in GOOD_STATUSES]
    for info in sorted(older, key=lambda r: r.revision, reverse=True)[:MAX_ALTERNATIVES]:
        details = revision_details(cluster, request.namespace, request.release, info.revision, request.helm_executable)
        if gate.judge_manifest(details.manifest).verdict == "compatible":
            return f"Safe alternative: revision {info.revision} declares the current schema: revision={info.revision}."
    return (
        f"Safe alternative: roll forward (no good revision of release {request.release!r} declares the "
        f"{gate.state.kind} schema at {gate.state.shown()}): fix and upgrade to a new revision."
    )


def _roll_back(
    cluster: KubernetesCluster,
    request: HelmRollbackRequest,
    controls: ChangeControls,
    result: HelmRollbackResult,
    plan_md: str,
    key: str,
) -> ReleaseStatus:
    """Record the intent on the Deployments, then `helm rollback --wait`; a failure is recorded and raised."""
    ns, name = request.namespace, request.release
    assert result.from_revision is not None
    annotate_release_deployments(cluster, ns, name, _annotations(controls, result, "started"))
    try:
        return rollback_release(
            cluster,
            ns,
            name,
            result.to_revision,
            result.from_revision,
            timeout_seconds=request.timeout_seconds,
            cleanup_on_fail=request.cleanup_on_fail,
            helm=request.helm_executable,
        )
    except HelmError as exc:
        create_markdown_artifact(titled("Rollback FAILED", f"```\n{exc}\n```\n\n{plan_md}"), key=key)
        if isinstance(exc, HelmOperationFailed):  # helm applied the old manifests, then its wait failed
            failed = _annotations(controls, result, "failed")
            annotate_release_deployments(cluster, ns, name, failed, return_state=True)  # best effort
        raise


def _verify(
    cluster: KubernetesCluster,
    request: HelmRollbackRequest,
    controls: ChangeControls,
    result: HelmRollbackResult,
    after: ReleaseStatus,
    *,
    key: str,
    plan_md: str = "",
    annotate: bool = True,
) -> HelmRollbackResult:
    """Status deployed on the new revision and every pod Ready, recorded on the Deployments and reported."""
    ns, name = request.namespace, request.release
    done = _annotations(controls, result, "succeeded", **{"release-revision": str(after.revision)})
    annotated = annotate_release_deployments(cluster, ns, name, done) if annotate else []
    status = release_status(cluster, ns, name, request.helm_executable)
    pods = release_pods_ready(cluster, ns, name, request.settle_seconds)
    healthy = status.status == "deployed" and status.revision == after.revision and pods.all_ready
    outcome: Outcome = "unchanged" if result.outcome == "unchanged" else "changed"
    summary = (
        result.summary
        if outcome == "unchanged"
        else (
            f"rolled back {name} in {ns} from revision {result.from_revision} to {result.to_revision} "
            f"(now revision {after.revision}, {'all pods Ready' if pods.all_ready else 'pods NOT Ready'})"
        )
    )
    result = result.model_copy(
        update={
            "outcome": outcome,
            "summary": summary,
            "new_revision": after.revision,
            "status": status.status,
            "pods_ready": pods.all_ready,
            "pod_problems": pods.problems,
            "annotated_deployments": annotated,
            "live_images": {f"{w.kind}/{w.name}": w.images for w in pods.workloads},
        }
    )
    body = rollback_summary(result, done) + (f"\n\n## Plan that was approved\n\n{plan_md}" if plan_md else "")
    create_markdown_artifact(body, key=key, description="helm rollback result")
    if not healthy:
        raise RollbackNotHealthy(
            f"release {name!r} in namespace {ns!r} rolled back to revision {result.to_revision} as revision "
            f"{after.revision}, but status is {status.status} (revision {status.revision}) and pods: "
            f"{'; '.join(pods.problems) or 'all Ready'}"
        )
    get_run_logger().info(summary)
    return result
