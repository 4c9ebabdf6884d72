"""The canary-rollout flow on the sandbox: simulated traffic, real Prometheus, real Prefect server approvals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from helm_helpers import resume, run_in_thread, wait_paused
from http_helpers import TcpProxy, hook_recorder
from kubernetes import client
from pydantic import ValidationError
from test_progressive_traffic import deploy, http_route

from flows.canary_rollout import CanaryRequest, CanaryReverted, RolloutBusy, RolloutStopped, canary_rollout
from flows.predeploy_checklist import ChecklistFailed
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from sandbox.registry import SandboxRegistries
from tasks.metrics.providers import MetricsUnavailable
from tasks.progressive import RoutingNotFound
from tasks.routers.gateway_api import GatewayApiRouter
from tasks.routers.nginx import NginxCanaryRouter

CONTROLS = ChangeControls(reason="integration test of the canary runbook", requested_by="pytest")
PROFILE = "podAnnotations.sandbox\\.rollbook\\.dev/profile"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


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
        "run_checklist": False,  # the checklist gate has its own test
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


def answer_next(run_input: dict[str, Any]) -> None:
    """Answer the one paused run's form, then wait until it runs again."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    run = wait_paused()
    resume(run.id, run_input)
    with get_client(sync_client=True) as prefect:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and prefect.read_flow_run(run.id).state.type == StateType.PAUSED:
            time.sleep(0.3)


def approve_next(action: str = "approve") -> None:
    """Answer a traffic gate (approve, reject or hold)."""
    answer_next({"action": action, "approver": "alice", "reason": f"pytest says {action}"})


def answer_plan(approved: bool, comment: str) -> None:
    """Answer the approval of the whole plan that `controls.require_approval` asks for."""
    answer_next({"approved": approved, "approver": "pytest", "comment": comment})


def canary_ingress(sandbox: Sandbox, namespace: str, name: str = "web-demo-app-canary") -> Any:
    """The canary Ingress as the API server stores it: what the data plane serves, read without router code."""
    return client.NetworkingV1Api(sandbox.api_client()).read_namespaced_ingress(name, namespace)


def ingresses(sandbox: Sandbox, namespace: str) -> list[str]:
    return [
        i.metadata.name for i in client.NetworkingV1Api(sandbox.api_client()).list_namespaced_ingress(namespace).items
    ]


def test_healthy_canary_is_promoted_after_two_approvals(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter, apps: client.AppsV1Api
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    with hook_recorder() as hooks:  # a real HTTP server: every phase's webhook, in the order the flow calls them
        phases = ["pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback"]
        req = request(sandbox, demo_chart, namespace, analysis={"webhooks": [hooks.hook(p) for p in phases]})
        thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=CONTROLS))
        approve_next()  # before 100%
        wait_paused()  # the gate before promotion: the analysis at 100% passed, so the cluster serves 100% now
        served = canary_ingress(sandbox, namespace)
        assert served.metadata.annotations[CANARY_WEIGHT] == "100"
        assert served.spec.rules[0].http.paths[0].backend.service.name == "web-next-demo-app"
        assert served.metadata.annotations["rollbook.dev/reason"] == CONTROLS.reason
        approve_next()  # before promotion
        thread.join(120)
        calls = list(hooks.calls)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert [(path, body["phase"], body.get("weight")) for path, body in calls] == [
        ("/pre-rollout", "pre-rollout", None),
        ("/rollout", "rollout", 25),
        ("/rollout", "rollout", 50),
        ("/rollout", "rollout", 100),
        ("/confirm-promotion", "confirm-promotion", None),
        ("/post-rollout", "post-rollout", None),
    ]  # no rollback call on a healthy rollout
    for _, body in calls:
        assert body["name"] == "web-next" and body["namespace"] == namespace and body["version"] == "1.1.0"
        assert body["metadata"] == {"test": "recorder"}
    assert [w.type for w in result.evidence.webhooks] == ["pre-rollout", "confirm-promotion", "post-rollout"]
    assert (result.outcome, result.stage, result.canary.version) == ("changed", "promoted", "1.1.0")
    assert [s.weight for s in result.evidence.steps] == [25, 50, 100]
    assert [(a.action, a.by, a.reason) for a in result.evidence.approvals] == [
        ("approve", "alice", "pytest says approve")
    ] * 2
    # what the cluster serves after promotion: the stable Ingress alone, to the stable Service, whose Deployment
    # now runs the canary's image and says who promoted it and why
    assert ingresses(sandbox, namespace) == ["web-demo-app"]
    stable_ingress = client.NetworkingV1Api(sandbox.api_client()).read_namespaced_ingress("web-demo-app", namespace)
    assert stable_ingress.spec.rules[0].http.paths[0].backend.service.name == "web-demo-app"
    assert CANARY_WEIGHT not in (stable_ingress.metadata.annotations or {})
    stable = apps.read_namespaced_deployment("web-demo-app", namespace)
    assert stable.spec.template.spec.containers[0].image.endswith(":1.1.0")
    assert stable.metadata.annotations["rollbook.dev/reason"] == CONTROLS.reason
    assert stable.metadata.annotations["rollbook.dev/promoted-version"] == "1.1.0"
    assert result.weight == 0 and weight(sandbox, releases) == 0
    # the canary release served its purpose: uninstalled after promotion (its Deployment and Service are gone)
    assert result.canary_release == "uninstalled"
    assert helm_releases(sandbox, namespace) == ["web"]
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == ["web-demo-app"]


