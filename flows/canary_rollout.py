"""Runbook: canary analysis in Flagger's model, in our own code, on two Helm releases.

The stable release serves users through its Ingress; the canary release (the new version, already installed)
gets a share of the traffic through an nginx canary Ingress. The weight goes up in steps; at each step the
canary's metrics are checked `iterations` times, `interval_seconds` apart. A failed analysis does not advance
the weight; when failed analyses reach `threshold`, traffic goes back to stable (weight 0) and the run fails
with the metric evidence. Before the last step (and before promotion) a person approves, rejects or holds.
Promotion upgrades the stable release to the canary's image with `--wait`, removes the canary route and
uninstalls the canary release (`promote=False` keeps it: blue/green finishes on its own).

The weight is read from the cluster at start: a run started again after a crash continues from the weight
the cluster serves, without shifting twice.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Self
from uuid import UUID

from prefect import flow, get_run_logger, pause_flow_run
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, model_validator

from blocks.prometheus import PrometheusConnection
from flows._cluster_source import DNS_LABEL, RELEASE_NAME
from flows._traffic_source import TrafficSource
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations
from rollbook.rollout_lock import RolloutBusy as RolloutBusy  # re-exported: callers catch it from here
from rollbook.rollout_lock import rollout_lock
from tasks.cluster import resolve_cluster
from tasks.helm import (
    UpgradeOutcome,
    annotate_release_deployments,
    release_pods_ready,
    release_status,
    revision_details,
    upgrade_release,
)
from tasks.metrics import CheckResult, MetricCheck, check_prometheus, resolve_prometheus, run_checks
from tasks.metrics import Target as MetricTarget
from tasks.progressive import release_routing, uninstall_release
from tasks.traffic import (
    Router,
    ensure_route,
    make_router,
    read_weight,
    remove_route,
    reset_route,
    set_weight,
)
from tasks.webhooks import Webhook, WebhookResult, run_webhooks

ACTION = "canary-rollout"


def _default_metrics() -> list[MetricCheck]:
    return [
        MetricCheck(name="request-success-rate", min=99, window="1m"),
        MetricCheck(name="request-duration", max=500, window="1m"),
    ]


class CanaryAnalysis(BaseModel):
    """How traffic moves and how each step is judged (Flagger's `analysis` block)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_seconds: int = Field(default=60, ge=1, le=3600, description="Time between two analyses.")
    iterations: int = Field(default=1, ge=1, le=100, description="Passed analyses needed at each step.")
    threshold: int = Field(default=2, ge=1, le=100, description="Failed analyses (in total) that trigger rollback.")
    step_weights: list[int] | None = Field(default=None, description="Explicit weights, e.g. [10, 25, 50, 75, 100].")
    step_weight: int = Field(default=10, ge=1, le=100, description="Step size when step_weights is empty.")
    max_weight: int = Field(default=100, ge=1, le=100, description="Last weight when step_weights is empty.")
    metrics: list[MetricCheck] = Field(default_factory=_default_metrics, min_length=1)
    webhooks: list[Webhook] = Field(default_factory=list)

    @model_validator(mode="after")
    def _steps_valid(self) -> Self:
        if self.step_weights is not None:
            if not self.step_weights:
                raise ValueError("step_weights must not be empty (leave it out to use step_weight/max_weight)")
            bad = [w for w in self.step_weights if not 1 <= w <= 100]
            if bad:
                raise ValueError(f"step_weights must be from 1 to 100, got {bad}")
            if any(b <= a for a, b in zip(self.step_weights, self.step_weights[1:], strict=False)):
                raise ValueError(f"step_weights must be strictly increasing, got {self.step_weights}")
        return self

    def steps(self) -> list[int]:
        if self.step_weights is not None:
            return list(self.step_weights)
        weights = list(range(self.step_weight, self.max_weight, self.step_weight))
        return [*weights, self.max_weight]


class CanaryRequest(TrafficSource):
    """Which releases, where the metrics are, and how to decide."""

    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    stable_release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Serves users now.")
    canary_release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="The new version.")
    chart: str = Field(min_length=1, description="Chart of the stable release (path or reference), for promotion.")
    helm_executable: str = Field(default="helm", min_length=1)
    timeout_seconds: int = Field(default=300, ge=10, le=3600, description="helm --wait timeout for promotion.")
    analysis: CanaryAnalysis = Field(default_factory=CanaryAnalysis)
    approve_before_final_step: bool = Field(default=True, description="Ask a person before the last weight.")
    approve_before_promotion: bool = Field(default=True, description="Ask a person before promoting.")
    approval_timeout_seconds: int = Field(default=3600, ge=5, le=7 * 24 * 3600)
    on_approval_timeout: Literal["revert", "hold"] = Field(
        default="revert", description="No answer in time: send all traffic back to stable, or keep the weight."
    )
    promote: bool = Field(default=True, description="After the last step: upgrade stable to the canary's image.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stable_release == self.canary_release:
            raise ValueError("stable_release and canary_release must differ")
        return self


class RolloutDecision(RunInput):
    """The approver's answer: approve (go on), reject (revert to stable) or hold (keep the weight, stop here)."""

    action: Literal["approve", "reject", "hold"] = "hold"
    approver: str = Field(default="", max_length=100, description="Who answers (recorded in the report).")
    reason: str = ""


class RolloutFailed(RuntimeError):
    """The rollout was stopped and traffic reverted to stable; the message carries the evidence."""


class AnalysisRecord(BaseModel):
    weight: int
    attempt: int
    passed: bool
    checks: list[CheckResult]
    webhooks: list[WebhookResult] = []


class Evidence(BaseModel):
    steps: list[AnalysisRecord] = []
    approvals: list[dict[str, str]] = []
    webhooks: list[WebhookResult] = []

    def table(self) -> str:
        rows = ["| weight | analysis | metric | value | range | result |", "|---:|---:|---|---:|---|---|"]
        for rec in self.steps:
            for c in rec.checks:
                value = "no data" if c.value is None or c.value != c.value else f"{c.value:.2f}"
                bounds = _bounds(c.min, c.max)
                rows.append(
                    f"| {rec.weight}% | {rec.attempt} | {c.name} | {value} | {bounds} | "
                    f"{'pass' if c.passed else 'FAIL: ' + c.detail} |"
                )
            for w in rec.webhooks:
                rows.append(
                    f"| {rec.weight}% | {rec.attempt} | webhook {w.name} | | | {'pass' if w.passed else 'FAIL'} |"
                )
        return "\n".join(rows)

    def markdown(self, title: str, request: CanaryRequest, controls: ChangeControls) -> str:
        lines = [
            f"# {title}",
            "",
            f"- canary `{request.canary_release}` → stable `{request.stable_release}` in `{request.namespace}`",
            f"- requested by **{controls.requested_by}**: {controls.reason}",
            "",
            "## Metrics per step",
            "",
            self.table() if self.steps else "_no analysis ran_",
        ]
        if self.approvals:
            lines += ["", "## Approvals", "", "| gate | answer | by / reason |", "|---|---|---|"]
            lines += [f"| {a['gate']} | {a['action']} | {a['reason']} |" for a in self.approvals]
        if self.webhooks:
            lines += ["", "## Webhooks", "", "| name | phase | result |", "|---|---|---|"]
            lines += [f"| {w.name} | {w.type} | {'pass' if w.passed else 'FAIL: ' + w.detail} |" for w in self.webhooks]
        return "\n".join(lines)


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} … {high:g}"
    return f"≥ {low:g}" if low is not None else f"≤ {high:g}"


