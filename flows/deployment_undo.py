"""Undo a Deployment's rollout: `kubectl rollout undo [--to-revision=N]`, with plan, approval, audit and a wait.

The rollback itself follows kubectl's rules exactly (see `rollbook.revisions`):
- the target is the ReplicaSet with the requested revision, or the second newest revision by default;
- a paused Deployment is refused, as kubectl refuses it (resume it first); it stays paused and unchanged;
- if the live template already equals the target's, nothing is written ("skipped rollback");
- the target's pod template is restored without its `pod-template-hash` label, and the Deployment's metadata
  annotations become the ReplicaSet's, except the revision/replica bookkeeping ones kept from the Deployment.
rollbook then adds its audit annotations and the record of what it restored (metadata only, so they start no
rollout of their own), waits for the rollout like `kubectl rollout status`, and fails with the new pods' reasons
if it does not complete.

Unlike kubectl, it never undoes its own undo by accident (`rollbook.rollback_guard`): a re-run of the same
request after a failure mid-wait or a killed worker finds its rollback applied and finishes the wait, and any
other undo without an explicit revision right after a rollbook rollback is refused, naming `to_revision`.

With `schema_guard` it never rolls back onto code that cannot read the database's schema (`flows._schema_gate`):
a target whose `rollbook.dev/schema-compatible` range excludes the current schema is refused, naming the newest
compatible revision (`last_known_good` skips incompatible ones) or rolling forward; `override_schema_guard`
goes ahead through approval and is recorded in the audit annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field, model_validator

from blocks import KubernetesCluster
from flows._deployment_target import DeploymentTarget
from flows._image_verification import ImageVerification, image_verifier
from flows._schema_gate import (
    NO_GUARD,
    GateDecision,
    SchemaGate,
    SchemaGuardFields,
    compatible_revision_hint,
    decide,
    open_gate,
)
from flows.last_known_good import pick_last_known_good
from rollbook import revisions, rollback_guard
from rollbook.artifacts import artifact_key
from rollbook.change import (
    ANNOTATION_PREFIX,
    ChangeControls,
    Outcome,
    change_annotations,
    not_approved_state,
    request_approval,
)
from rollbook.form_rules import given, not_both, requires
from rollbook.reports.undo import UndoPlan, UndoResult, plan_markdown, result_markdown, rollout_failed_markdown
from rollbook.revisions import JSON
from rollbook.types import FormOptional, Revision
from tasks.cluster import resolve_cluster
from tasks.kube import (
    mark_rollout_complete,
    patch_deployment_rollback,
    pod_problems,
    read_deployment_and_replica_sets,
)
from tasks.kube import wait_for_rollout as wait_for_rollout_task

__all__ = ["RolloutFailed", "UndoRequest", "UndoResult", "deployment_undo", "undo_plan"]


class RolloutFailed(RuntimeError):
    """The rollback was applied but its rollout did not complete; the message names the pods' reasons."""


