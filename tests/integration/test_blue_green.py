"""The blue-green flow on the sandbox: green installed beside blue, gated traffic shift, blue retired.

The takeover and revert scenarios run on both routers (nginx canary Ingress, Gateway API HTTPRoute weights).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from helm_helpers import CRASH_SET, run_in_thread, wait_paused
from http_helpers import hook_recorder
from kubernetes import client
from test_canary_rollout import CONTROLS, answer_plan, approve_next, deploy
from test_progressive_traffic import http_route

from flows.blue_green import (
    RETIRE_DEPLOYMENT,
    BlueGreenRequest,
    BlueGreenResult,
    RetireRequest,
    RolloutStopped,
    blue_green,
    blue_green_retire,
)
from flows.canary_rollout import CanaryReverted
from flows.predeploy_checklist import ChecklistFailed
from rollbook.change import ChangeControls
from rollbook.rollout_lock import RolloutBusy
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from sandbox.registry import DEMO_REPOSITORY, SandboxRegistries
from tasks.routers.gateway_api import GATEWAY_API, HTTPROUTES, GatewayApiRouter
from tasks.routers.nginx import NginxCanaryRouter
from tasks.webhooks import AcceptanceFailed

BLUE_SERVICE, GREEN_SERVICE = "shop-demo-app", "shop-green-demo-app"


def request(sandbox: Sandbox, demo_chart: Path, namespace: str, **extra: Any) -> BlueGreenRequest:
    fields = {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "blue_release": "shop",
        "green_release": "shop-green",
        "chart": str(demo_chart),
        "helm_executable": str(sandbox.bins / "helm"),
        "prometheus_url": prometheus_url(sandbox.cfg),
        "steps": [50, 100],
        "interval_seconds": 4,
        "window_seconds": 4,
        "threshold": 1,
        "metrics": [
            {"name": "request-success-rate", "min": 99, "window": "5s"},
            {"name": "request-duration", "max": 500, "window": "5s"},
        ],
        "acceptance_command": ["true"],
        "approval_timeout_seconds": 60,
        "run_checklist": False,  # the checklist gate has its own test
        **extra,
    }
    return BlueGreenRequest.model_validate(fields)


def releases(sandbox: Sandbox, namespace: str) -> list[str]:
    return sorted(r["name"] for r in json.loads(sandbox.helm("list", "-n", namespace, "-o", "json").stdout))


def ingresses(sandbox: Sandbox, namespace: str) -> list[str]:
    return [
        i.metadata.name for i in client.NetworkingV1Api(sandbox.api_client()).list_namespaced_ingress(namespace).items
    ]


def route_backends(sandbox: Sandbox, namespace: str) -> list[tuple[str, int | None]]:
    route = client.CustomObjectsApi(sandbox.api_client()).get_namespaced_custom_object(
        *GATEWAY_API, namespace, HTTPROUTES, "shop"
    )
    return [(b["name"], b.get("weight")) for b in route["spec"]["rules"][0]["backendRefs"]]


@pytest.fixture(params=["nginx", "gateway-api"])
def blue(
    request: pytest.FixtureRequest, sandbox: Sandbox, demo_chart: Path, namespace: str
) -> tuple[dict[str, Any], NginxCanaryRouter | GatewayApiRouter]:
    """Blue (shop 1.0.0) serving users, and the request fields and router of the parametrized traffic router."""
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    if request.param == "nginx":
        return {}, NginxCanaryRouter(namespace=namespace, stable_ingress=BLUE_SERVICE, canary_service=GREEN_SERVICE)
    http_route(sandbox, namespace, "shop", BLUE_SERVICE)
    return {"router": "gateway-api", "http_route": "shop"}, GatewayApiRouter(
        namespace=namespace, http_route="shop", stable_service=BLUE_SERVICE, canary_service=GREEN_SERVICE
    )


def weight(sandbox: Sandbox, router: NginxCanaryRouter | GatewayApiRouter) -> int:
    with sandbox.api_client() as api:
        return router.read_weight(api)


def test_green_takes_over_after_approvals_and_blue_is_uninstalled(
    sandbox: Sandbox,
    demo_chart: Path,
    namespace: str,
    apps: client.AppsV1Api,
    blue: tuple[dict[str, Any], NginxCanaryRouter | GatewayApiRouter],
) -> None:
    fields, router = blue
    with hook_recorder() as server:  # green's acceptance is an HTTP call that answers 200
        req = request(sandbox, demo_chart, namespace, version="1.1.0", acceptance_command=None,
                      acceptance_url=server.url + "/status/200", **fields)  # fmt: skip
        thread, out = run_in_thread(lambda: blue_green(request=req, controls=CONTROLS))
        wait_paused()  # green is installed and serves 50%; the gate before 100% waits, the run holds the lock
        served = weight(sandbox, router)
        assert served == 50
        # a second blue/green of the same app is refused at once and changes nothing: no release, same weight
        other = request(sandbox, demo_chart, namespace, version="1.1.0", green_release="shop-next", **fields)
        with pytest.raises(RolloutBusy, match=f"another progressive rollout of 'shop' in '{namespace}'"):
            blue_green(request=other, controls=CONTROLS)
        assert releases(sandbox, namespace) == ["shop", "shop-green"] and weight(sandbox, router) == served
        approve_next()  # before 100%
        approve_next()  # before retiring blue
        thread.join(120)
        assert [path for path, _ in server.calls] == ["/status/200"]
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert (result.outcome, result.stage, result.blue) == ("changed", "switched", "uninstalled")
    assert result.shift is not None and [s.weight for s in result.shift.evidence.steps] == [50, 100]
    assert releases(sandbox, namespace) == ["shop-green"]
    ingress = client.NetworkingV1Api(sandbox.api_client()).list_namespaced_ingress(namespace).items
    assert [(i.metadata.name, i.spec.rules[0].host) for i in ingress] == [(GREEN_SERVICE, "demo.local")]
    if fields:  # Gateway API: the route sends to green only (blue's backend is gone with blue)
        assert route_backends(sandbox, namespace) == [(GREEN_SERVICE, 100)]
    green = apps.read_namespaced_deployment(GREEN_SERVICE, namespace)
    assert green.metadata.labels["rollbook.dev/role"] == "active"
    assert green.metadata.labels["rollbook.dev/track"] == "green"
    assert green.spec.template.spec.containers[0].image.endswith(":1.1.0")
    assert green.metadata.annotations["rollbook.dev/reason"] == CONTROLS.reason
    assert green.metadata.annotations["rollbook.dev/replaced"] == "shop"


def test_bad_green_reverts_to_blue_and_failed_acceptance_moves_nothing(
    sandbox: Sandbox,
    demo_chart: Path,
    namespace: str,
    blue: tuple[dict[str, Any], NginxCanaryRouter | GatewayApiRouter],
) -> None:
    fields, router = blue
    untouched = route_backends(sandbox, namespace) if fields else None
    with hook_recorder() as server:  # acceptance by HTTP: a 500 stops the run before any traffic moves
        with pytest.raises(
            AcceptanceFailed, match=r"acceptance call http://127\.0\.0\.1:\d+/status/500 answered HTTP 500"
        ):
            failing = server.url + "/status/500"
            blue_green(request=request(sandbox, demo_chart, namespace, version="1.2.0", acceptance_command=None,
                                       acceptance_url=failing, **fields), controls=CONTROLS)  # fmt: skip
        assert [path for path, _ in server.calls] == ["/status/500"]
    assert weight(sandbox, router) == 0
    assert ingresses(sandbox, namespace) == [BLUE_SERVICE]  # no canary Ingress was made
    if fields:
        assert route_backends(sandbox, namespace) == untouched  # the route was not touched
    with pytest.raises(AcceptanceFailed, match="acceptance command"):
        blue_green(request=request(sandbox, demo_chart, namespace, version="1.2.0", acceptance_command=["false"],
                                   **fields), controls=CONTROLS)  # fmt: skip
    assert weight(sandbox, router) == 0
    # 1.2.0 answers 5xx on a share of requests: reverted at the first step, blue keeps everything
    with pytest.raises(CanaryReverted, match="failed analyses at 50%"):
        blue_green(request=request(sandbox, demo_chart, namespace, version="1.2.0", **fields), controls=CONTROLS)
    assert weight(sandbox, router) == 0
    assert releases(sandbox, namespace) == ["shop", "shop-green"]
    if fields:
        assert route_backends(sandbox, namespace) == [(BLUE_SERVICE, 100), (GREEN_SERVICE, 0)]
    with pytest.raises(ValueError, match="steps must end at 100"):
        request(sandbox, demo_chart, namespace, version="1.1.0", steps=[10, 50])
    with pytest.raises(ValueError, match="http_route is required"):
        request(sandbox, demo_chart, namespace, version="1.1.0", router="gateway-api")


def _switch(req: BlueGreenRequest, controls: ChangeControls = CONTROLS) -> BlueGreenResult:
    thread, out = run_in_thread(lambda: blue_green(request=req, controls=controls))
    if controls.require_approval:
        answer_plan(True, "ship it")
    approve_next()  # before 100%
    approve_next()  # before retiring blue
    thread.join(120)
    assert "error" not in out, out.get("error")
    result: BlueGreenResult = out["result"]
    assert (result.outcome, result.stage) == ("changed", "switched")
    return result


def test_keep_window_schedules_the_retire_run(sandbox: Sandbox, demo_chart: Path, namespace: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    from deployments import all_deployments

    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    keep = 3600
    with get_client(sync_client=True) as prefect:  # the server may have it from another test: start without it
        try:
            prefect.delete_deployment(prefect.read_deployment_by_name(RETIRE_DEPLOYMENT).id)
        except ObjectNotFound:
            pass
    # no blue-green-retire deployment on the server: blue is kept and the result says it is NOT scheduled
    result = _switch(request(sandbox, demo_chart, namespace, version="1.1.0", steps=[100], keep_blue_seconds=keep))
    assert result.blue.startswith(f"kept; NOT scheduled for removal ({RETIRE_DEPLOYMENT} unavailable")
    assert releases(sandbox, namespace) == ["shop", "shop-green"]
    # the kept blue says what happened to it: labelled retired, annotated with who, why and what replaced it
    blue = client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment(BLUE_SERVICE, namespace)
    assert blue.metadata.labels["rollbook.dev/role"] == "retired"
    assert blue.metadata.annotations["rollbook.dev/reason"] == CONTROLS.reason
    assert blue.metadata.annotations["rollbook.dev/retired-by"] == "shop-green"
    # the follow-up flow (here called by hand, as an operator would): plan, a refusal, a rejection, then the removal
    source = {"namespace": namespace, "kubeconfig_path": str(sandbox.cfg.kubeconfig),
              "helm_executable": str(sandbox.bins / "helm")}  # fmt: skip
    retire = RetireRequest.model_validate({**source, "release": "shop"})
    plan = blue_green_retire(request=retire, controls=CONTROLS.model_copy(update={"plan": True}))
    assert plan.outcome == "planned" and f"Deployment/{BLUE_SERVICE}" in plan.removed
    assert f"Service/{BLUE_SERVICE}" in plan.removed and f"`Deployment/{BLUE_SERVICE}`" in plan.plan
    refused = "is not a retired blue: Deployment 'shop-green-demo-app' has rollbook.dev/role=active"
    with pytest.raises(ValueError, match=refused):
        blue_green_retire(request=retire.model_copy(update={"release": "shop-green"}), controls=CONTROLS)
    asking = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: blue_green_retire(request=retire, controls=asking))
    answer_plan(False, "keep it one more day")
    thread.join(60)
    assert out["result"].outcome == "not-approved" and releases(sandbox, namespace) == ["shop", "shop-green"]
    removed = blue_green_retire(request=retire, controls=CONTROLS)
    assert removed.outcome == "changed" and f"Deployment/{BLUE_SERVICE}" in removed.removed
    assert releases(sandbox, namespace) == ["shop-green"]

    # with the deployment registered (as `rollbook serve` registers it), the switch back schedules its run
    deployment = next(d for d in all_deployments() if d.name == "blue-green-retire")
    deployment_id = deployment.apply()
    started = dt.datetime.now(dt.UTC)
    back = request(sandbox, demo_chart, namespace, blue_release="shop-green", green_release="shop", version="1.0.0",
                   steps=[100], keep_blue_seconds=keep)  # fmt: skip
    result = _switch(back)
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        assert len(runs) == 1, runs
        run = runs[0]
        assert run.state is not None and run.state.type == StateType.SCHEDULED
        assert run.parameters == {
            "request": {**source, "release": "shop-green", "cluster_block": None, "context": ""},
            "controls": {"reason": f"keep window of a blue/green switch is over: {CONTROLS.reason}",
                         "requested_by": CONTROLS.requested_by},
        }  # fmt: skip
        assert run.expected_start_time is not None
        assert started + dt.timedelta(seconds=keep) <= run.expected_start_time
        assert run.expected_start_time <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=keep)
        assert result.blue.startswith("kept until ") and str(run.id) in result.blue
        assert releases(sandbox, namespace) == ["shop", "shop-green"]  # nothing removed before the window ends
        # what that run will do when its time comes: the flow with the run's own parameters retires blue
        assert blue_green_retire(**run.parameters).outcome == "changed"
        assert releases(sandbox, namespace) == ["shop"]
        again = blue_green_retire(**run.parameters)  # already gone: a late or repeated run is harmless
        assert again.outcome == "unchanged" and "already gone" in again.summary
        prefect.delete_flow_run(run.id)  # no worker in the tests; leave neither the run nor the deployment behind
        prefect.delete_deployment(deployment_id)


def test_green_not_ready_is_refused_before_any_traffic_moves(
    sandbox: Sandbox, demo_chart: Path, namespace: str
) -> None:
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    # green is there already at the requested version, but its pods crash (no --wait: helm would refuse)
    sandbox.helm(
        "upgrade", "shop-green", str(demo_chart), "--install", "-n", namespace,
        "--set", f"image.repository={sandbox.cfg.registry_host()}/{DEMO_REPOSITORY}", "--set", "image.tag=1.1.0",
        "--set", "replicas=1", "--set", "track=green", "--set", "ingress.enabled=false", "--set", CRASH_SET,
    )  # fmt: skip
    with pytest.raises(RolloutStopped, match="green_release 'shop-green' is not Ready \\(no traffic moved\\)"):
        blue_green(request=request(sandbox, demo_chart, namespace, version="1.1.0"), controls=CONTROLS)
    assert ingresses(sandbox, namespace) == [BLUE_SERVICE]  # no canary Ingress: nothing shifted
    assert releases(sandbox, namespace) == ["shop", "shop-green"]
    blue = client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment(BLUE_SERVICE, namespace)
    assert "rollbook.dev/role" not in (blue.metadata.labels or {})


def test_plan_checklist_and_approval_gates_change_nothing_until_approved(
    sandbox: Sandbox, demo_chart: Path, namespace: str, apps: client.AppsV1Api
) -> None:
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    req = request(sandbox, demo_chart, namespace, version="1.1.0", steps=[100])
    # plan mode: the plan names what would be installed and moved; nothing is
    plan = blue_green(request=req, controls=CONTROLS.model_copy(update={"plan": True}))
    assert (plan.outcome, plan.stage) == ("planned", "planned")
    assert "helm install `shop-green`" in plan.plan and "helm uninstall `shop`" in plan.plan
    assert releases(sandbox, namespace) == ["shop"] and ingresses(sandbox, namespace) == [BLUE_SERVICE]
    # the pre-deploy checklist first: without a cosign key the signature check fails, and nothing is installed
    checklist = {"run_checklist": True, "checklist": {"policy": {"skip": ["vulnerabilities"]}}}
    checked = request(sandbox, demo_chart, namespace, version="1.1.0", steps=[100], **checklist)
    with pytest.raises(ChecklistFailed, match="NOT READY.*image-signature"):
        blue_green(request=checked, controls=CONTROLS)
    assert releases(sandbox, namespace) == ["shop"] and ingresses(sandbox, namespace) == [BLUE_SERVICE]
    # with the sandbox's signing key green's first install is READY (planned here, so still nothing installed)
    key = str(SandboxRegistries(sandbox.cfg, sandbox.bins).public_key)
    checklist["checklist"] = {**checklist["checklist"], "cosign_public_key": key}
    ready = request(sandbox, demo_chart, namespace, version="1.1.0", steps=[100], **checklist)
    planned = blue_green(request=ready, controls=CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and planned.checklist.startswith("READY"), planned.checklist
    assert releases(sandbox, namespace) == ["shop"] and ingresses(sandbox, namespace) == [BLUE_SERVICE]
    # approval of the plan: rejected, nothing is installed
    asking = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: blue_green(request=req, controls=asking))
    answer_plan(False, "wait for the freeze to end")
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert (out["result"].outcome, out["result"].approval) == ("not-approved", "wait for the freeze to end")
    assert releases(sandbox, namespace) == ["shop"] and ingresses(sandbox, namespace) == [BLUE_SERVICE]
    # approved: the whole switch runs, and green says who asked and why
    result = _switch(req, asking)
    assert result.approval == "ship it" and result.blue == "uninstalled"
    assert releases(sandbox, namespace) == ["shop-green"]
    green = apps.read_namespaced_deployment(GREEN_SERVICE, namespace)
    assert green.metadata.annotations["rollbook.dev/reason"] == CONTROLS.reason
    assert green.metadata.annotations["rollbook.dev/requested-by"] == CONTROLS.requested_by