def plan_markdown(request: CanaryRequest, steps: list[int], current: int, canary_version: str) -> str:
    a = request.analysis
    gates = []
    if request.approve_before_final_step:
        gates.append(f"approval before {steps[-1]}%")
    if request.promote and request.approve_before_promotion:
        gates.append("approval before promotion")
    checks = ", ".join(f"{m.name} {_bounds(m.min, m.max)} over {m.window}" for m in a.metrics)
    weights = ", ".join(f"{w}%" for w in steps)
    finish = (
        "upgrade stable to the canary image with --wait, remove the canary route, uninstall the canary release"
        if request.promote
        else "keep the canary at the last weight"
    )
    return "\n".join(
        [
            f"## Canary `{request.canary_release}` ({canary_version}) beside `{request.stable_release}`",
            "",
            f"- weight served now: **{current}%**; steps still to run: **{weights or 'none'}**",
            f"- each step: {a.iterations} passing analysis(es), every {a.interval_seconds}s; "
            f"rollback after {a.threshold} failed analysis(es)",
            f"- checks: {checks}",
            f"- webhooks: {', '.join(f'{w.name} ({w.type})' for w in a.webhooks) or 'none'}",
            f"- gates: {', '.join(gates) or 'none'}; no answer in time: {request.on_approval_timeout}",
            f"- then: {finish}",
        ]
    )


