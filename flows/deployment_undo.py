"""Undo a Deployment's rollout: `kubectl rollout undo [--to-revision=N]`, with plan, approval, audit and a wait.

The rollback itself follows kubectl's rules exactly (see `rollbook.revisions`):
- the target is the ReplicaSet with the requested revision, or the second newest revision by default;
- a paused Deployment is refused, as kubectl refuses it (resume it first); it stays paused and unchanged;
- if the live template already equals the target's, nothing is written ("skipped rollback");
- the target's pod template is restored without its `pod-template-hash` label, and the Deployment's metadata
  annotations become the ReplicaSet's, except the revision/replica bookkeeping ones kept from the Deployment.
rollbook then adds its audit annotations (metadata only, so they start no rollout of their own), waits for
the rollout like `kubectl rollout status`, and fails with the new pods' reasons if it does not complete.
"""

from __future__ import annotations

from typing import Any, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import Field, model_validator

from blocks import KubernetesCluster
from flows._deployment_target import DeploymentTarget
from flows.last_known_good import pick_last_known_good
from rollbook import revisions
from rollbook.artifacts import artifact_key
from rollbook.change import ANNOTATION_PREFIX, ChangeControls, change_annotations, request_approval
from rollbook.revisions import JSON
from tasks.cluster import resolve_cluster
from tasks.kube import (
    mark_rollout_complete,
    patch_deployment_rollback,
    pod_problems,
    read_deployment_and_replica_sets,
)
from tasks.kube import wait_for_rollout as wait_for_rollout_task


class RolloutFailed(RuntimeError):
    """The rollback was applied but its rollout did not complete; the message names the pods' reasons."""


