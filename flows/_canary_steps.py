"""The canary runbook's steps once the app's lock is held: shift, analyse, ask, promote or revert.

`CanaryRun` keeps what one run knows (its evidence and progress artifact); the weight itself is always read back
from the cluster. Each method is one step of the runbook, so `canary_rollout` reads as the procedure.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import State

from blocks import KubernetesCluster
from blocks.prometheus import PrometheusConnection
from flows._canary_model import (
    AnalysisRecord,
    CanaryRequest,
    CanaryReverted,
    Evidence,
    GateAnswer,
    RolloutDecision,
)
from rollbook.change import (
    ChangeControls,
    ChangeResult,
    Decision,
    await_answer,
    change_annotations,
    not_approved_state,
    record_answer,
    request_approval,
)
from rollbook.reports.progressive import canary_report, gate_form, not_approved, titled
from tasks.helm_changes import upgrade_release
from tasks.helm_release import release_status, revision_details
from tasks.metrics.tasks import run_checks
from tasks.observers.base import Target
from tasks.observers.registry import observer_for
from tasks.progressive import uninstall_release
from tasks.release_workloads import annotate_release_deployments, release_pods_ready
from tasks.routers.registry import Router
from tasks.routers.tasks import ensure_route, read_weight, remove_route, reset_route, set_weight
from tasks.webhooks import WebhookResult, run_webhooks

ACTION = "canary-rollout"


class RolloutStopped(RuntimeError):
    """A check before any traffic moved failed (a pre-rollout webhook, pods not Ready, an acceptance check):
    nothing was changed by the traffic steps; the message says which check and why."""


R = TypeVar("R", bound=ChangeResult)


def plan_or_approval(controls: ChangeControls, plan: str, *, key: str, what: str) -> Decision | None:
    """Before any change: in plan mode publish the plan and return None; otherwise the answer of the one approval
    gate (`request_approval`: approved at once unless `controls.require_approval`), a refusal published too."""
    if controls.plan:
        create_markdown_artifact(titled("Plan (nothing changed)", plan), key=key, description=what)
        get_run_logger().info("plan only: nothing changed\n%s", plan)
        return None
    decision = request_approval(controls, plan)
    if not decision.approved:
        create_markdown_artifact(not_approved(decision.comment, plan), key=key)
    return decision


def declined(result: R, decision: Decision) -> State[R]:
    """How a run whose plan was not approved ends: its result marked not-approved, nothing changed, in the
    NotApproved state every changing flow ends in after a rejection or a timeout."""
    summary = f"not approved ({decision.comment or 'no comment'}): nothing changed"
    update = {"outcome": "not-approved", "summary": summary, "approval": decision.comment}
    if "stage" in type(result).model_fields:
        update["stage"] = "not-approved"
    return not_approved_state(result.model_copy(update=update), decision)


def ask(gate: str, description: str, *, timeout_seconds: int, on_timeout: str) -> tuple[str, GateAnswer]:
    """One traffic gate (canary's steps, blue/green's retire): pause for approve / reject / hold. No answer in
    time counts as `on_timeout` ("revert" is a rejection), so silence never pushes a rollout forward."""
    form = RolloutDecision.with_initial_data(description=description, action="hold")
    decision = await_answer(form, timeout_seconds=timeout_seconds, poll_seconds=2, plan_markdown=description)
    if decision is None:
        action = "reject" if on_timeout == "revert" else "hold"
        record_answer(f"{gate}-timed-out", f"no answer in time: {on_timeout}", approver="", approved=False)
        return action, GateAnswer(gate=gate, action=f"timeout → {on_timeout}", reason="no answer in time")
    answer = GateAnswer(gate=gate, action=decision.action, by=decision.approver, reason=decision.reason)
    record_answer(
        f"{gate}-{decision.action}-by:{decision.approver or 'unnamed'}",
        decision.reason,
        approver=decision.approver,
        approved=decision.action == "approve",
    )
    return decision.action, answer


def promotion_values(cluster: KubernetesCluster, request: CanaryRequest) -> tuple[dict[str, Any], int]:
    """Stable's own values with the canary's image, and stable's live revision (read now, never remembered)."""
    ns, helm = request.namespace, request.helm_executable
    status = release_status(cluster, ns, request.stable_release, helm)
    stable_values = revision_details(cluster, ns, request.stable_release, status.revision, helm).values
    canary_status = release_status(cluster, ns, request.canary_release, helm)
    canary_values = revision_details(cluster, ns, request.canary_release, canary_status.revision, helm).values
    image = {**stable_values.get("image", {}), **canary_values.get("image", {})}
    return {**stable_values, "image": image}, status.revision