def helm_releases(sandbox: Sandbox, namespace: str) -> list[str]:
    return sorted(r["name"] for r in json.loads(sandbox.helm("list", "-n", namespace, "-o", "json").stdout))


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
    with hook_recorder() as hooks:
        webhooks = [hooks.hook("rollout"), hooks.hook("rollback"), hooks.hook("post-rollout")]
        req = request(
            sandbox, demo_chart, namespace, analysis={"step_weights": [25, 50, 75, 100], "webhooks": webhooks}, **extra
        )
        with pytest.raises(CanaryReverted) as failed:
            canary_rollout(request=req, controls=CONTROLS)
        calls = list(hooks.calls)
    # the failing rollout called the rollback webhook once, after the steps, with the reason
    assert [(body["phase"], body.get("weight")) for _, body in calls] == [
        ("rollout", 25),
        ("rollout", 50),
        ("rollback", None),
    ]
    assert "failed analyses at 50%" in calls[-1][1]["reason"] and calls[-1][1]["version"] == "1.1.0"
    message = str(failed.value)
    assert "failed analyses at 50%" in message
    assert "| 25% | 1 | request-success-rate |" in message and "| 75%" not in message
    assert weight(sandbox, check) == 0
    networking = client.NetworkingV1Api(sandbox.api_client())
    if router == "gateway-api":  # the stable Ingress was never touched and no canary Ingress was made
        assert [i.metadata.name for i in networking.list_namespaced_ingress(namespace).items] == ["web-demo-app"]
        changed: Any = client.CustomObjectsApi(sandbox.api_client()).get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", "web"
        )
        notes = changed["metadata"]["annotations"]
    else:
        notes = networking.read_namespaced_ingress("web-demo-app-canary", namespace).metadata.annotations
    # every weight change says who asked, why, and which flow run made it
    assert notes["rollbook.dev/action"] == "canary-rollout" and notes["rollbook.dev/canary"] == "web-next"
    assert notes["rollbook.dev/requested-by"] == CONTROLS.requested_by and notes["rollbook.dev/flow-run-id"]


def test_slow_canary_fails_latency_and_rejection_or_timeout_reverts(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false",
           "--set", f"{PROFILE}=slow")  # fmt: skip
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [50, 100]})
    with pytest.raises(CanaryReverted, match="failed analyses at 50%") as failed:
        canary_rollout(request=req, controls=CONTROLS)
    assert "request-duration" in str(failed.value) and "above max 500" in str(failed.value)
    assert weight(sandbox, releases) == 0

    # a healthy version whose last step is rejected goes back to stable: the run did what the approver asked
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false",
           "--set", f"{PROFILE}=healthy")  # fmt: skip
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [30, 100]})
    thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=CONTROLS))
    approve_next("reject")
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert (out["result"].outcome, out["result"].stage) == ("reverted", "reverted")
    assert "rejected" in out["result"].summary
    assert canary_ingress(sandbox, namespace).metadata.annotations[CANARY_WEIGHT] == "0"

    # no answer before the timeout: the default safe choice reverts
    req = request(sandbox, demo_chart, namespace, analysis={"step_weights": [30, 100]}, approval_timeout_seconds=5)
    result = canary_rollout(request=req, controls=CONTROLS)
    assert result.outcome == "reverted" and result.evidence.approvals[-1].action == "timeout → revert"
    assert canary_ingress(sandbox, namespace).metadata.annotations[CANARY_WEIGHT] == "0"


