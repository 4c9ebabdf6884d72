"""Runbook: blue/green with progressive traffic shift, metric gates and approvals, on two Helm releases.

First the pre-deploy checklist judges green (blue's values with green's version), and a person approves the plan
when `controls.require_approval` asks for it. Green (the new version) is then installed beside blue with
`helm --wait` and no Ingress of its own, so it gets 0%. It must have every pod Ready and pass an acceptance
check (an HTTP call or a command) before any traffic moves. Traffic then shifts through the steps with the
canary-rollout flow's analysis (checks every `interval_seconds` for `window_seconds` at each step; `threshold`
failed checks revert to blue). Approvals come before 100% and before blue is retired. Finish: green gets the
Ingress, blue loses it, the canary route goes (with the Gateway API router the HTTPRoute sends to green only),
Deployments are labelled active/retired, and blue is uninstalled now or by a follow-up `blue-green-retire` run
after `keep_blue_seconds`. The application's rollout lock is held from before green is installed to the end, so
no other blue/green or canary run of the same app can interleave.

With `schema_guard`, blue (where every revert sends traffic) must still work with the database's schema by its
own `rollbook.dev/schema-compatible` declaration before green is installed; otherwise the run is refused
(`override_schema_guard`: asks for approval and is recorded). See `flows._schema_gate`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from blocks import KubernetesCluster
from flows._blue_green_model import BlueGreenRequest, BlueGreenResult, RetireRequest, RetireResult
from flows._blue_green_steps import (
    ACTION,
    RETIRE_DEPLOYMENT,
    ROLE_LABEL,
    HandOverFailed,
    check_green,
    clear_interrupted_green,
    green_values,
    hand_over,
    install_green,
    interrupted_green,
    live_values,
    retire_blue,
    retire_parameters,
    retired_objects,
)
from flows._canary_model import GateAnswer
from flows._canary_steps import RolloutStopped, ask, declined, plan_or_approval
from flows._checklist_gate import checklist_gate
from flows._schema_gate import NO_GUARD, GateDecision, revert_side_decision
from flows.canary_rollout import canary_rollout
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, subflow_result
from rollbook.helm_recovery import StuckRelease
from rollbook.reports.progressive import (
    BlueGreenPlan,
    blue_green_plan,
    blue_green_report,
    gate_form,
    retire_plan,
    titled,
)
from tasks.cluster import resolve_cluster
from tasks.metrics.tasks import check_prometheus, resolve_prometheus
from tasks.progressive import ReleaseRouting, RoutingNotFound, release_routing, uninstall_release
from tasks.release_workloads import annotate_release_deployments
from tasks.rollout_lock import rollout_lock
from tasks.routers.registry import Router, make_router
from tasks.routers.tasks import reset_route

__all__ = [
    "RETIRE_DEPLOYMENT",
    "ROLE_LABEL",
    "BlueGreenRequest",
    "BlueGreenResult",
    "HandOverFailed",
    "RetireRequest",
    "RetireResult",
    "RolloutStopped",
    "blue_green",
    "blue_green_retire",
]


@dataclass(frozen=True)
class Found:
    """What the run found before changing anything."""

    blue: ReleaseRouting
    green: ReleaseRouting | None
    green_values: dict[str, Any]
    interrupted: StuckRelease | None = None  # an earlier run's green install that never finished
    schema: GateDecision = NO_GUARD  # the schema guard's decision on blue, the side a revert returns to


@flow(name="blue-green")
def blue_green(request: BlueGreenRequest, controls: ChangeControls) -> BlueGreenResult | State[BlueGreenResult]:
    """Check, plan and approve; install green at 0%, check it, shift traffic in gated steps, then retire blue."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    found = _inspect(request, cluster)  # read-only: bad input fails here, before any change
    controls = found.schema.controls(controls)  # a schema guard override always asks for approval
    check_prometheus(resolve_prometheus(request.prometheus_block, request.prometheus_url))
    verdict = checklist_gate(  # a failed verdict raises ChecklistFailed: nothing changed
        request,
        run=request.run_checklist,
        options=request.checklist,
        namespace=request.namespace,
        release=request.green_release,
        chart=request.chart,
        values=found.green_values,
        helm=request.helm_executable,
    )
    plan = blue_green_plan(_plan_facts(request, controls, found, verdict))
    key = artifact_key(ACTION, request.namespace, request.blue_release)
    result = BlueGreenResult(
        outcome="planned",
        stage="planned",
        summary=f"plan: {request.green_release} ({request.version}) replaces {request.blue_release}",
        namespace=request.namespace,
        blue_release=request.blue_release,
        green_release=request.green_release,
        version=request.version,
        checklist=verdict,
        plan=plan,
    )
    decision = plan_or_approval(controls, plan, key=key, what="blue/green plan")
    if decision is None:  # plan mode
        return result
    if not decision.approved:
        return declined(result, decision)
    result = result.model_copy(update={"approval": decision.comment})
    # one lock over the whole change (install, shift, retire); the canary-rollout subflow re-enters it
    with rollout_lock(cluster, request.namespace, request.blue_release):
        return _deliver(request, controls, cluster, found, result)


