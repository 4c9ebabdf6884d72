"""The canary-rollout flow on the sandbox: simulated traffic, real Prometheus, real Prefect server approvals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helm_helpers import resume, run_in_thread, wait_paused
from kubernetes import client
from pydantic import ValidationError
from test_progressive_traffic import http_route

from flows.canary_rollout import CanaryRequest, RolloutBusy, RolloutFailed, canary_rollout
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from sandbox.registry import DEMO_REPOSITORY
from tasks.metrics import MetricsUnavailable
from tasks.progressive import RoutingNotFound
from tasks.traffic import GatewayApiRouter, NginxCanaryRouter

CONTROLS = ChangeControls(reason="integration test of the canary runbook", requested_by="pytest")
PROFILE = "podAnnotations.sandbox\\.rollbook\\.dev/profile"


def deploy(sandbox: Sandbox, chart: Path, namespace: str, release: str, tag: str, *extra: str) -> None:
    sandbox.helm(
        "upgrade", release, str(chart), "--install", "-n", namespace, "--wait", "--timeout=60s",
        "--set", f"image.repository={sandbox.cfg.registry_host()}/{DEMO_REPOSITORY}", "--set", f"image.tag={tag}",
        "--set", "replicas=1", *extra,
    )  # fmt: skip


def request(sandbox: Sandbox, demo_chart: Path, namespace: str, **extra: Any) -> CanaryRequest:
    analysis = {
        "interval_seconds": 4,
        "iterations": 1,
        "threshold": 1,
        "step_weights": [25, 50, 100],
        "metrics": [
            {"name": "request-success-rate", "min": 99, "window": "5s"},
            {"name": "request-duration", "max": 500, "window": "5s"},
        ],
        **extra.pop("analysis", {}),
    }
    fields = {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "stable_release": "web",
        "canary_release": "web-next",
        "chart": str(demo_chart),
        "helm_executable": str(sandbox.bins / "helm"),
        "prometheus_url": prometheus_url(sandbox.cfg),
        "analysis": analysis,
        "approval_timeout_seconds": 60,
        **extra,
    }
    return CanaryRequest.model_validate(fields)


@pytest.fixture
def releases(sandbox: Sandbox, demo_chart: Path, namespace: str) -> NginxCanaryRouter:
    deploy(sandbox, demo_chart, namespace, "web", "1.0.0")
    return NginxCanaryRouter(namespace=namespace, stable_ingress="web-demo-app", canary_service="web-next-demo-app")


def weight(sandbox: Sandbox, router: NginxCanaryRouter | GatewayApiRouter) -> int:
    with sandbox.api_client() as api:
        return router.read_weight(api)


def approve_next(action: str = "approve") -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    run = wait_paused()
    resume(run.id, {"action": action, "approver": "alice", "reason": f"pytest says {action}"})
    with get_client(sync_client=True) as prefect:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and prefect.read_flow_run(run.id).state.type == StateType.PAUSED:
            time.sleep(0.3)


def test_healthy_canary_is_promoted_after_two_approvals(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter, apps: client.AppsV1Api
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    req = request(sandbox, demo_chart, namespace)
    thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=CONTROLS))
    approve_next()  # before 100%
    assert weight(sandbox, releases) == 100 or thread.is_alive()
    approve_next()  # before promotion
    thread.join(120)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result["outcome"] == "promoted" and result["version"] == "1.1.0"
    assert [s["weight"] for s in result["evidence"]["steps"]] == [25, 50, 100]
    assert [a["action"] for a in result["evidence"]["approvals"]] == ["approve", "approve"]
    assert result["evidence"]["approvals"][0]["reason"] == "alice: pytest says approve"
    image = apps.read_namespaced_deployment("web-demo-app", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":1.1.0")
    net = client.NetworkingV1Api(sandbox.api_client())
    assert [i.metadata.name for i in net.list_namespaced_ingress(namespace).items] == ["web-demo-app"]


@pytest.mark.parametrize("router", ["nginx", "gateway-api"])
def test_errors_from_50_roll_back_at_50_and_never_reach_75(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter, router: str
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false",
           "--set", f"{PROFILE}=errors-from-50")  # fmt: skip
    extra: dict[str, Any] = {}
    check: NginxCanaryRouter | GatewayApiRouter = releases
    if router == "gateway-api":
        http_route(sandbox, namespace, "web", "web-demo-app")
        extra = {"router": "gateway-api", "http_route": "web"}
        check = GatewayApiRouter(
            namespace=namespace, http_route="web", stable_service="web-demo-app", canary_service="web-next-demo-app"
        )
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [25, 50, 75, 100]}, **extra)
    with pytest.raises(RolloutFailed) as failed:
        canary_rollout(request=req, controls=CONTROLS)
    message = str(failed.value)
    assert "failed analyses at 50%" in message
    assert "| 25% | 1 | request-success-rate |" in message and "| 75%" not in message
    assert weight(sandbox, check) == 0
    if router == "gateway-api":  # the stable Ingress was never touched and no canary Ingress was made
        names = [
            i.metadata.name
            for i in client.NetworkingV1Api(sandbox.api_client()).list_namespaced_ingress(namespace).items
        ]
        assert names == ["web-demo-app"]


def test_slow_canary_fails_latency_and_rejection_or_timeout_reverts(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false",
           "--set", f"{PROFILE}=slow")  # fmt: skip
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [50, 100]})
    with pytest.raises(RolloutFailed, match="failed analyses at 50%") as failed:
        canary_rollout(request=req, controls=CONTROLS)
    assert "request-duration" in str(failed.value) and "above max 500" in str(failed.value)
    assert weight(sandbox, releases) == 0

    # a healthy version whose last step is rejected goes back to stable
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false",
           "--set", f"{PROFILE}=healthy")  # fmt: skip
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [30, 100]})
    thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=CONTROLS))
    approve_next("reject")
    thread.join(60)
    assert isinstance(out.get("error"), RolloutFailed) and "rejected" in str(out["error"])
    assert weight(sandbox, releases) == 0

    # no answer before the timeout: the default safe choice reverts
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [30, 100]}, approval_timeout_seconds=5)
    with pytest.raises(RolloutFailed, match="rejected or timed out"):
        canary_rollout(request=req, controls=CONTROLS)
    assert weight(sandbox, releases) == 0


def test_killed_run_restarts_from_the_cluster_weight_and_timeout_holds(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter, child_env: dict[str, str]
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    req = request(
        sandbox,
        demo_chart,
        namespace,
        analysis={"step_weights": [25, 50, 75], "interval_seconds": 30},
        approval_timeout_seconds=5,
        on_approval_timeout="hold",
        promote=False,
    )
    script = (
        "import sys; from flows.canary_rollout import *; from rollbook.change import ChangeControls; "
        "canary_rollout(request=CanaryRequest.model_validate_json(sys.argv[1]), "
        "controls=ChangeControls.model_validate_json(sys.argv[2]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, req.model_dump_json(), CONTROLS.model_dump_json()],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while weight(sandbox, releases) < 25 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert weight(sandbox, releases) == 25, "the first run never shifted"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mid-analysis at 25%
        proc.wait(10)
    # the dead run still holds the app's lock: a restart is refused, clearly, until the lease expires or an
    # operator releases it
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with pytest.raises(RolloutBusy, match="active-slots 0"):
        canary_rollout(request=req, controls=CONTROLS)
    with get_client(sync_client=True) as prefect:
        prefect.update_global_concurrency_limit(
            f"rollout-{namespace}-web", GlobalConcurrencyLimitUpdate(active_slots=0)
        )
    fast = req.model_copy(update={"analysis": req.analysis.model_copy(update={"interval_seconds": 4})})
    result = canary_rollout(request=fast, controls=CONTROLS)
    assert result["steps"] == [25, 50, 75]  # 25 is analysed again (not shifted again), then 50; 75 is gated
    assert [s["weight"] for s in result["evidence"]["steps"]] == [25, 50]
    assert result["outcome"] == "held" and result["weight"] == 50  # the gate before 75% timed out: keep 50
    assert weight(sandbox, releases) == 50


def test_bad_input_and_plan_change_nothing(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    for steps, match in (([50, 25], "strictly increasing"), ([10, 101], "from 1 to 100"), ([0, 50], "from 1 to 100")):
        with pytest.raises(ValidationError, match=match):
            request(sandbox, demo_chart, namespace, analysis={"step_weights": steps})
    with pytest.raises(RoutingNotFound, match="release 'nope'"):
        canary_rollout(request=request(sandbox, demo_chart, namespace, canary_release="nope"), controls=CONTROLS)
    with pytest.raises(MetricsUnavailable, match="unreachable"):
        canary_rollout(
            request=request(sandbox, demo_chart, namespace, prometheus_url="http://127.0.0.1:9"), controls=CONTROLS
        )
    hook = {"name": "smoke", "type": "pre-rollout", "url": "http://127.0.0.1:9/smoke", "timeout_seconds": 2}
    with pytest.raises(RolloutFailed, match="pre-rollout webhook failed"):
        canary_rollout(
            request=request(sandbox, demo_chart, namespace, analysis={"webhooks": [hook]}), controls=CONTROLS
        )
    # a second rollout of the same application is refused while the first holds the lock
    from prefect.concurrency.sync import concurrency

    from flows.canary_rollout import RolloutBusy, _lock_free

    lock = f"rollout-{namespace}-web"
    assert _lock_free(lock)
    with concurrency(lock, occupy=1, strict=True):
        with pytest.raises(RolloutBusy, match="another progressive rollout of 'web'"):
            canary_rollout(request=request(sandbox, demo_chart, namespace), controls=CONTROLS)
    plan = canary_rollout(
        request=request(sandbox, demo_chart, namespace), controls=CONTROLS.model_copy(update={"plan": True})
    )
    assert plan["outcome"] == "planned" and plan["steps"] == [25, 50, 100]
    net = client.NetworkingV1Api(sandbox.api_client())
    assert [i.metadata.name for i in net.list_namespaced_ingress(namespace).items] == ["web-demo-app"]
