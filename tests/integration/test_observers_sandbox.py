"""Issue 10: canaries on both routers, judged only by the built-in checks (no PromQL from the user), on the data
planes' own series as a real cluster exports them: a failing version is reverted, a healthy one promoted.

The nginx router is judged by the nginx-ingress observer (`nginx_ingress_controller_*`), the Gateway API router by
the envoy-gateway observer (`envoy_cluster_upstream_rq_*`); the sandbox's traffic simulator exports both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from test_progressive_traffic import deploy, http_route

from flows.canary_rollout import CanaryRequest, CanaryReverted, canary_rollout
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from tasks.routers.gateway_api import GatewayApiRouter
from tasks.routers.nginx import NginxCanaryRouter

CONTROLS = ChangeControls(reason="integration test of the built-in observers", requested_by="pytest")
SERIES = {"nginx": "nginx_ingress_controller_requests", "gateway-api": "envoy_cluster_upstream_rq_xx"}
LATENCY = {"nginx": "nginx_ingress_controller_request_duration_seconds_bucket",
           "gateway-api": "envoy_cluster_upstream_rq_time_bucket"}  # fmt: skip


def rollout(sandbox: Sandbox, demo_chart: Path, namespace: str, router: str, **extra: Any) -> CanaryRequest:
    """Only built-in checks, by name: the observer of the router's data plane writes their queries."""
    return CanaryRequest.model_validate(
        {
            "kubeconfig_path": str(sandbox.cfg.kubeconfig),
            "namespace": namespace,
            "stable_release": "web",
            "canary_release": "web-next",
            "chart": str(demo_chart),
            "helm_executable": str(sandbox.bins / "helm"),
            "prometheus_url": extra.pop("prometheus_url", prometheus_url(sandbox.cfg)),
            "router": router,
            "http_route": "web" if router == "gateway-api" else None,
            "run_checklist": False,
            "approve_before_final_step": False,
            "approve_before_promotion": False,
            "analysis": {
                "interval_seconds": 5,
                "iterations": 1,
                "threshold": 1,
                "step_weights": [50, 100],
                "metrics": [
                    {"name": "request-success-rate", "min": 99, "window": "5s"},
                    {"name": "request-duration", "max": 500, "window": "5s"},
                ],
            },
            **extra,
        }
    )


def releases(sandbox: Sandbox, demo_chart: Path, namespace: str, router: str, canary_tag: str) -> Any:
    deploy(sandbox, demo_chart, namespace, "web", "1.0.0")
    deploy(sandbox, demo_chart, namespace, "web-next", canary_tag, "--set", "ingress.enabled=false")
    if router == "gateway-api":
        http_route(sandbox, namespace, "web", "web-demo-app")
        return GatewayApiRouter(
            namespace=namespace, http_route="web", stable_service="web-demo-app", canary_service="web-next-demo-app"
        )
    return NginxCanaryRouter(namespace=namespace, stable_ingress="web-demo-app", canary_service="web-next-demo-app")


def served(sandbox: Sandbox, router: Any) -> int:
    with sandbox.api_client() as api:
        weight: int = router.read_weight(api)
    return weight


@pytest.mark.parametrize("router", ["nginx", "gateway-api"])
def test_failing_canary_is_judged_failing_by_the_observer_and_reverted(
    sandbox: Sandbox, demo_chart: Path, namespace: str, router: str
) -> None:
    route = releases(sandbox, demo_chart, namespace, router, "1.2.0")  # 1.2.0 answers 20 % of requests with 500
    with pytest.raises(CanaryReverted) as reverted:
        canary_rollout(request=rollout(sandbox, demo_chart, namespace, router), controls=CONTROLS)
    message = str(reverted.value)
    assert "1 failed analyses at 50%" in message and "traffic reverted to stable" in message, message
    assert "request-success-rate" in message and "below min 99" in message, message
    assert served(sandbox, route) == 0


@pytest.mark.parametrize("router", ["nginx", "gateway-api"])
def test_healthy_canary_is_judged_healthy_by_the_observer_and_promoted(
    sandbox: Sandbox, demo_chart: Path, namespace: str, router: str, apps: client.AppsV1Api
) -> None:
    route = releases(sandbox, demo_chart, namespace, router, "1.1.0")
    result = canary_rollout(request=rollout(sandbox, demo_chart, namespace, router), controls=CONTROLS)
    assert (result.outcome, result.stage) == ("changed", "promoted"), result.summary
    steps = result.evidence.steps
    assert [(s.weight, s.passed) for s in steps] == [(50, True), (100, True)]
    for step in steps:
        rate, latency = step.checks
        assert SERIES[router] in rate.query and LATENCY[router] in latency.query, (rate.query, latency.query)
        assert "rollbook_sim" not in rate.query + latency.query
        assert rate.value is not None and rate.value >= 99 and latency.value is not None and latency.value < 500
    image = apps.read_namespaced_deployment("web-demo-app", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":1.1.0")
    assert served(sandbox, route) == 0  # the canary route is gone; stable serves everything


class Blip:
    """Prometheus behind a proxy that answers HTTP 503 to the next `count` queries containing `fragment` (a
    Prometheus restarting answers so), then forwards again: a blip at a chosen query, not at a chosen time."""

    def __init__(self, upstream: str, fragment: str, count: int) -> None:
        self.failed: list[str] = []
        blip = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                query = httpx.URL(self.path).params.get("query", "")
                if fragment in query and len(blip.failed) < count:
                    blip.failed.append(query)
                    status, body = 503, b'{"status":"error","errorType":"unavailable","error":"restarting"}'
                else:
                    answer = httpx.get(upstream + self.path, timeout=10)
                    status, body = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def blip(upstream: str, fragment: str, count: int) -> Iterator[Blip]:
    proxy = Blip(upstream, fragment, count)
    threading.Thread(target=proxy.server.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.server.shutdown()
        proxy.server.server_close()


def test_a_prometheus_blip_during_an_analysis_is_retried_inside_the_check_and_reverts_nothing(
    sandbox: Sandbox, demo_chart: Path, namespace: str, apps: client.AppsV1Api
) -> None:
    """Issue 16: the first analysis's success-rate query is refused twice, then answered. With threshold 1 a
    failed check would revert at once; the retries inside the check make the analysis pass and the canary is
    promoted. (A lasting outage reverts: test_canary_rollout's Prometheus-lost test.)"""
    releases(sandbox, demo_chart, namespace, "nginx", "1.1.0")
    with blip(prometheus_url(sandbox.cfg), "nginx_ingress_controller_requests", 2) as proxy:
        result = canary_rollout(
            request=rollout(sandbox, demo_chart, namespace, "nginx", prometheus_url=proxy.url), controls=CONTROLS
        )
    assert len(proxy.failed) == 2 and all("status!~" in q for q in proxy.failed)  # the blip did happen
    assert (result.outcome, result.stage) == ("changed", "promoted"), result.summary
    assert [(s.weight, s.attempt, s.passed) for s in result.evidence.steps] == [(50, 1, True), (100, 1, True)]
    image = apps.read_namespaced_deployment("web-demo-app", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":1.1.0")