def wait_weight(sandbox: Sandbox, router: NginxCanaryRouter, wanted: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while weight(sandbox, router) != wanted and time.monotonic() < deadline:
        time.sleep(0.3)
    assert weight(sandbox, router) == wanted, f"the canary never served {wanted}%"


def test_prometheus_lost_mid_rollout_reverts_and_unexpected_errors_revert(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    real = urlparse(prometheus_url(sandbox.cfg))
    proxy = TcpProxy((str(real.hostname), int(real.port or 80)))
    with hook_recorder() as hooks:
        req = request(
            sandbox, demo_chart, namespace, prometheus_url=proxy.url, analysis={"webhooks": [hooks.hook("rollback")]}
        )
        try:
            thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=CONTROLS))
            wait_weight(sandbox, releases, 50)  # the analysis at 25% passed through the proxy
        finally:
            proxy.stop()  # Prometheus goes away before the analysis at 50%
        thread.join(120)
        error = out.get("error")
        assert isinstance(error, CanaryReverted), out
        message = str(error)
        assert "1 failed analyses at 50%" in message and "traffic reverted to stable" in message
        assert "Prometheus could not be queried: prometheus unreachable at " + proxy.url in message
        assert "| 25% | 1 | request-success-rate |" in message  # the evidence before the loss is kept
        assert weight(sandbox, releases) == 0
        assert hooks.phases() == ["rollback"]

    # any other error once traffic has moved (here a crash injected into the analysis task) sends traffic back
    # to stable before the run fails with the original error
    def crash(*args: Any, **kwargs: Any) -> Any:
        assert weight(sandbox, releases) == 25  # traffic really moved before the crash
        raise RuntimeError("injected crash in the analysis")

    monkeypatch.setattr(sys.modules["flows._canary_steps"], "run_checks", crash)  # the module, not the flow
    with pytest.raises(RuntimeError, match="injected crash") as crashed:
        canary_rollout(request=request(sandbox, demo_chart, namespace), controls=CONTROLS)
    assert "traffic was reverted to stable (weight 0)" in " ".join(getattr(crashed.value, "__notes__", []))
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
    # the dead run still holds the app's lock: a restart is refused, clearly, until the Lease expires or an
    # operator releases it with the command the refusal names
    with pytest.raises(
        RolloutBusy, match=f"frees itself in [0-9]+s, .*kubectl delete lease rollbook-rollout-web -n {namespace}"
    ):
        canary_rollout(request=req, controls=CONTROLS)
    sandbox.kubectl("delete", "lease", "rollbook-rollout-web", "-n", namespace)
    fast = req.model_copy(update={"analysis": req.analysis.model_copy(update={"interval_seconds": 4})})
    result = canary_rollout(request=fast, controls=CONTROLS)
    assert result.steps == [25, 50, 75]  # 25 is analysed again (not shifted again), then 50; 75 is gated
    assert [s.weight for s in result.evidence.steps] == [25, 50]
    assert result.stage == "held" and result.weight == 50  # the gate before 75% timed out: keep 50
    assert result.outcome == "changed"  # this run moved the weight from 25 to 50
    assert canary_ingress(sandbox, namespace).metadata.annotations[CANARY_WEIGHT] == "50"


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
    with pytest.raises(RolloutStopped, match="pre-rollout webhook failed"):
        canary_rollout(
            request=request(sandbox, demo_chart, namespace, analysis={"webhooks": [hook]}), controls=CONTROLS
        )
    # a second rollout of the same application is refused while another run holds the lock (its Lease)
    from tasks.cluster import resolve_cluster
    from tasks.rollout_lock import acquire_rollout_lock, release_rollout_lock

    cluster = resolve_cluster(None, str(sandbox.cfg.kubeconfig), None)
    acquire_rollout_lock.fn(cluster, namespace, "web", "other-run/123")
    with pytest.raises(RolloutBusy, match="another progressive rollout of 'web'.*holder 'other-run/123'"):
        canary_rollout(request=request(sandbox, demo_chart, namespace), controls=CONTROLS)
    assert release_rollout_lock.fn(cluster, namespace, "web", "other-run/123")
    plan = canary_rollout(
        request=request(sandbox, demo_chart, namespace), controls=CONTROLS.model_copy(update={"plan": True})
    )
    assert plan.outcome == "planned" and plan.steps == [25, 50, 100] and plan.weight == 0
    assert "canary Ingress `web-demo-app-canary`" in plan.plan and "helm uninstall `web-next`" in plan.plan
    assert ingresses(sandbox, namespace) == ["web-demo-app"]