class CanaryRun:
    """One canary rollout under the app's lock."""

    def __init__(
        self,
        request: CanaryRequest,
        controls: ChangeControls,
        *,
        cluster: KubernetesCluster,
        prometheus: PrometheusConnection,
        router: Router,
        version: str,
        plan: str,
        key: str,
    ) -> None:
        self.request, self.controls, self.cluster, self.prometheus = request, controls, cluster, prometheus
        self.router, self.version, self.plan, self.key = router, version, plan, key
        self.evidence = Evidence()
        self.log = get_run_logger()
        self.payload = {"name": request.canary_release, "namespace": request.namespace, "version": version}
        self.target = Target(
            observer=observer_for(request.router, request.observer),
            namespace=request.namespace,
            service=router.canary_service,
            route=router.route,
            version=version,
        )
        progress = create_progress_artifact(0.0, key=f"{key}-progress", description="canary weight (%)")
        assert isinstance(progress, UUID)  # sync call in a sync flow
        self.progress = progress

    # -- reporting and the ways back --------------------------------------------------------------------------

    def report(self, title: str) -> None:
        e = self.evidence
        markdown = canary_report(title, steps=e.steps, answers=e.approvals, hooks=e.webhooks, plan=self.plan)
        create_markdown_artifact(markdown, key=self.key)

    def hooks(self, phase: Any, **extra: Any) -> list[WebhookResult]:
        results = run_webhooks(self.request.analysis.webhooks, phase, {**self.payload, **extra})
        if phase != "rollout":
            self.evidence.webhooks += results
        return results

    def revert(self, why: str) -> None:
        """All traffic back to stable (weight 0), the rollback webhooks called, the report saying why."""
        reset_route(self.cluster, self.router)
        self.hooks("rollback", reason=why)
        update_progress_artifact(self.progress, 0.0)
        self.report(f"Rolled back: {why}")

    def salvage(self, exc: Exception) -> None:
        """Best effort after an unexpected error once the route exists: a crash must not leave users on an
        unjudged canary. The note on the exception says whether traffic went back."""
        self.log.error("unexpected error during the rollout (%s: %s); reverting to stable", type(exc).__name__, exc)
        try:
            self.revert(f"unexpected error: {type(exc).__name__}: {exc}")
        except Exception as again:  # noqa: BLE001 - the original error is what the run fails with
            self.log.error("could not revert traffic to stable: %s; check the route by hand", again)
            exc.add_note(f"rollbook: reverting traffic to stable FAILED ({again}); check the route by hand")
            return
        exc.add_note("rollbook: traffic was reverted to stable (weight 0)")

    def gate(self, name: str, weight: int) -> str:
        description = gate_form(name, serving=f"The canary serves **{weight}%**.", details=self.evidence.table())
        action, answer = ask(
            name,
            description,
            timeout_seconds=self.request.approval_timeout_seconds,
            on_timeout=self.request.on_approval_timeout,
        )
        self.evidence.approvals.append(answer)
        return action

    # -- the runbook's steps ----------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Before the route exists: the pre-rollout webhooks pass and every canary pod is Ready."""
        failed = [h.detail for h in self.hooks("pre-rollout") if not h.passed]
        if failed:
            self.report("Stopped: a pre-rollout webhook failed (nothing changed)")
            raise RolloutStopped(f"pre-rollout webhook failed: {failed}; nothing changed")
        ready = release_pods_ready(self.cluster, self.request.namespace, self.request.canary_release, 30)
        if not ready.all_ready:
            raise RolloutStopped(
                f"canary_release {self.request.canary_release!r} has pods that are not Ready "
                f"({'; '.join(ready.problems)}); nothing changed"
            )

    def open_route(self) -> None:
        ensure_route(self.cluster, self.router)

    def served(self) -> int:
        return read_weight(self.cluster, self.router)

    def shift(self, weight: int) -> None:
        served = set_weight(self.cluster, self.router, weight)
        update_progress_artifact(self.progress, float(served))
        self.log.info("canary serves %d%%", served)

    def analyse(self, weight: int, failed: int) -> int:
        """Analyse the step until `iterations` analyses pass; each failure counts towards `threshold` (for the
        whole run), and reaching it reverts and raises with the evidence. Returns the failures so far."""
        a = self.request.analysis
        passes, attempt = 0, 0
        while passes < a.iterations:
            time.sleep(a.interval_seconds)
            attempt += 1
            checks = run_checks(self.prometheus, a.metrics, self.target)
            step_hooks = self.hooks("rollout", weight=weight)
            ok = all(c.passed for c in checks) and all(h.passed for h in step_hooks)
            record = AnalysisRecord(weight=weight, attempt=attempt, passed=ok, checks=checks, webhooks=step_hooks)
            self.evidence.steps.append(record)
            self.report(f"Canary at {weight}%")
            if ok:
                passes += 1
                continue
            failed += 1
            problems = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
            problems += [f"webhook {h.name}: {h.detail}" for h in step_hooks if not h.passed]
            self.log.warning(
                "analysis %d at %d%% failed (%d/%d): %s", attempt, weight, failed, a.threshold, "; ".join(problems)
            )
            if failed >= a.threshold:
                why = f"{failed} failed analyses at {weight}% (threshold {a.threshold})"
                self.revert(why)
                raise CanaryReverted(f"{why}; traffic reverted to stable.\n\n{self.evidence.table()}")
        return failed

    def confirm_promotion(self) -> None:
        failed = [h.detail for h in self.hooks("confirm-promotion") if not h.passed]
        if failed:
            self.revert("confirm-promotion webhook failed")
            raise CanaryReverted(f"confirm-promotion webhook failed: {failed}; traffic reverted to stable")

    def promote(self) -> str:
        """Upgrade stable to the canary's image with --wait (helm rolls back on failure), send all traffic to
        stable, remove the canary route, annotate stable, uninstall the canary release. Returns what became of
        the canary release."""
        request = self.request
        values, live = promotion_values(self.cluster, request)
        outcome = upgrade_release(
            self.cluster,
            request.namespace,
            request.stable_release,
            request.chart,
            values,
            f"rollbook canary promotion to {self.version}",
            expected_live=live,
            install=False,
            timeout_seconds=request.timeout_seconds,
            helm=request.helm_executable,
        )
        if not outcome.succeeded:
            self.revert(f"promotion upgrade of {request.stable_release!r} failed")
            raise CanaryReverted(f"promotion of {request.stable_release!r} failed: {outcome.helm_error}")
        reset_route(self.cluster, self.router)
        remove_route(self.cluster, self.router)
        update_progress_artifact(self.progress, 100.0)
        details = {"promoted-version": self.version, "canary": request.canary_release}
        annotations = change_annotations(self.controls, ACTION, **details)
        annotate_release_deployments(self.cluster, request.namespace, request.stable_release, annotations)
        left = self.retire_canary()
        self.hooks("post-rollout")
        return left

    def retire_canary(self) -> str:
        """Uninstall the canary release once stable runs its version (Flagger scales the canary away after
        promotion). The promotion already succeeded, so a failed uninstall is reported, not raised."""
        request = self.request
        try:
            gone = uninstall_release(
                self.cluster,
                request.namespace,
                request.canary_release,
                request.helm_executable,
                request.timeout_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - reported in the result; stable is promoted either way
            self.log.warning("promotion done, but uninstalling canary %r failed: %s", request.canary_release, exc)
            return f"NOT uninstalled ({exc}); remove it with `helm uninstall {request.canary_release}`"
        return "uninstalled" if gone else "already gone"