def _remaining(steps: list[int], current: int) -> list[int]:
    """Steps still to run; the weight the cluster serves now is analysed again first (never shifted twice)."""
    later = [w for w in steps if w > current]
    return ([current] if current > 0 else []) + later


@flow(name="canary-rollout")
def canary_rollout(request: CanaryRequest, controls: ChangeControls) -> dict[str, Any]:
    """Shift traffic to the canary in steps, judge each step by its metrics, ask before the end, promote or revert."""
    log = get_run_logger()
    ns = request.namespace
    key = artifact_key(ACTION, ns, request.stable_release)
    steps = request.analysis.steps()
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    prometheus = resolve_prometheus(request.prometheus_block, request.prometheus_url)

    # everything below up to the lock only reads: bad input fails here, before any change
    stable = release_routing(cluster, ns, request.stable_release)
    canary = release_routing(cluster, ns, request.canary_release)
    if request.router == "nginx" and stable.ingress is None:
        raise ValueError(f"stable release {request.stable_release!r} has no Ingress to split traffic from")
    change = change_annotations(controls, ACTION, **{"canary": request.canary_release, "version": canary.version})
    router = make_router(request.router, ns, stable.service, canary.service, stable.ingress, request.http_route, change)
    check_prometheus(prometheus)
    current = read_weight(cluster, router)
    todo = _remaining(steps, current)
    plan = plan_markdown(request, todo, current, canary.version)
    result: dict[str, Any] = {"stable": stable.model_dump(), "canary": canary.model_dump(), "steps": todo}
    if controls.plan:
        create_markdown_artifact("# Plan (nothing changed)\n\n" + plan, key=key, description="canary rollout plan")
        log.info("plan only: nothing changed\n%s", plan)
        return {**result, "outcome": "planned", "weight": current}

    with rollout_lock(ns, request.stable_release, request.lock_timeout_seconds):  # re-entrant: blue/green holds it
        return _run(request, controls, cluster, prometheus, router, canary.version, todo, plan, key, result)


