"""Runbook: blue/green with progressive traffic shift, metric gates and approvals, on two Helm releases.

Green (the new version) is installed beside blue with `helm --wait` and no Ingress of its own, so it gets 0%.
It must have every pod Ready and pass an acceptance check (an HTTP call or a command) before any traffic moves.
Traffic then shifts through the steps with the canary-rollout flow's analysis (checks every `interval_seconds`
for `window_seconds` at each step; `threshold` failed checks revert to blue). Approvals come before 100% and
before blue is retired. Finish: green gets the Ingress, blue loses it, the canary route goes (with the Gateway
API router the HTTPRoute sends to green only), Deployments are labelled active/retired, and blue is uninstalled
now or by a follow-up run after `keep_blue_seconds`. The application's rollout lock is held from before green is
installed to the end, so no other blue/green or canary run of the same app can interleave.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from typing import Any, Literal, Self

import httpx
from prefect import flow, get_run_logger, pause_flow_run, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from pydantic import Field, HttpUrl, model_validator

from flows._cluster_source import DNS_LABEL, RELEASE_NAME
from flows._traffic_source import TrafficSource
from flows.canary_rollout import (
    CanaryAnalysis,
    CanaryRequest,
    RolloutDecision,
    RolloutFailed,
    _default_metrics,
    canary_rollout,
)
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations
from rollbook.rollout_lock import rollout_lock
from tasks.cluster import resolve_cluster
from tasks.helm import (
    annotate_release_deployments,
    release_pods_ready,
    release_status,
    revision_details,
    upgrade_release,
)
from tasks.metrics import MetricCheck, check_prometheus, resolve_prometheus
from tasks.progressive import (
    ReleaseRouting,
    RoutingNotFound,
    label_release_deployments,
    release_routing,
    uninstall_release,
)
from tasks.traffic import hand_over_route, make_router, reset_route
from tasks.webhooks import Webhook

ACTION = "blue-green"
ROLE_LABEL = "rollbook.dev/role"
RETIRE_DEPLOYMENT = "blue-green-retire/blue-green-retire"


class BlueGreenRequest(TrafficSource):
    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    blue_release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Serves users now.")
    green_release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Installed by the run.")
    chart: str = Field(min_length=1, description="Chart of blue (path or reference); green uses the same.")
    version: str = Field(min_length=1, max_length=128, description="Image tag green runs.")
    green_values: dict[str, Any] = Field(default_factory=dict, description="Extra values for green only.")
    helm_executable: str = Field(default="helm", min_length=1)
    timeout_seconds: int = Field(default=300, ge=10, le=3600, description="helm --wait timeout.")
    steps: list[int] = Field(default_factory=lambda: [10, 25, 50, 75, 100], description="Weights; must end at 100.")
    interval_seconds: int = Field(default=30, ge=1, le=3600, description="Time between two checks at a step.")
    window_seconds: int = Field(default=120, ge=1, le=24 * 3600, description="How long each step is observed.")
    threshold: int = Field(default=3, ge=1, le=100, description="Failed checks (in total) that revert to blue.")
    metrics: list[MetricCheck] = Field(default_factory=_default_metrics, min_length=1)
    webhooks: list[Webhook] = Field(default_factory=list)
    acceptance_url: HttpUrl | None = Field(default=None, description="GET that must answer 2xx before any shift.")
    acceptance_command: list[str] | None = Field(default=None, description="Command that must exit 0 before any shift.")
    acceptance_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    approval_timeout_seconds: int = Field(default=3600, ge=5, le=7 * 24 * 3600)
    on_approval_timeout: Literal["revert", "hold"] = "revert"
    keep_blue_seconds: int = Field(default=0, ge=0, le=30 * 24 * 3600, description="0: uninstall blue at the end.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        self.analysis()  # step checks
        if self.steps[-1] != 100:
            raise ValueError(f"blue/green steps must end at 100, got {self.steps}")
        if self.blue_release == self.green_release:
            raise ValueError("blue_release and green_release must differ")
        return self

    def analysis(self) -> CanaryAnalysis:
        return CanaryAnalysis(
            interval_seconds=self.interval_seconds,
            iterations=max(1, self.window_seconds // self.interval_seconds),
            threshold=self.threshold,
            step_weights=self.steps,
            metrics=self.metrics,
            webhooks=self.webhooks,
        )


@task(timeout_seconds=3700)
def acceptance_check(url: str | None, command: list[str] | None, timeout_seconds: int) -> str:
    """Raise with the reason unless the HTTP call answers 2xx and the command exits 0."""
    done = []
    if url:
        resp = httpx.get(url, timeout=timeout_seconds)
        if not 200 <= resp.status_code < 300:
            raise RolloutFailed(f"acceptance call {url} answered HTTP {resp.status_code}")
        done.append(f"GET {url}: HTTP {resp.status_code}")
    if command:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_seconds, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise RolloutFailed(f"acceptance command {command} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        done.append(f"{' '.join(command)}: exit 0")
    return "; ".join(done) or "no acceptance check configured"


@flow(name="blue-green")
def blue_green(request: BlueGreenRequest, controls: ChangeControls) -> dict[str, Any]:
    """Install green at 0%, check it, shift traffic in gated steps, then retire blue."""
    log = get_run_logger()
    ns = request.namespace
    key = artifact_key(ACTION, ns, request.blue_release)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    blue = release_routing(cluster, ns, request.blue_release)
    if request.router == "nginx" and blue.ingress is None:
        raise ValueError(f"blue release {request.blue_release!r} has no Ingress to split traffic from")
    try:
        green_before = release_routing(cluster, ns, request.green_release)
    except RoutingNotFound:
        green_before = None
    if green_before is not None and green_before.version != request.version:
        raise ValueError(
            f"release {request.green_release!r} already runs {green_before.version}, not {request.version}; "
            "uninstall it or pick another green_release"
        )
    prometheus = resolve_prometheus(request.prometheus_block, request.prometheus_url)
    check_prometheus(prometheus)  # unreachable metrics: fail before installing anything
    keep = f"kept {request.keep_blue_seconds}s, then uninstalled" if request.keep_blue_seconds else "uninstalled"
    plan = "\n".join(
        [
            f"## Blue/green `{request.blue_release}` ({blue.version}) → `{request.green_release}` ({request.version})",
            "",
            f"- green: {'already installed' if green_before else 'helm install --wait'} beside blue at 0%; "
            f"traffic by {request.router}" + (f" (HTTPRoute `{request.http_route}`)" if request.http_route else ""),
            f"- health: pods Ready; acceptance: {request.acceptance_url or ''} {request.acceptance_command or ''}",
            f"- steps {request.steps}; checks every {request.interval_seconds}s for {request.window_seconds}s "
            f"per step; revert to blue after {request.threshold} failed checks",
            "- approvals before 100% and before retiring blue; no answer: " + request.on_approval_timeout,
            f"- finish: green takes the {'route and the ' if request.http_route else ''}Ingress; blue {keep}",
        ]
    )
    if controls.plan:
        create_markdown_artifact("# Plan (nothing changed)\n\n" + plan, key=key, description="blue/green plan")
        log.info("plan only: nothing changed\n%s", plan)
        return {"outcome": "planned", "plan": plan}

    # one lock over the whole change (install, shift, retire); the canary-rollout subflow re-enters it
    with rollout_lock(ns, request.blue_release, request.lock_timeout_seconds):
        return _deliver(request, controls, cluster, blue, green_before is None, plan, key)


def _deliver(
    request: BlueGreenRequest,
    controls: ChangeControls,
    cluster: Any,
    blue: ReleaseRouting,
    install: bool,
    plan: str,
    key: str,
) -> dict[str, Any]:
    """Install and check green, shift traffic with analysis, then hand over and retire blue (under the lock)."""
    log = get_run_logger()
    ns, helm = request.namespace, request.helm_executable
    blue_status = release_status(cluster, ns, request.blue_release, helm)
    blue_values = revision_details(cluster, ns, request.blue_release, blue_status.revision, helm).values
    if install:
        values = _merge(
            blue_values,
            {"image": {"tag": request.version}, "track": "green", "ingress": {"enabled": False}},
            request.green_values,
        )
        installed = upgrade_release(
            cluster, ns, request.green_release, request.chart, values, f"rollbook blue/green: green {request.version}",
            None, True, request.timeout_seconds, helm,
        )  # fmt: skip
        if not installed.succeeded:
            raise RolloutFailed(f"green install failed (no traffic moved): {installed.helm_error}")
    pods = release_pods_ready(cluster, ns, request.green_release, 30)
    if not pods.all_ready:
        raise RolloutFailed(f"green is not Ready (no traffic moved): {'; '.join(pods.problems)}")
    accepted = acceptance_check(
        str(request.acceptance_url) if request.acceptance_url else None,
        request.acceptance_command,
        request.acceptance_timeout_seconds,
    )
    log.info("green accepted: %s", accepted)
    green = release_routing(cluster, ns, request.green_release)
    change = change_annotations(controls, ACTION, **{"green": request.green_release, "version": request.version})
    router = make_router(request.router, ns, blue.service, green.service, blue.ingress, request.http_route, change)

    shifted = canary_rollout(
        request=CanaryRequest(
            cluster_block=request.cluster_block,
            kubeconfig_path=request.kubeconfig_path,
            context=request.context,
            namespace=ns,
            stable_release=request.blue_release,
            canary_release=request.green_release,
            chart=request.chart,
            helm_executable=helm,
            prometheus_url=request.prometheus_url,
            prometheus_block=request.prometheus_block,
            analysis=request.analysis(),
            approve_before_final_step=True,
            promote=False,
            approval_timeout_seconds=request.approval_timeout_seconds,
            on_approval_timeout=request.on_approval_timeout,
            router=request.router,
            http_route=request.http_route,
            lock_timeout_seconds=request.lock_timeout_seconds,
        ),
        controls=controls,
    )
    result: dict[str, Any] = {"green": request.green_release, "version": request.version, "shift": shifted}
    if shifted["outcome"] != "completed":
        return {**result, "outcome": shifted["outcome"]}

    answer, reason = _ask("retire blue", request, shifted)
    result["retire_approval"] = {"action": answer, "reason": reason}
    if answer == "hold":
        return {**result, "outcome": "held"}
    if answer != "approve":
        reset_route(cluster, router)
        create_markdown_artifact(f"# Reverted to blue: retiring blue was not approved ({reason})", key=key)
        raise RolloutFailed(f"retiring blue not approved ({reason}); all traffic is back on blue")

    green_status = release_status(cluster, ns, request.green_release, helm)
    green_values = revision_details(cluster, ns, request.green_release, green_status.revision, helm).values
    moves = (
        (request.green_release, _merge(green_values, {"ingress": {"enabled": True}}), green_status.revision),
        (request.blue_release, _merge(blue_values, {"ingress": {"enabled": False}}), blue_status.revision),
    )
    for release, values, live in moves if blue.ingress else ():  # a route-only app has no Ingress to move
        outcome = upgrade_release(
            cluster, ns, release, request.chart, values, "rollbook blue/green: move the Ingress", live, False,
            request.timeout_seconds, helm,
        )  # fmt: skip
        if not outcome.succeeded:
            raise RolloutFailed(
                f"moving the Ingress failed at {release!r}: {outcome.helm_error}. Green still serves 100% through "
                "the canary route and blue is kept; fix the cause, then move the Ingress with helm and uninstall blue"
            )
    hand_over_route(cluster, router)  # nginx: the canary Ingress goes; Gateway API: the route sends to green only
    label_release_deployments(cluster, ns, request.green_release, {ROLE_LABEL: "active"})
    label_release_deployments(cluster, ns, request.blue_release, {ROLE_LABEL: "retired"})
    annotate_release_deployments(
        cluster, ns, request.green_release, change_annotations(controls, ACTION, **{"replaced": request.blue_release})
    )
    if request.keep_blue_seconds == 0:
        result["blue"] = "uninstalled" if uninstall_release(cluster, ns, request.blue_release, helm) else "gone"
    else:
        result["blue"] = _schedule_retire(request)
    create_markdown_artifact(
        f"# Blue/green done: `{request.green_release}` ({request.version}) is live\n\n- blue: {result['blue']}\n"
        f"- approvals: {shifted['evidence']['approvals'] if 'evidence' in shifted else '-'}; retire: {answer} "
        f"({reason})\n\n" + plan,
        key=key,
    )
    return {**result, "outcome": "switched"}


def _ask(gate: str, request: BlueGreenRequest, shifted: dict[str, Any]) -> tuple[str, str]:
    form = RolloutDecision.with_initial_data(
        description=f"## Gate: {gate}\n\nGreen serves 100%. Steps: {shifted.get('steps')}", action="hold"
    )
    try:
        decision = pause_flow_run(wait_for_input=form, timeout=request.approval_timeout_seconds, poll_interval=2)
    except FlowPauseTimeout:
        return ("reject" if request.on_approval_timeout == "revert" else "hold"), "no answer in time"
    return decision.action, f"{decision.approver or 'unnamed approver'}: {decision.reason or '-'}"


def _schedule_retire(request: BlueGreenRequest) -> str:
    """A follow-up run of the blue-green-retire deployment after the keep window; said plainly if it cannot be."""
    from prefect.deployments import run_deployment

    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.keep_blue_seconds)
    params = {
        "namespace": request.namespace,
        "release": request.blue_release,
        "kubeconfig_path": request.kubeconfig_path,
        "cluster_block": request.cluster_block,
        "context": request.context,
        "helm_executable": request.helm_executable,
    }
    try:
        run = run_deployment(RETIRE_DEPLOYMENT, parameters=params, scheduled_time=when, timeout=0)
    except Exception as exc:  # no such deployment on this server: keep blue and say how to retire it
        get_run_logger().warning("could not schedule %s: %s; blue is kept", RETIRE_DEPLOYMENT, exc)
        return f"kept; NOT scheduled for removal ({RETIRE_DEPLOYMENT} unavailable: {exc})"
    return f"kept until {when:%Y-%m-%d %H:%M:%S}Z (follow-up run {getattr(run, 'id', run)})"


@flow(name="blue-green-retire")
def blue_green_retire(
    namespace: str,
    release: str,
    kubeconfig_path: str | None = None,
    cluster_block: str | None = None,
    context: str | None = None,
    helm_executable: str = "helm",
) -> bool:
    """Uninstall a retired blue release (the follow-up run a blue/green switch schedules)."""
    cluster = resolve_cluster(cluster_block, kubeconfig_path, context)
    return uninstall_release(cluster, namespace, release, helm_executable)


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
