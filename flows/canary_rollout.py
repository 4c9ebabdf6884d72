"""Runbook: canary analysis in Flagger's model, in our own code, on two Helm releases.

The stable release serves users through its Ingress (or an HTTPRoute); the canary release (the new version,
already installed) gets a share of the traffic through an nginx canary Ingress or the route's backend weights.
First the pre-deploy checklist judges the promotion (stable with the canary's image) and a person approves
the plan when `controls.require_approval` asks for it. The weight then goes up in steps; at each step the
canary's metrics are checked `iterations` times, `interval_seconds` apart. A failed analysis does not advance
the weight; when failed analyses reach `threshold`, traffic goes back to stable (weight 0) and the run fails
with the metric evidence (CanaryReverted). Before the last step (and before promotion) a person approves,
rejects (traffic goes back: outcome "reverted") or holds. Promotion upgrades the stable release to the canary's
image with `--wait`, removes the canary route and uninstalls the canary release (`promote=False` keeps it:
blue/green finishes on its own).

The weight is read from the cluster at start: a run started again after a crash continues from the weight
the cluster serves, without shifting twice.

With `schema_guard`, the stable release (where every revert sends traffic) must still work with the database's
schema by its own `rollbook.dev/schema-compatible` declaration before anything changes; otherwise the run is
refused (`override_schema_guard`: asks for approval and is recorded). See `flows._schema_gate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow
from prefect.states import State

from blocks import KubernetesCluster
from flows._canary_model import (
    CanaryAnalysis as CanaryAnalysis,
)
from flows._canary_model import (
    CanaryRequest,
    CanaryResult,
    CanaryReverted,
    Evidence,
)
from flows._canary_steps import ACTION, CanaryRun, RolloutStopped, declined, plan_or_approval, promotion_values
from flows._checklist_gate import checklist_gate
from flows._schema_gate import GateDecision, revert_side_decision
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations
from rollbook.reports.progressive import CanaryPlan, canary_plan
from rollbook.rollout_lock import RolloutBusy as RolloutBusy  # re-exported: callers catch it from here
from tasks.cluster import resolve_cluster
from tasks.metrics.tasks import check_prometheus, resolve_prometheus
from tasks.progressive import ReleaseRouting, release_routing
from tasks.rollout_lock import rollout_lock
from tasks.routers.registry import Router, make_router
from tasks.routers.tasks import read_weight

__all__ = [
    "CanaryAnalysis",
    "CanaryRequest",
    "CanaryResult",
    "CanaryReverted",
    "Evidence",
    "RolloutBusy",
    "RolloutStopped",
    "canary_rollout",
]


@dataclass(frozen=True)
class Found:
    """What the run found before changing anything."""

    stable: ReleaseRouting
    canary: ReleaseRouting
    router: Router
    current: int
    todo: list[int]
    schema: GateDecision


def _remaining(steps: list[int], current: int) -> list[int]:
    """Steps still to run; the weight the cluster serves now is analysed again first (never shifted twice)."""
    later = [w for w in steps if w > current]
    return ([current] if current > 0 else []) + later


@flow(name="canary-rollout")
def canary_rollout(request: CanaryRequest, controls: ChangeControls) -> CanaryResult | State[CanaryResult]:
    """Check, plan and approve; shift traffic to the canary in steps, judge each step by its metrics, ask before
    the end, then promote or revert."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    prometheus = resolve_prometheus(request.prometheus_block, request.prometheus_url)
    found = _inspect(request, controls, cluster)  # read-only: bad input fails here, before any change
    controls = found.schema.controls(controls)  # a schema guard override always asks for approval
    check_prometheus(prometheus)
    verdict = checklist_gate(  # the promotion is what it judges; a failed verdict raises ChecklistFailed
        request,
        run=request.run_checklist,
        options=request.checklist,
        namespace=request.namespace,
        release=request.stable_release,
        chart=request.chart,
        values=promotion_values(cluster, request)[0] if request.run_checklist else {},
        helm=request.helm_executable,
    )
    plan = canary_plan(_plan_facts(request, controls, found, verdict))
    key = artifact_key(ACTION, request.namespace, request.stable_release)
    result = CanaryResult(
        outcome="planned",
        stage="planned",
        summary=f"plan: canary {request.canary_release} ({found.canary.version}) through {found.todo}",
        namespace=request.namespace,
        stable=found.stable,
        canary=found.canary,
        steps=found.todo,
        weight=found.current,
        checklist=verdict,
        plan=plan,
    )
    decision = plan_or_approval(controls, plan, key=key, what="canary rollout plan")
    if decision is None:  # plan mode
        return result
    if not decision.approved:
        return declined(result, decision)
    result = result.model_copy(update={"approval": decision.comment})
    with rollout_lock(cluster, request.namespace, request.stable_release):  # re-entrant
        run = CanaryRun(
            request,
            controls,
            cluster=cluster,
            prometheus=prometheus,
            router=found.router,
            version=found.canary.version,
            plan=plan,
            key=key,
        )
        return _roll(run, found, result)


