"""Registry outage: pods stuck in ImagePullBackOff because the registry is unreachable. The guide's runbook:
check the registry (`curl /v2/`), fall back to a mirror, unstick the pods, wait for the registry, and go back.

1. Detect: probe the primary and each mirror, find the Deployments, StatefulSets and DaemonSets of the chosen
   namespaces whose pods cannot pull from the primary, and since when (the blast radius).
2. Fall back, by digest only: a workload moves to a mirror when the mirror serves the very digest it runs and
   (by default) that copy's cosign signature verifies; the new reference is `mirror/repo@sha256:...`. Anything
   less is refused for that workload, with the reason. The originals are recorded on the Deployment in the
   same patch (`rollbook.dev/registry-fallback`).
3. Unstick: wait for the rollouts; what stays in back-off is unstuck the way its controller needs (a
   Deployment's `rollout restart`; a StatefulSet's or DaemonSet's stuck pods deleted).
4. Recover: watch the primary until it serves those digests again, then put the original references back, so
   the mirror is a detour, not a new normal. Each switch-back is watched: if the nodes still cannot pull from
   the primary, the mirror is put back (flows/_registry_switch_back.py). A primary still down when the watch
   ends leaves the workloads on the mirror; the same request run again reads the detour and finishes it.
A run that leaves a stuck workload stuck (refused, or not rolled out) fails, after its report, naming each; a
plan only reports, refusals included.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from flows import _registry_outage_steps as steps
from flows._registry_outage_steps import Move, RegistryOutageRequest, Run
from flows._registry_switch_back import switch_back
from rollbook import registry_fallback as rules
from rollbook.change import ChangeControls, Outcome, not_approved_state, request_approval
from rollbook.reports.registry import RegistryOutageResult, WorkloadRow, plan_markdown, result_markdown
from tasks.cluster import resolve_cluster
from tasks.registry import resolve_registry

__all__ = ["FallbackIncomplete", "RegistryOutageRequest", "RegistryOutageResult", "registry_outage"]


class FallbackIncomplete(RuntimeError):
    """Stuck workloads were left stuck (refused for every mirror, or not rolled out): production is still
    partly down; the message names each and why."""


@flow(name="registry-outage")
def registry_outage(
    request: RegistryOutageRequest, controls: ChangeControls
) -> RegistryOutageResult | State[RegistryOutageResult]:
    """Move the workloads stuck on an unreachable registry to a verified mirror by digest, then back."""
    registry = resolve_registry(request.registry_block)
    if not registry.mirrors:
        raise ValueError(f"registry block {request.registry_block!r} has no mirrors to fall back to; nothing changed")
    if request.verify_signatures and not registry.cosign_public_key:
        raise ValueError(
            f"verify_signatures needs a cosign_public_key in registry block {request.registry_block!r} "
            "(or verify_signatures=false); nothing changed"
        )
    run = Run(request, resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context), registry)
    probes, workloads, pod_digests = steps.detect(run)
    if not workloads:
        summary = (
            f"no Deployment, StatefulSet or DaemonSet in {', '.join(request.namespaces)} runs an image from "
            f"{run.primary} or carries a registry detour; nothing changed"
        )
        return _publish(run, _result(run, "unchanged", summary, probes, []))

    rows: list[WorkloadRow] = []
    moves: list[Move] = []
    for workload in workloads:
        if workload.state == "on-mirror":
            rows.append(steps.row_for(workload, "already-on-mirror"))
        elif workload.state == "changed-since-fallback":
            rows.append(steps.row_for(workload, "left-alone", "its images changed since rollbook's detour"))
        elif workload.state == "record-unreadable":
            why = f"its {rules.FALLBACK_ANNOTATION} annotation is unreadable: check its images and remove it by hand"
            rows.append(steps.row_for(workload, "left-alone", why))
        elif workload.state == "stuck":
            switches = steps.plan_switches(run, workload, pod_digests, primary_up=bool(probes[0]["up"]))
            refused = [s for s in switches if not s.mirror_ref]
            row = steps.row_for(workload, "refused" if refused else "would-switch-to-mirror", switches=switches)
            rows.append(row)
            if refused:
                run.failed(row, "; ".join(s.refused for s in refused))
            else:
                moves.append(Move(workload, row, {s.container: str(s.mirror_ref) for s in switches}))
    run.phase("decide")

    if moves and not controls.plan:
        draft = _result(run, "planned", "", probes, rows)
        decision = request_approval(controls, plan_markdown(draft, "Move these workloads to the mirror?"))
        if not decision.approved:
            summary = f"not approved: nothing changed ({decision.comment})"
            refused_result = _publish(run, _result(run, "not-approved", summary, probes, rows))
            return not_approved_state(refused_result, decision)
        run.approved_in_run = controls.require_approval
        for move in moves:
            steps.move_to_mirror(run, controls, move)
        for move in moves:
            steps.wait_ready(run, move.row)
        run.phase("fallback")
    return _recover_and_report(run, controls, probes, rows, changed=bool(moves) and not controls.plan)


def _recover_and_report(
    run: Run, controls: ChangeControls, probes: list[dict[str, Any]], rows: list[WorkloadRow], *, changed: bool
) -> RegistryOutageResult:
    """Watch the primary and switch back (unless planning or told not to), then report; a workload left stuck
    fails the run after the report."""
    detoured = [r for r in rows if r.action in ("switched-to-mirror", "already-on-mirror")]
    recovered: bool | None = None
    if controls.plan:
        for row in detoured if run.request.switch_back else []:
            row.action = "would-switch-back" if row.action == "already-on-mirror" else row.action
    elif run.request.switch_back and detoured:
        recovered = steps.wait_for_primary(run, detoured)
        if recovered:
            changed = switch_back(run, controls, detoured) or changed
    outcome: Outcome = "planned" if controls.plan else "changed" if changed else "unchanged"
    summary = _summary(run, rows, recovered, planned=controls.plan)
    result = _publish(run, _result(run, outcome, summary, probes, rows, recovered))
    if run.failures and not controls.plan:  # a plan only reports: its refusals are in the plan
        raise FallbackIncomplete(
            f"{len(run.failures)} workload(s) stuck on {run.primary} not recovered: " + "; ".join(run.failures)
        )
    return result


def _summary(run: Run, rows: list[WorkloadRow], recovered: bool | None, *, planned: bool) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.action] = counts.get(row.action, 0) + 1
    text = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "no workload stuck"
    if planned:
        return f"plan only: {text}; nothing changed"
    if any(r.action == "switch-back-failed" for r in rows):
        return (
            f"{text}; the nodes still cannot pull from {run.primary} although the worker reaches it, so the "
            "workloads stay on the mirror: run the same request again later to switch back"
        )
    if recovered is False:
        return (
            f"{text}; {run.primary} did not serve the detoured digests again within "
            f"{run.request.recovery_timeout_seconds}s, so they stay on the mirror: run the same request again to "
            "switch back once it does"
        )
    return text


def _result(
    run: Run,
    outcome: Outcome,
    summary: str,
    probes: list[dict[str, Any]],
    rows: list[WorkloadRow],
    recovered: bool | None = None,
) -> RegistryOutageResult:
    return RegistryOutageResult(
        outcome=outcome,
        summary=summary,
        primary=run.primary,
        mirrors=run.mirrors,
        probes=probes,
        workloads=rows,
        primary_recovered=recovered,
        phases={**run.phases, "total": round(time.monotonic() - run.started, 2)},
    )


def _publish(run: Run, result: RegistryOutageResult) -> RegistryOutageResult:
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(result_markdown(result), key=run.key)
    return result