def _inspect(request: BlueGreenRequest, cluster: KubernetesCluster) -> Found:
    """Blue's routing and values, green if it is already there (it must run the requested version)."""
    ns, helm = request.namespace, request.helm_executable
    blue = release_routing(cluster, ns, request.blue_release)
    if request.router == "nginx" and blue.ingress is None:
        raise ValueError(
            f"blue_release {request.blue_release!r} has no Ingress to split traffic from "
            "(use router=gateway-api with http_route, or enable the release's Ingress)"
        )
    try:
        green: ReleaseRouting | None = release_routing(cluster, ns, request.green_release)
    except RoutingNotFound:
        green = None
    if green is not None and green.version != request.version:
        raise ValueError(
            f"green_release {request.green_release!r} already runs {green.version}, not version {request.version}; "
            "uninstall it or pick another green_release"
        )
    blue_values, _ = live_values(cluster, ns, request.blue_release, helm)
    values = green_values(blue_values, version=request.version, extra=request.green_values)
    stuck = interrupted_green(cluster, namespace=ns, release=request.green_release, values=values, helm=helm)
    if stuck is not None:  # its objects may exist, but the install never finished: it is removed and made again
        green = None
    schema = revert_side_decision(request, cluster, namespace=ns, release=request.blue_release, helm=helm, role="blue")
    return Found(blue=blue, green=green, green_values=values, interrupted=stuck, schema=schema)


def _plan_facts(request: BlueGreenRequest, controls: ChangeControls, found: Found, verdict: str) -> BlueGreenPlan:
    acceptance = [f"GET {request.acceptance_url} answers 2xx"] if request.acceptance_url else []
    if request.acceptance_command:
        acceptance.append(f"`{' '.join(request.acceptance_command)}` exits 0")
    return BlueGreenPlan(
        namespace=request.namespace,
        blue=request.blue_release,
        blue_version=found.blue.version,
        green=request.green_release,
        version=request.version,
        chart=request.chart,
        install=found.green is None,
        interrupted=found.interrupted.evidence(dt.datetime.now(dt.UTC)) if found.interrupted else "",
        router=request.router,
        http_route=request.http_route,
        blue_has_ingress=found.blue.ingress is not None,
        acceptance=acceptance,
        steps=request.steps,
        interval_seconds=request.interval_seconds,
        window_seconds=request.window_seconds,
        threshold=request.threshold,
        on_approval_timeout=request.on_approval_timeout,
        keep_blue_seconds=request.keep_blue_seconds,
        green_values=[f"{k}={v!r}" for k, v in sorted(request.green_values.items())],
        checklist=verdict,
        reason=controls.reason,
        requested_by=controls.requested_by,
        schema_guard=found.schema.line(),
    )


def _deliver(
    request: BlueGreenRequest,
    controls: ChangeControls,
    cluster: KubernetesCluster,
    found: Found,
    result: BlueGreenResult,
) -> BlueGreenResult:
    """Under the lock: install and check green, shift traffic with analysis, ask, then hand over and retire blue."""
    result = result.model_copy(update={"accepted": _prepare_green(request, cluster, found)})
    # approval of the whole plan was asked above; the subflow asks only at its traffic gates
    unattended = controls.model_copy(update={"require_approval": False})
    shifted = subflow_result(canary_rollout(request=request.shift_request(), controls=unattended))
    result = result.model_copy(update={"shift": shifted})
    if shifted.stage != "shifted":  # held or reverted at the gate before 100%
        return result.model_copy(
            update={"outcome": shifted.outcome, "stage": shifted.stage, "summary": shifted.summary}
        )
    green = release_routing(cluster, request.namespace, request.green_release)
    change = change_annotations(
        controls, ACTION, green=request.green_release, version=request.version, **found.schema.details()
    )
    router = make_router(
        request.router,
        namespace=request.namespace,
        stable_service=found.blue.service,
        canary_service=green.service,
        stable_ingress=found.blue.ingress,
        http_route=request.http_route,
        change=change,
    )
    action, answer = ask(
        "retire blue",
        gate_form("retire blue", serving=f"Green serves 100% (steps {shifted.steps}).", details=result.plan),
        timeout_seconds=request.approval_timeout_seconds,
        on_timeout=request.on_approval_timeout,
    )
    result = result.model_copy(update={"retire_approval": answer})
    if action == "hold":
        summary = "held at 100% on green before retiring blue (blue is kept)"
        return result.model_copy(update={"outcome": "changed", "stage": "held", "summary": summary})
    if action != "approve":
        reset_route(cluster, router)
        summary = f"retiring blue not approved ({answer.by or 'no one'}: {answer.reason}); all traffic is back on blue"
        _report(request, f"Reverted to blue: {summary}", blue="serving", answers=[answer], plan=result.plan)
        return result.model_copy(update={"outcome": "reverted", "stage": "reverted", "summary": summary})
    return _switch(request, controls, cluster, found, router, result)