class UndoRequest(DeploymentTarget, SchemaGuardFields, ImageVerification):
    """What to roll back and to where; the default is the previous revision, as `kubectl rollout undo`."""

    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        not_both(
            given("to_revision", not_null=True),
            given("last_known_good"),
            "give to_revision or last_known_good, not both",
        ),
        requires(given("verify_images"), given("last_known_good"), "verify_images applies to last_known_good only"),
    )

    to_revision: FormOptional[Revision] = Field(
        default=None,
        description="Revision to restore (a whole number; true/false or text are refused); empty: the previous one.",
    )
    last_known_good: bool = Field(
        default=False, description="Restore the newest revision known to have rolled out completely."
    )
    wait_timeout_seconds: FormOptional[int] = Field(
        default=None,
        ge=1,
        le=6 * 3600,
        description="How long to wait for the rollout; default: the Deployment's progressDeadlineSeconds + 30.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.to_revision is not None and self.last_known_good:
            raise ValueError("give to_revision or last_known_good, not both")
        if self.verify_images and not self.last_known_good:
            raise ValueError("verify_images applies to last_known_good only")
        return self


@dataclass(frozen=True)
class _Target:
    """The Deployment this run acts on, resolved once."""

    cluster: KubernetesCluster
    namespace: str
    name: str

    @property
    def artifact_key(self) -> str:
        return artifact_key("deployment-undo", self.namespace, self.name)


def undo_plan(deployment: JSON, target: JSON) -> UndoPlan:
    """What the rollback would change, computed from a Deployment and the target ReplicaSet (pure)."""
    current_template = (deployment.get("spec") or {}).get("template") or {}
    target_template = revisions.template_without_hash((target.get("spec") or {}).get("template") or {})
    current_annotations = revisions.annotations_of(deployment)
    new_annotations = revisions.rollback_annotations(deployment, target)
    new_annotations.pop(revisions.ROLLOUT_COMPLETE_ANNOTATION, None)  # belongs to the ReplicaSet, not copied
    return UndoPlan(
        namespace=str(revisions.meta(deployment).get("namespace")),
        deployment=str(revisions.meta(deployment).get("name")),
        resource_version=str(revisions.meta(deployment).get("resourceVersion") or ""),
        paused=bool((deployment.get("spec") or {}).get("paused")),
        from_revision=revisions.revision_of(deployment),
        to_revision=revisions.revision_of(target),
        target_replica_set=str(revisions.meta(target).get("name")),
        target_uid=str(revisions.meta(target).get("uid") or ""),
        skip=revisions.equal_ignore_hash(target_template, current_template),
        current_images=revisions.template_images(current_template),
        target_images=revisions.template_images(target_template),
        template_changes=revisions.template_diff(current_template, target_template),
        annotations_removed=sorted(
            k for k in current_annotations if k not in new_annotations and not k.startswith(ANNOTATION_PREFIX)
        ),
        annotations_set={
            k: v
            for k, v in new_annotations.items()
            if current_annotations.get(k) != v and not k.startswith(ANNOTATION_PREFIX)
        },
        target_template=target_template,
        new_annotations=new_annotations,
    )


def _fingerprint(request: UndoRequest, namespace: str) -> str:
    """Same target chosen the same way: the same request, whoever runs it (see rollback_guard)."""
    fields = request.model_dump(include={"deployment", "to_revision", "last_known_good", "verify_images"})
    return rollback_guard.request_fingerprint({**fields, "namespace": namespace})


def _choose_target(
    request: UndoRequest, deployment: JSON, replica_sets: list[JSON], gate: SchemaGate | None
) -> tuple[JSON, list[Any]]:
    if request.last_known_good:
        return pick_last_known_good(deployment, replica_sets, verify=image_verifier(request), schema=gate)
    return revisions.rollback_target(deployment, replica_sets, request.to_revision), []


def _schema_decision(
    gate: SchemaGate | None, plan: UndoPlan, deployment: JSON, replica_sets: list[JSON]
) -> GateDecision:
    """The guard's verdict on the target revision; SchemaGuardRefused (nothing changed) when it must not go."""
    if gate is None:
        return NO_GUARD
    verdict = gate.judge_template(plan.target_template)
    what = f"to roll deployment {plan.deployment!r} back to revision {plan.to_revision}"
    alternative = "" if verdict.allowed else compatible_revision_hint(gate, deployment, replica_sets, plan.to_revision)
    return decide(gate, verdict, what=what, alternative=alternative)


def _refuse_if_paused(plan: UndoPlan) -> None:
    if plan.paused:
        raise revisions.RollbackRefused(
            f"deployment {plan.deployment!r} in namespace {plan.namespace!r} is paused; like kubectl, rollbook "
            "does not roll back a paused deployment (resume it with 'kubectl rollout resume' first). Nothing changed."
        )


def _publish(result: UndoResult, plan: UndoPlan, where: _Target) -> UndoResult:
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(result_markdown(result, plan), key=where.artifact_key)
    return result


@flow(name="deployment-undo")
def deployment_undo(request: UndoRequest, controls: ChangeControls) -> UndoResult | State[UndoResult]:
    """Roll a Deployment back to its previous (or a chosen, or the last known good) revision and wait for it."""
    cluster: KubernetesCluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    where = _Target(cluster, request.namespace or cluster.namespace, request.deployment)
    fingerprint = _fingerprint(request, where.namespace)

    deployment, replica_sets = read_deployment_and_replica_sets(cluster, where.namespace, where.name)
    rerun = rollback_guard.rerun_verdict(
        deployment, replica_sets, to_revision=request.to_revision, fingerprint=fingerprint
    )
    if rerun.verdict == "refuse":
        raise revisions.RollbackRefused(rerun.message)
    if rerun.verdict == "already-applied":
        return _finish_applied(where, request, controls, deployment, replica_sets, rerun)

    gate = open_gate(request)
    target, candidates = _choose_target(request, deployment, replica_sets, gate)
    plan = undo_plan(deployment, target)
    _refuse_if_paused(plan)
    if plan.skip:
        summary = f"skipped rollback: the current template already matches revision {plan.to_revision}"
        return _publish(
            UndoResult.from_plan(plan, outcome="unchanged", summary=summary, candidates=candidates), plan, where
        )
    schema = _schema_decision(gate, plan, deployment, replica_sets)
    plan = plan.model_copy(update={"schema_guard": schema.line()})
    controls = schema.controls(controls)  # an override always asks for approval
    if "kubectl.kubernetes.io/last-applied-configuration" in revisions.annotations_of(deployment):
        # kubectl warns likewise: the next `kubectl apply` of the old manifest undoes this rollback
        get_run_logger().warning(
            "deployment %r is managed by kubectl apply; the next apply will undo this rollback", where.name
        )
    if controls.plan:
        summary = f"plan only: would roll back to revision {plan.to_revision}; nothing changed"
        return _publish(
            UndoResult.from_plan(plan, outcome="planned", summary=summary, candidates=candidates), plan, where
        )

    decision = request_approval(controls, plan_markdown(plan, "Approve this rollback?"))
    if not decision.approved:
        summary = f"not approved: nothing changed ({decision.comment})"
        refused = UndoResult.from_plan(plan, outcome="not-approved", summary=summary)
        return not_approved_state(_publish(refused, plan, where), decision)
    if controls.require_approval:
        plan = _still_the_approved_plan(where, request, plan, gate)

    _apply(where, plan, controls, fingerprint, schema)
    result = _wait_and_mark(where, request, plan, deployment, outcome="changed", approval=decision.comment)
    return _publish(result.model_copy(update={"candidates": candidates}), plan, where)


def _still_the_approved_plan(
    where: _Target, request: UndoRequest, approved: UndoPlan, gate: SchemaGate | None
) -> UndoPlan:
    """The approver saw a plan that may be old by now: re-read and insist that it still holds."""
    deployment, replica_sets = read_deployment_and_replica_sets(where.cluster, where.namespace, where.name)
    target, _ = _choose_target(request, deployment, replica_sets, gate)
    fresh = undo_plan(deployment, target).model_copy(update={"schema_guard": approved.schema_guard})
    _refuse_if_paused(fresh)
    if (fresh.target_template, fresh.template_changes) != (approved.target_template, approved.template_changes):
        raise revisions.RollbackRefused(
            f"deployment {where.name!r} in namespace {where.namespace!r} changed while waiting for approval; "
            "nothing changed"
        )
    return fresh


def _apply(
    where: _Target, plan: UndoPlan, controls: ChangeControls, fingerprint: str, schema: GateDecision = NO_GUARD
) -> None:
    """One JSON patch: the target template, kubectl's annotations, rollbook's audit (with the schema guard's
    verdict, an override included) and its rollback record."""
    record = rollback_guard.record_details(
        from_revision=plan.from_revision,
        to_revision=plan.to_revision,
        target_template=plan.target_template,
        fingerprint=fingerprint,
    )
    audit = change_annotations(controls, "rollback", **record, **schema.details())
    run_marker = (ANNOTATION_PREFIX + "flow-run-id", str(flow_run.id or ""))
    patch_deployment_rollback(
        where.cluster,
        where.namespace,
        where.name,
        plan.target_template,
        {**plan.new_annotations, **audit},
        plan.resource_version,
        run_marker,
    )
    get_run_logger().info("deployment %r: restored revision %s, waiting for the rollout", where.name, plan.to_revision)


def _finish_applied(
    where: _Target,
    request: UndoRequest,
    controls: ChangeControls,
    deployment: JSON,
    replica_sets: list[JSON],
    rerun: rollback_guard.RerunDecision,
) -> UndoResult:
    """This rollback is already applied (a re-run after a failure or a killed worker): change nothing, finish
    the job it started (wait for its rollout, record completion) and say which run applied it."""
    assert rerun.record is not None  # an already-applied verdict always carries its record
    live = revisions.live_replica_set(deployment, replica_sets) or {
        "metadata": {"name": "<not created yet>"},
        "spec": {"template": (deployment.get("spec") or {}).get("template") or {}},
    }
    plan = undo_plan(deployment, live).model_copy(
        update={"from_revision": rerun.record.from_revision, "to_revision": rerun.record.to_revision}
    )
    if controls.plan:
        summary = f"plan only: {rerun.message}; nothing to change"
        return _publish(
            UndoResult.from_plan(plan, outcome="planned", summary=summary, applied_by=rerun.record.by), plan, where
        )
    get_run_logger().info("%s: not rolling back again, finishing its wait", rerun.message)
    result = _wait_and_mark(where, request, plan, deployment, outcome="unchanged", prefix=rerun.message)
    return _publish(result.model_copy(update={"applied_by": rerun.record.by}), plan, where)


def _wait_and_mark(
    where: _Target,
    request: UndoRequest,
    plan: UndoPlan,
    deployment: JSON,
    *,
    outcome: Outcome,
    prefix: str = "",
    approval: str | None = None,
) -> UndoResult:
    """Wait for the rollout; once complete, record it on the restored ReplicaSet (last-known-good evidence).
    A rollout that fails or times out raises RolloutFailed with the new pods' reasons."""
    wait_seconds = request.wait_timeout_seconds or revisions.default_wait_seconds(deployment)
    waiter = wait_for_rollout_task.with_options(timeout_seconds=wait_seconds + 60)
    status = waiter(where.cluster, where.namespace, where.name, float(wait_seconds))
    if not status["done"]:
        _fail_with_pod_reasons(where, plan, status, wait_seconds)
    if plan.target_uid:
        marked = mark_rollout_complete(
            where.cluster, where.namespace, plan.target_replica_set, plan.target_uid, return_state=True
        )
        if marked.is_failed():  # only evidence for later last-known-good choices: the rollback itself succeeded
            get_run_logger().warning(
                "could not record rollout completion on %s: %s", plan.target_replica_set, marked.message
            )
    done = f"rolled back to revision {plan.to_revision}, rolled out in {status['seconds']}s"
    summary = f"{prefix}; {done}" if prefix else done
    return UndoResult.from_plan(
        plan, outcome=outcome, summary=summary, approval=approval, rollout=status, revision_after=status["revision"]
    )


def _fail_with_pod_reasons(where: _Target, plan: UndoPlan, status: dict[str, Any], wait_seconds: int) -> None:
    after, after_sets = read_deployment_and_replica_sets(where.cluster, where.namespace, where.name)
    live = revisions.live_replica_set(after, after_sets)
    owners = [revisions.meta(live)["uid"]] if live is not None else []
    selector = revisions.label_selector_string((after.get("spec") or {}).get("selector"))
    problems = pod_problems(where.cluster, where.namespace, selector, owners) if owners else {}
    reasons = sorted({p for pod in problems.values() for p in pod})
    why = "exceeded its progress deadline" if status["failed"] else f"did not complete within {wait_seconds}s"
    message = (
        f"rollback of deployment {where.name!r} in namespace {where.namespace!r} to revision {plan.to_revision} was "
        f"applied but its rollout {why} ({status['message']}); pod problems: {'; '.join(reasons) or 'none reported'}"
    )
    create_markdown_artifact(rollout_failed_markdown(plan, message, problems), key=where.artifact_key)
    raise RolloutFailed(message)