def _inspect(request: CanaryRequest, controls: ChangeControls, cluster: KubernetesCluster) -> Found:
    """The two releases, the router between them and the weight the cluster serves now (reads only)."""
    ns = request.namespace
    stable = release_routing(cluster, ns, request.stable_release)
    canary = release_routing(cluster, ns, request.canary_release)
    if request.router == "nginx" and stable.ingress is None:
        raise ValueError(
            f"stable_release {request.stable_release!r} has no Ingress to split traffic from "
            "(use router=gateway-api with http_route, or enable the release's Ingress)"
        )
    schema = revert_side_decision(
        request, cluster, namespace=ns, release=request.stable_release, helm=request.helm_executable, role="stable"
    )
    change = change_annotations(
        controls, ACTION, canary=request.canary_release, version=canary.version, **schema.details()
    )
    router = make_router(
        request.router,
        namespace=ns,
        stable_service=stable.service,
        canary_service=canary.service,
        stable_ingress=stable.ingress,
        http_route=request.http_route,
        change=change,
    )
    current = read_weight(cluster, router)
    return Found(stable, canary, router, current, _remaining(request.analysis.steps(), current), schema)


def _plan_facts(request: CanaryRequest, controls: ChangeControls, found: Found, verdict: str) -> CanaryPlan:
    gates = [f"approval before {found.todo[-1]}%"] if request.approve_before_final_step and found.todo else []
    if request.promote and request.approve_before_promotion:
        gates.append("approval before promotion")
    if controls.require_approval:
        gates.insert(0, "approval of this plan")
    a = request.analysis
    return CanaryPlan(
        namespace=request.namespace,
        stable=request.stable_release,
        canary=request.canary_release,
        version=found.canary.version,
        router=request.router,
        route_object=getattr(found.router, "canary_name", None) or str(request.http_route),
        current=found.current,
        todo=found.todo,
        iterations=a.iterations,
        interval_seconds=a.interval_seconds,
        threshold=a.threshold,
        metrics=a.metrics,
        webhooks=a.webhooks,
        gates=gates,
        on_approval_timeout=request.on_approval_timeout,
        promote=request.promote,
        checklist=verdict,
        reason=controls.reason,
        requested_by=controls.requested_by,
        schema_guard=found.schema.line(),
    )


def _roll(run: CanaryRun, found: Found, result: CanaryResult) -> CanaryResult:
    """Under the lock: preflight, open the route, walk the steps, then finish; any unexpected error once the
    route exists sends traffic back to stable before the run fails."""
    run.preflight()
    try:
        run.open_route()
        answer = _walk(run, found.todo)
        if answer is not None:
            return _stop(run, answer, found, result)
        return _finish(run, found, result)
    except CanaryReverted:  # already reverted, with the evidence
        raise
    except Exception as exc:
        run.salvage(exc)
        raise


def _walk(run: CanaryRun, todo: list[int]) -> str | None:
    """Each weight in turn, analysed until it passes; the last one behind a gate. Returns the gate's answer
    when it was not "approve" (the walk stops there)."""
    failed = 0
    for weight in todo:
        if weight == todo[-1] and run.request.approve_before_final_step:
            served = run.served()
            if served < weight:
                answer = run.gate(f"shift to {weight}%", served)
                if answer != "approve":
                    return answer
        run.shift(weight)
        failed = run.analyse(weight, failed)
    return None


def _finish(run: CanaryRun, found: Found, result: CanaryResult) -> CanaryResult:
    request = run.request
    if not request.promote:
        served = run.served()
        run.report(f"Canary holds {served}% (promotion not requested)")
        summary = f"canary {request.canary_release} serves {served}% (no promotion asked)"
        return _ended(run, found, result, stage="shifted", summary=summary)
    run.confirm_promotion()
    if request.approve_before_promotion:
        answer = run.gate("promote", run.served())
        if answer != "approve":
            return _stop(run, answer, found, result)
    left = run.promote()
    run.report(f"Promoted {run.version}; canary release {request.canary_release!r} {left}")
    summary = f"{request.stable_release} now runs {run.version}; canary release {request.canary_release} {left}"
    return _ended(run, found, result, stage="promoted", summary=summary, canary_release=left)


def _stop(run: CanaryRun, answer: str, found: Found, result: CanaryResult) -> CanaryResult:
    """A gate said hold (keep the weight, stop here) or reject / no answer (all traffic back to stable)."""
    if answer == "hold":
        served = run.served()
        run.report(f"Held at {served}% (traffic left as it is)")
        run.log.warning("rollout held at %s%%", served)
        return _ended(run, found, result, stage="held", summary=f"held at {served}% by the approver's answer")
    run.revert("approval rejected or timed out")
    summary = f"approval rejected or timed out; all traffic is back on {run.request.stable_release}"
    return _ended(run, found, result, stage="reverted", summary=summary)


def _ended(
    run: CanaryRun, found: Found, result: CanaryResult, *, stage: str, summary: str, canary_release: str = "kept"
) -> CanaryResult:
    served = run.served()
    if stage == "reverted":
        outcome = "reverted"
    else:
        outcome = "changed" if stage == "promoted" or served != found.current else "unchanged"
    update = {
        "outcome": outcome,
        "stage": stage,
        "summary": summary,
        "weight": served,
        "canary_release": canary_release,
        "evidence": run.evidence,
    }
    return result.model_copy(update=update)