def _prepare_green(request: BlueGreenRequest, cluster: KubernetesCluster, found: Found) -> str:
    """Install green (unless it already runs the version), then require Ready pods and the acceptance check. An
    earlier run's interrupted install is removed first, once its helm has certainly given up."""
    install = found.green is None
    if found.interrupted is not None:
        install = clear_interrupted_green(
            cluster, found.interrupted, timeout_seconds=request.timeout_seconds, helm=request.helm_executable
        )
    if install:
        install_green(
            cluster,
            namespace=request.namespace,
            release=request.green_release,
            chart=request.chart,
            values=found.green_values,
            version=request.version,
            timeout_seconds=request.timeout_seconds,
            helm=request.helm_executable,
        )
    accepted = check_green(
        cluster,
        namespace=request.namespace,
        release=request.green_release,
        url=str(request.acceptance_url) if request.acceptance_url else None,
        command=request.acceptance_command,
        timeout_seconds=request.acceptance_timeout_seconds,
    )
    get_run_logger().info("green accepted: %s", accepted)
    return accepted


def _switch(
    request: BlueGreenRequest,
    controls: ChangeControls,
    cluster: KubernetesCluster,
    found: Found,
    router: Router,
    result: BlueGreenResult,
) -> BlueGreenResult:
    """Retiring blue was approved: hand over to green, then uninstall blue now or after the keep window."""
    ns, helm = request.namespace, request.helm_executable
    hand_over(
        cluster,
        controls,
        router,
        namespace=ns,
        blue=request.blue_release,
        green=request.green_release,
        chart=request.chart,
        move_ingress=found.blue.ingress is not None,
        timeout_seconds=request.timeout_seconds,
        helm=helm,
    )
    source = {"kubeconfig_path": request.kubeconfig_path, "cluster_block": request.cluster_block}
    parameters = retire_parameters(
        namespace=ns,
        release=request.blue_release,
        source={**source, "context": request.context},
        helm=helm,
        controls=controls,
    )
    blue = retire_blue(
        cluster,
        namespace=ns,
        blue=request.blue_release,
        helm=helm,
        keep_seconds=request.keep_blue_seconds,
        parameters=parameters,
    )
    summary = f"{request.green_release} ({request.version}) serves everyone; blue {request.blue_release}: {blue}"
    answers = [*(result.shift.evidence.approvals if result.shift else []), *filter(None, [result.retire_approval])]
    _report(request, f"Blue/green done: {summary}", blue=blue, answers=answers, plan=result.plan)
    return result.model_copy(update={"outcome": "changed", "stage": "switched", "summary": summary, "blue": blue})


def _report(request: BlueGreenRequest, title: str, *, blue: str, answers: list[GateAnswer], plan: str) -> None:
    key = artifact_key(ACTION, request.namespace, request.blue_release)
    create_markdown_artifact(blue_green_report(title, blue=blue, answers=answers, plan=plan), key=key)


@flow(name="blue-green-retire")
def blue_green_retire(request: RetireRequest, controls: ChangeControls) -> RetireResult | State[RetireResult]:
    """Uninstall a retired blue release (the follow-up run a blue/green switch schedules): only a release whose
    Deployments a blue-green run labelled retired; plan, approval and audit like every change."""
    ns, release = request.namespace, request.release
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    objects = retired_objects(cluster, namespace=ns, release=release, helm=request.helm_executable)
    if objects is None:
        summary = f"release {release!r} in {ns!r} is already gone"
        return RetireResult(outcome="unchanged", summary=summary, namespace=ns, release=release)
    plan = retire_plan(
        namespace=ns, release=release, objects=objects, reason=controls.reason, requested_by=controls.requested_by
    )
    summary = f"plan: uninstall {release} ({len(objects)} objects)"
    result = RetireResult(outcome="planned", summary=summary, namespace=ns, release=release, removed=objects, plan=plan)
    key = artifact_key("blue-green-retire", ns, release)
    decision = plan_or_approval(controls, plan, key=key, what="retire plan")
    if decision is None:  # plan mode
        return result
    if not decision.approved:
        return declined(result, decision)
    # the audit trail: the Deployments carry who and why up to their deletion (the API server's audit log keeps
    # it), and this run's result and artifact list every object removed
    notes = change_annotations(controls, "blue-green-retire", release=release)
    annotate_release_deployments(cluster, ns, release, notes)
    gone = uninstall_release(cluster, ns, release, request.helm_executable, request.timeout_seconds)
    summary = f"uninstalled retired release {release!r} in {ns!r} ({len(objects)} objects)"
    if not gone:
        summary = f"release {release!r} in {ns!r} was already gone"
    create_markdown_artifact(titled(summary, plan), key=key)
    update = {"outcome": "changed" if gone else "unchanged", "summary": summary, "approval": decision.comment}
    return result.model_copy(update=update)
