"""The blue-green flow on the sandbox: green installed beside blue, gated traffic shift, blue retired."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helm_helpers import run_in_thread
from kubernetes import client
from test_canary_rollout import CONTROLS, approve_next, deploy

from flows.blue_green import BlueGreenRequest, blue_green
from flows.canary_rollout import RolloutFailed
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from tasks.traffic import NginxCanaryRouter


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
        **extra,
    }
    return BlueGreenRequest.model_validate(fields)


def releases(sandbox: Sandbox, namespace: str) -> list[str]:
    return sorted(r["name"] for r in json.loads(sandbox.helm("list", "-n", namespace, "-o", "json").stdout))


def test_green_takes_over_after_approvals_and_blue_is_uninstalled(
    sandbox: Sandbox, demo_chart: Path, namespace: str, apps: client.AppsV1Api
) -> None:
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    req = request(sandbox, demo_chart, namespace, version="1.1.0")
    thread, out = run_in_thread(lambda: blue_green(request=req, controls=CONTROLS))
    approve_next()  # before 100%
    approve_next()  # before retiring blue
    thread.join(120)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result["outcome"] == "switched" and result["blue"] == "uninstalled"
    assert [s["weight"] for s in result["shift"]["evidence"]["steps"]] == [50, 100]
    assert releases(sandbox, namespace) == ["shop-green"]
    net = client.NetworkingV1Api(sandbox.api_client())
    ingresses = net.list_namespaced_ingress(namespace).items
    assert [(i.metadata.name, i.spec.rules[0].host) for i in ingresses] == [("shop-green-demo-app", "demo.local")]
    green = apps.read_namespaced_deployment("shop-green-demo-app", namespace)
    assert green.metadata.labels["rollbook.dev/role"] == "active"
    assert green.metadata.labels["rollbook.dev/track"] == "green"
    assert green.spec.template.spec.containers[0].image.endswith(":1.1.0")


def test_bad_green_reverts_to_blue_and_failed_acceptance_moves_nothing(
    sandbox: Sandbox, demo_chart: Path, namespace: str
) -> None:
    deploy(sandbox, demo_chart, namespace, "shop", "1.0.0", "--set", "track=blue")
    router = NginxCanaryRouter(
        namespace=namespace, stable_ingress="shop-demo-app", canary_service="shop-green-demo-app"
    )
    with pytest.raises(RolloutFailed, match="acceptance command"):
        blue_green(request=request(sandbox, demo_chart, namespace, version="1.2.0", acceptance_command=["false"]),
                   controls=CONTROLS)  # fmt: skip
    with sandbox.api_client() as api:
        assert router.read_weight(api) == 0
    assert client.NetworkingV1Api(sandbox.api_client()).list_namespaced_ingress(namespace).items[0].metadata.name == (
        "shop-demo-app"
    )
    # 1.2.0 answers 5xx on a share of requests: reverted at the first step, blue keeps everything
    with pytest.raises(RolloutFailed, match="failed analyses at 50%"):
        blue_green(request=request(sandbox, demo_chart, namespace, version="1.2.0"), controls=CONTROLS)
    with sandbox.api_client() as api:
        assert router.read_weight(api) == 0
    assert releases(sandbox, namespace) == ["shop", "shop-green"]
    with pytest.raises(ValueError, match="must end at 100"):
        request(sandbox, demo_chart, namespace, version="1.1.0", steps=[10, 50])