def test_one_failed_analysis_is_tolerated_and_sustained_errors_revert(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    # 1.2.0 answers 5xx on a share of requests: with threshold 2 and 2 analyses per step, the first failure
    # holds the weight at 25% and the second sends everything back to stable
    deploy(sandbox, demo_chart, namespace, "web-next", "1.2.0", "--set", "ingress.enabled=false")
    unattended = {"approve_before_final_step": False, "promote": False}
    sustained = {"iterations": 2, "threshold": 2, "step_weights": [25, 50]}
    with pytest.raises(CanaryReverted, match=r"2 failed analyses at 25% \(threshold 2\)") as failed:
        canary_rollout(
            request=request(sandbox, demo_chart, namespace, analysis=sustained, **unattended), controls=CONTROLS
        )
    assert "| 25% | 1 | request-success-rate |" in str(failed.value)
    assert "| 25% | 2 | request-success-rate |" in str(failed.value) and "| 50%" not in str(failed.value)
    assert canary_ingress(sandbox, namespace).metadata.annotations[CANARY_WEIGHT] == "0"

    # a healthy version whose first analysis fails once (the step webhook answers 500 once): tolerated, the
    # step needs two passes, and the rollout goes on to 50%
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    with hook_recorder() as hooks:
        blip = {**sustained, "webhooks": [hooks.hook("rollout", fail_first=1)]}
        result = canary_rollout(
            request=request(sandbox, demo_chart, namespace, analysis=blip, **unattended), controls=CONTROLS
        )
    assert [(s.weight, s.attempt, s.passed) for s in result.evidence.steps] == [
        (25, 1, False),
        (25, 2, True),
        (25, 3, True),
        (50, 1, True),
        (50, 2, True),
    ]
    assert all(c.passed for s in result.evidence.steps for c in s.checks)  # only the webhook blipped
    assert (result.outcome, result.stage, result.weight) == ("changed", "shifted", 50)
    assert canary_ingress(sandbox, namespace).metadata.annotations[CANARY_WEIGHT] == "50"


def test_plan_approval_rejected_changes_nothing_and_approved_runs(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    req = request(
        sandbox, demo_chart, namespace, analysis={"step_weights": [100]}, approve_before_final_step=False, promote=False
    )
    thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=controls))
    answer_plan(False, "not during the sale")
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert (out["result"].outcome, out["result"].approval) == ("not-approved", "not during the sale")
    assert ingresses(sandbox, namespace) == ["web-demo-app"]  # no canary route was made

    thread, out = run_in_thread(lambda: canary_rollout(request=req, controls=controls))
    answer_plan(True, "go ahead")
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert (out["result"].outcome, out["result"].stage, out["result"].approval) == ("changed", "shifted", "go ahead")
    served = canary_ingress(sandbox, namespace).metadata.annotations
    assert served[CANARY_WEIGHT] == "100"
    assert served["rollbook.dev/reason"] == controls.reason and served["rollbook.dev/requested-by"] == "pytest"


def test_checklist_gate_stops_on_a_failed_verdict_and_passes_a_ready_one(
    sandbox: Sandbox, demo_chart: Path, namespace: str, releases: NginxCanaryRouter
) -> None:
    deploy(sandbox, demo_chart, namespace, "web-next", "1.1.0", "--set", "ingress.enabled=false")
    before = json.loads(sandbox.helm("history", "web", "-n", namespace, "-o", "json").stdout)
    # no cosign key given: the required signature check cannot pass, so the verdict is NOT READY
    req = request(
        sandbox, demo_chart, namespace, run_checklist=True, checklist={"policy": {"skip": ["vulnerabilities"]}}
    )
    with pytest.raises(ChecklistFailed, match="NOT READY.*image-signature"):
        canary_rollout(request=req, controls=CONTROLS)
    assert ingresses(sandbox, namespace) == ["web-demo-app"]  # no canary route, no weight
    assert json.loads(sandbox.helm("history", "web", "-n", namespace, "-o", "json").stdout) == before
    assert helm_releases(sandbox, namespace) == ["web", "web-next"]
    # with the sandbox's signing key the promotion (stable with the canary's image) is READY, and the plan says so
    key = str(SandboxRegistries(sandbox.cfg, sandbox.bins).public_key)
    options = {"policy": {"skip": ["vulnerabilities"]}, "cosign_public_key": key}
    ready = request(sandbox, demo_chart, namespace, run_checklist=True, checklist=options)
    plan = canary_rollout(request=ready, controls=CONTROLS.model_copy(update={"plan": True}))
    assert plan.outcome == "planned" and plan.checklist.startswith("READY"), plan.checklist
    assert f"pre-deploy checklist: {plan.checklist}" in plan.plan
    assert ingresses(sandbox, namespace) == ["web-demo-app"]