class UndoRequest(DeploymentTarget):
    """What to roll back and to where; the default is the previous revision, as `kubectl rollout undo`."""

    to_revision: int | None = Field(
        default=None, ge=1, description="Revision to restore; empty means the previous revision."
    )
    last_known_good: bool = Field(
        default=False, description="Restore the newest revision known to have rolled out completely."
    )
    verify_images: bool = Field(
        default=False, description="With last_known_good: also require the revision's images to verify (cosign)."
    )
    cosign_public_key: str | None = Field(default=None, description="Path of the cosign public key (verify_images).")
    wait_timeout_seconds: int | None = Field(
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
        if self.verify_images and not self.cosign_public_key:
            raise ValueError("verify_images needs cosign_public_key")
        return self


def undo_plan(deployment: JSON, target: JSON) -> dict[str, Any]:
    """What the rollback would change, computed from a Deployment and the target ReplicaSet (pure)."""
    current_template = (deployment.get("spec") or {}).get("template") or {}
    target_template = revisions.template_without_hash((target.get("spec") or {}).get("template") or {})
    current_annotations = revisions.annotations_of(deployment)
    new_annotations = revisions.rollback_annotations(deployment, target)
    new_annotations.pop(revisions.ROLLOUT_COMPLETE_ANNOTATION, None)  # belongs to the ReplicaSet, not copied
    return {
        "namespace": revisions.meta(deployment).get("namespace"),
        "deployment": revisions.meta(deployment).get("name"),
        "resource_version": revisions.meta(deployment).get("resourceVersion"),
        "paused": bool((deployment.get("spec") or {}).get("paused")),
        "from_revision": revisions.revision_of(deployment),
        "to_revision": revisions.revision_of(target),
        "target_replica_set": revisions.meta(target).get("name"),
        "skip": revisions.equal_ignore_hash(target_template, current_template),
        "current_images": revisions.template_images(current_template),
        "target_images": revisions.template_images(target_template),
        "template_changes": revisions.template_diff(current_template, target_template),
        "annotations_removed": sorted(
            k for k in current_annotations if k not in new_annotations and not k.startswith(ANNOTATION_PREFIX)
        ),
        "annotations_set": {
            k: v
            for k, v in new_annotations.items()
            if current_annotations.get(k) != v and not k.startswith(ANNOTATION_PREFIX)
        },
        "target_template": target_template,
        "new_annotations": new_annotations,
    }


def plan_markdown(plan: dict[str, Any], heading: str) -> str:
    lines = [
        f"### {heading}",
        "",
        f"Deployment `{plan['namespace']}/{plan['deployment']}`: revision {plan['from_revision']} → "
        f"revision {plan['to_revision']} (ReplicaSet `{plan['target_replica_set']}`)",
        "",
        f"- images: `{', '.join(plan['current_images'])}` → `{', '.join(plan['target_images'])}`",
    ]
    if plan["template_changes"]:
        lines += ["", "| template field | current | target |", "|---|---|---|"]
        for change in plan["template_changes"]:
            lines.append(f"| `{change['path']}` | `{change['current']}` | `{change['target']}` |")
    if plan["annotations_set"] or plan["annotations_removed"]:
        lines += ["", "Deployment annotations (as kubectl copies them from the ReplicaSet):"]
        lines += [f"- set `{k}` = `{v}`" for k, v in sorted(plan["annotations_set"].items())]
        lines += [f"- remove `{k}`" for k in plan["annotations_removed"]]
    return "\n".join(lines) + "\n"


def _public(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plan.items() if k not in ("target_template", "new_annotations", "resource_version")}


def _choose_target(request: UndoRequest, deployment: JSON, replica_sets: list[JSON]) -> tuple[JSON, list[Any]]:
    if request.last_known_good:
        return pick_last_known_good(deployment, replica_sets, request.verify_images, request.cosign_public_key)
    return revisions.rollback_target(deployment, replica_sets, request.to_revision), []


def _refuse_if_paused(plan: dict[str, Any]) -> None:
    if plan["paused"]:
        raise revisions.RollbackRefused(
            f"deployment {plan['deployment']!r} in namespace {plan['namespace']!r} is paused; like kubectl, rollbook "
            "does not roll back a paused deployment (resume it with 'kubectl rollout resume' first). Nothing changed."
        )


@flow(name="deployment-undo")
def deployment_undo(request: UndoRequest, controls: ChangeControls) -> dict[str, Any]:
    """Roll a Deployment back to its previous (or a chosen, or the last known good) revision and wait for it."""
    log = get_run_logger()
    cluster: KubernetesCluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    name = request.deployment
    key = artifact_key("deployment-undo", namespace, name)

    deployment, replica_sets = read_deployment_and_replica_sets(cluster, namespace, name)
    target, candidates = _choose_target(request, deployment, replica_sets)
    plan = undo_plan(deployment, target)
    _refuse_if_paused(plan)
    result: dict[str, Any] = {**_public(plan), "changed": False, "candidates": candidates}
    if plan["skip"]:
        result["outcome"] = f"skipped rollback (current template already matches revision {plan['to_revision']})"
        log.info("%s", result["outcome"])
        create_markdown_artifact(f"### Undo `{namespace}/{name}`: nothing to do\n\n{result['outcome']}\n", key=key)
        return result
    if "kubectl.kubernetes.io/last-applied-configuration" in revisions.annotations_of(deployment):
        # kubectl warns likewise: the next `kubectl apply` of the old manifest undoes this rollback
        log.warning("deployment %r is managed by kubectl apply; the next apply will undo this rollback", name)
    if controls.plan:
        result["outcome"] = "plan only: nothing changed"
        create_markdown_artifact(plan_markdown(plan, "Plan (nothing changed)"), key=key)
        return result

    decision = request_approval(controls, plan_markdown(plan, "Approve this rollback?"))
    if not decision.approved:
        result["outcome"] = f"not approved: nothing changed ({decision.comment})"
        create_markdown_artifact(f"### Undo `{namespace}/{name}` not approved\n\n{decision.comment}\n", key=key)
        return result
    if controls.require_approval:
        # The approver saw a plan that may be old by now: re-read and insist that it still holds.
        deployment, replica_sets = read_deployment_and_replica_sets(cluster, namespace, name)
        target, _ = _choose_target(request, deployment, replica_sets)
        fresh = undo_plan(deployment, target)
        _refuse_if_paused(fresh)
        if (fresh["target_template"], fresh["template_changes"]) != (plan["target_template"], plan["template_changes"]):
            raise revisions.RollbackRefused(
                f"deployment {name!r} in namespace {namespace!r} changed while waiting for approval; nothing changed"
            )
        plan = fresh

    audit = change_annotations(controls, "rollback", **{"rolled-back-to-revision": str(plan["to_revision"])})
    run_marker = (ANNOTATION_PREFIX + "flow-run-id", str(flow_run.id or ""))
    patch_deployment_rollback(
        cluster,
        namespace,
        name,
        plan["target_template"],
        {**plan["new_annotations"], **audit},
        plan["resource_version"],
        run_marker,
    )
    result["changed"] = True
    log.info("deployment %r: restored revision %s, waiting for the rollout", name, plan["to_revision"])

    wait_seconds = request.wait_timeout_seconds or revisions.default_wait_seconds(deployment)
    waiter = wait_for_rollout_task.with_options(timeout_seconds=wait_seconds + 60)
    status = waiter(cluster, namespace, name, float(wait_seconds))
    result["rollout"] = status
    result["revision_after"] = status["revision"]
    if status["done"]:
        # The controller rolled the target ReplicaSet's template out: record that on it (last-known-good evidence).
        marked = mark_rollout_complete(
            cluster, namespace, revisions.meta(target)["name"], revisions.meta(target)["uid"], return_state=True
        )
        if marked.is_failed():  # only evidence for later last-known-good choices: the rollback itself succeeded
            log.warning("could not record rollout completion on %s: %s", revisions.meta(target)["name"], marked.message)
        result["outcome"] = f"rolled back to revision {plan['to_revision']} and rolled out in {status['seconds']}s"
        create_markdown_artifact(plan_markdown(plan, "Rolled back") + f"\n{result['outcome']}\n", key=key)
        return result

    after, after_sets = read_deployment_and_replica_sets(cluster, namespace, name)
    live = revisions.live_replica_set(after, after_sets)
    owners = [revisions.meta(live)["uid"]] if live is not None else []
    selector = revisions.label_selector_string((after.get("spec") or {}).get("selector"))
    problems = pod_problems(cluster, namespace, selector, owners) if owners else {}
    reasons = sorted({p for pod in problems.values() for p in pod})
    result["pod_problems"] = problems
    why = "exceeded its progress deadline" if status["failed"] else f"did not complete within {wait_seconds}s"
    message = (
        f"rollback of deployment {name!r} in namespace {namespace!r} to revision {plan['to_revision']} was applied "
        f"but its rollout {why} ({status['message']}); pod problems: {'; '.join(reasons) or 'none reported'}"
    )
    pod_lines = "\n".join(f"- `{pod}`: {', '.join(p) or 'no problem reported'}" for pod, p in sorted(problems.items()))
    create_markdown_artifact(
        plan_markdown(plan, "Rollback applied, rollout FAILED") + f"\n{message}\n\n{pod_lines}\n", key=key
    )
    raise RolloutFailed(message)