def _run(
    request: CanaryRequest,
    controls: ChangeControls,
    cluster: Any,
    prometheus: PrometheusConnection,
    router: Router,
    version: str,
    todo: list[int],
    plan: str,
    key: str,
    result: dict[str, Any],
) -> dict[str, Any]:
    log = get_run_logger()
    a = request.analysis
    evidence = Evidence()
    payload = {"name": request.canary_release, "namespace": request.namespace, "version": version}
    target = MetricTarget(namespace=request.namespace, service=router.canary_service, version=version)
    progress_id = create_progress_artifact(0.0, key=f"{key}-progress", description="canary weight (%)")
    assert isinstance(progress_id, UUID)  # sync call in a sync flow

    def report(title: str) -> None:
        create_markdown_artifact(evidence.markdown(title, request, controls) + "\n\n## Plan\n\n" + plan, key=key)

    def revert(why: str) -> None:
        reset_route(cluster, router)
        evidence.webhooks += run_webhooks(a.webhooks, "rollback", {**payload, "reason": why})
        update_progress_artifact(progress_id, 0.0)
        report(f"Rolled back: {why}")

    def gate(name: str, weight: int) -> str:
        summary = f"## Gate: {name}\n\nThe canary serves **{weight}%**.\n\n" + evidence.table()
        form = RolloutDecision.with_initial_data(description=summary, action="hold")
        try:
            decision = pause_flow_run(wait_for_input=form, timeout=request.approval_timeout_seconds, poll_interval=2)
        except FlowPauseTimeout:
            action = request.on_approval_timeout
            evidence.approvals.append({"gate": name, "action": f"timeout → {action}", "reason": "no answer"})
            return "reject" if action == "revert" else "hold"
        who = decision.approver or "unnamed approver"
        evidence.approvals.append(
            {"gate": name, "action": decision.action, "reason": f"{who}: {decision.reason or '-'}"}
        )
        return decision.action

    hooks = run_webhooks(a.webhooks, "pre-rollout", payload)
    evidence.webhooks += hooks
    if not all(h.passed for h in hooks):
        report("Stopped: a pre-rollout webhook failed (nothing changed)")
        raise RolloutFailed(f"pre-rollout webhook failed: {[h.detail for h in hooks if not h.passed]}; nothing changed")
    if not release_pods_ready(cluster, request.namespace, request.canary_release, 30).all_ready:
        raise RolloutFailed(f"canary release {request.canary_release!r} has pods that are not Ready; nothing changed")

    try:
        ensure_route(cluster, router)
        failed = 0
        for weight in todo:
            if weight == todo[-1] and request.approve_before_final_step:
                served = read_weight(cluster, router)
                if served < weight:
                    answer = gate(f"shift to {weight}%", served)
                    if answer != "approve":
                        held = {**result, "weight": served, "evidence": evidence.model_dump(mode="json")}
                        return _stop(answer, revert, report, held, log)
            served = set_weight(cluster, router, weight)
            update_progress_artifact(progress_id, float(served))
            log.info("canary serves %d%%", served)
            passes, attempt = 0, 0
            while passes < a.iterations:
                time.sleep(a.interval_seconds)
                attempt += 1
                checks = run_checks(prometheus, a.metrics, target)
                step_hooks = run_webhooks(a.webhooks, "rollout", {**payload, "weight": weight})
                ok = all(c.passed for c in checks) and all(h.passed for h in step_hooks)
                evidence.steps.append(
                    AnalysisRecord(weight=weight, attempt=attempt, passed=ok, checks=checks, webhooks=step_hooks)
                )
                report(f"Canary at {weight}%")
                if ok:
                    passes += 1
                    continue
                failed += 1
                log.warning("analysis %d at %d%% failed (%d/%d): %s", attempt, weight, failed, a.threshold,
                            "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed))  # fmt: skip
                if failed >= a.threshold:
                    why = f"{failed} failed analyses at {weight}% (threshold {a.threshold})"
                    revert(why)
                    raise RolloutFailed(f"{why}; traffic reverted to stable.\n\n{evidence.table()}")

        final = todo[-1] if todo else read_weight(cluster, router)
        if not request.promote:
            report(f"Canary holds {final}% (promotion not requested)")
            return {**result, "outcome": "completed", "weight": final, "evidence": evidence.model_dump(mode="json")}
        hooks = run_webhooks(a.webhooks, "confirm-promotion", payload)
        evidence.webhooks += hooks
        if not all(h.passed for h in hooks):
            revert("confirm-promotion webhook failed")
            raise RolloutFailed(f"confirm-promotion webhook failed: {[h.detail for h in hooks if not h.passed]}")
        if request.approve_before_promotion:
            answer = gate("promote", final)
            if answer != "approve":
                return _stop(
                    answer,
                    revert,
                    report,
                    {**result, "weight": final, "evidence": evidence.model_dump(mode="json")},
                    log,
                )

        outcome = _promote_stable(cluster, request, version)
        if not outcome.succeeded:
            revert(f"promotion upgrade of {request.stable_release!r} failed")
            raise RolloutFailed(f"promotion of {request.stable_release!r} failed: {outcome.helm_error}")
        reset_route(cluster, router)
        remove_route(cluster, router)
        update_progress_artifact(progress_id, 100.0)
        annotations = change_annotations(
            controls, ACTION, **{"promoted-version": version, "canary": request.canary_release}
        )
        annotate_release_deployments(cluster, request.namespace, request.stable_release, annotations)
        canary_left = _retire_canary(cluster, request)
        evidence.webhooks += run_webhooks(a.webhooks, "post-rollout", payload)
        report(f"Promoted {version}; canary release {request.canary_release!r} {canary_left}")
        return {
            **result,
            "outcome": "promoted",
            "weight": 0,
            "version": version,
            "canary_release": canary_left,
            "evidence": evidence.model_dump(mode="json"),
        }
    except RolloutFailed:  # already reverted, with the evidence
        raise
    except Exception as exc:
        _salvage(exc, revert, log)
        raise


def _salvage(exc: Exception, revert: Any, log: Any) -> None:
    """Best effort after an unexpected error once the route exists: send all traffic back to stable (a crash must
    not leave users on an unjudged canary), log what happened, and note it on the exception the run fails with."""
    log.error("unexpected error during the rollout (%s: %s); reverting traffic to stable", type(exc).__name__, exc)
    try:
        revert(f"unexpected error: {type(exc).__name__}: {exc}")
    except Exception as again:  # noqa: BLE001 - the original error is what the run fails with
        log.error("could not revert traffic to stable: %s; check the route by hand", again)
        exc.add_note(f"rollbook: reverting traffic to stable FAILED ({again}); check the route by hand")
        return
    exc.add_note("rollbook: traffic was reverted to stable (weight 0)")


def _promote_stable(cluster: Any, request: CanaryRequest, version: str) -> UpgradeOutcome:
    """Upgrade stable (its own values) to the canary's image with --wait; helm rolls back on failure."""
    ns, helm = request.namespace, request.helm_executable
    status = release_status(cluster, ns, request.stable_release, helm)
    stable_values = revision_details(cluster, ns, request.stable_release, status.revision, helm).values
    canary_status = release_status(cluster, ns, request.canary_release, helm)
    canary_values = revision_details(cluster, ns, request.canary_release, canary_status.revision, helm).values
    values = {**stable_values, "image": {**stable_values.get("image", {}), **canary_values.get("image", {})}}
    return upgrade_release(
        cluster, ns, request.stable_release, request.chart, values, f"rollbook canary promotion to {version}",
        status.revision, False, request.timeout_seconds, helm,
    )  # fmt: skip


def _retire_canary(cluster: Any, request: CanaryRequest) -> str:
    """Uninstall the canary release once stable runs its version (Flagger scales the canary away after promotion):
    it serves no traffic any more. The promotion already succeeded, so a failed uninstall is reported, not raised."""
    try:
        gone = uninstall_release(
            cluster, request.namespace, request.canary_release, request.helm_executable, request.timeout_seconds
        )
    except Exception as exc:  # noqa: BLE001 - reported in the result; stable is promoted either way
        get_run_logger().warning("promotion done, but uninstalling canary %r failed: %s", request.canary_release, exc)
        return f"NOT uninstalled ({exc}); remove it with `helm uninstall {request.canary_release}`"
    return "uninstalled" if gone else "already gone"


def _stop(answer: str, revert: Any, report: Any, result: dict[str, Any], log: Any) -> dict[str, Any]:
    if answer == "hold":
        report(f"Held at {result['weight']}% (traffic left as it is)")
        log.warning("rollout held at %s%%", result["weight"])
        return {**result, "outcome": "held"}
    revert("approval rejected or timed out")
    raise RolloutFailed("approval rejected or timed out; traffic reverted to stable")
