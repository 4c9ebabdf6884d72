"""Traffic routing and metrics on the sandbox: both routers, the traffic simulator (which exports ingress-nginx's
and Envoy's own series), real Prometheus, and the built-in observer queries exactly as they run on a real cluster."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.observability import prometheus_url
from sandbox.registry import DEMO_REPOSITORY
from tasks.metrics.checks import MetricCheck, evaluate
from tasks.metrics.prometheus import PrometheusProvider
from tasks.observers.base import Target
from tasks.routers.base import RouterError
from tasks.routers.gateway_api import GATEWAY_API, HTTPROUTES, GatewayApiRouter
from tasks.routers.nginx import CANARY_WEIGHT, NginxCanaryRouter

BUILT_IN = [
    MetricCheck(name="request-success-rate", min=99, window="10s"),
    MetricCheck(name="request-duration", max=500, window="10s"),
]


def deploy(sandbox: Sandbox, chart: Path, namespace: str, release: str, tag: str, *extra: str) -> None:
    sandbox.helm(
        "upgrade", release, str(chart), "--install", "-n", namespace, "--wait", "--timeout=60s",
        "--set", f"image.repository={sandbox.cfg.registry_host()}/{DEMO_REPOSITORY}", "--set", f"image.tag={tag}",
        "--set", "replicas=1", *extra,
    )  # fmt: skip


@pytest.fixture
def stable_and_canary(sandbox: Sandbox, demo_chart: Path, namespace: str) -> NginxCanaryRouter:
    deploy(sandbox, demo_chart, namespace, "app", "1.1.0")
    deploy(sandbox, demo_chart, namespace, "app-next", "1.2.0", "--set", "ingress.enabled=false")
    return NginxCanaryRouter(namespace=namespace, stable_ingress="app-demo-app", canary_service="app-next-demo-app")


def test_nginx_router_reads_weight_from_the_cluster(
    sandbox: Sandbox, stable_and_canary: NginxCanaryRouter, namespace: str
) -> None:
    router = stable_and_canary
    net = client.NetworkingV1Api(sandbox.api_client())
    with sandbox.api_client() as api:
        assert router.read_weight(api) == 0  # no canary Ingress yet
        assert router.ensure(api) == 0
        canary = net.read_namespaced_ingress(router.canary_name, namespace)
        assert canary.spec.rules[0].host == "demo.local"
        assert canary.spec.rules[0].http.paths[0].backend.service.name == "app-next-demo-app"
        assert router.set_weight(api, 25) == 25
        # a second router object (a new process after a crash) sees the cluster's weight, not its own memory
        fresh = NginxCanaryRouter.model_validate(router.model_dump())
        assert fresh.read_weight(api) == 25
        assert fresh.ensure(api) == 25  # ensure keeps the weight it finds
        # someone else changes the weight: the router reports what the cluster serves
        net.patch_namespaced_ingress(
            router.canary_name, namespace, {"metadata": {"annotations": {CANARY_WEIGHT: "40"}}}
        )
        assert router.read_weight(api) == 40
        for bad in (-1, 101):
            with pytest.raises(RouterError, match="0 to 100"):
                router.set_weight(api, bad)
        assert router.read_weight(api) == 40
        assert router.reset(api) == 0
        assert router.remove(api) is True
        assert router.remove(api) is False
        assert router.read_weight(api) == 0
        missing = NginxCanaryRouter(namespace=namespace, stable_ingress="nope", canary_service="x")
        with pytest.raises(RouterError, match="not found"):
            missing.ensure(api)


def _wait_value(prom: PrometheusProvider, query: str, ok: object, timeout: float = 40) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = prom.query_scalar(query)
        if value is not None and value == value and ok(value):  # type: ignore[operator]
            return value
        time.sleep(1)
    raise AssertionError(f"{query} stayed at {value}")


def test_simulator_splits_by_live_weight_and_the_nginx_observer_judges_the_canary(
    sandbox: Sandbox, stable_and_canary: NginxCanaryRouter, namespace: str
) -> None:
    """The canary (1.2.0, 20 % errors) gets half the traffic: the built-in checks, written by the nginx-ingress
    observer on ingress-nginx's own series, fail its success rate and pass its latency."""
    router = stable_and_canary
    with sandbox.api_client() as api:
        router.ensure(api)
        router.set_weight(api, 50)
    sim = f"http://127.0.0.1:{sandbox.cfg.port('traffic-simulator')}"
    with httpx.Client(base_url=prometheus_url(sandbox.cfg), timeout=5) as http:
        prom = PrometheusProvider(http)
        weight_q = f'rollbook_sim_canary_weight{{namespace="{namespace}",ingress="app-demo-app"}}'
        _wait_value(prom, weight_q, lambda v: v == 50)
        assert httpx.get(f"{sim}/weights").json()[f"{namespace}/app-demo-app"] == 50
        canary_rps = (
            f'sum(rate(nginx_ingress_controller_requests{{namespace="{namespace}",ingress="app-demo-app",'
            f'canary="{namespace}-app-next-demo-app-http"}}[10s]))'
        )
        _wait_value(prom, canary_rps, lambda v: v > 15)  # ten seconds of traffic at 50% in the window
        stable_rate = (
            '100 * sum(rate(nginx_ingress_controller_requests{namespace="{{ namespace }}",ingress="{{ route }}",'
            'canary="",status!~"5.."}[{{ window }}])) / sum(rate(nginx_ingress_controller_requests{'
            'namespace="{{ namespace }}",ingress="{{ route }}",canary=""}[{{ window }}]))'
        )
        stable_check = MetricCheck(name="stable-success-rate", query=stable_rate, min=99, window="10s")
        target = Target(
            observer="nginx-ingress", namespace=namespace, service="app-next-demo-app", route="app-demo-app"
        )
        canary = evaluate(prom, [*BUILT_IN, stable_check], target)
        assert "nginx_ingress_controller_requests" in canary[0].query, canary[0].query
        assert canary[0].passed is False and canary[0].value is not None and 60 < canary[0].value < 95, canary
        assert canary[1].passed and canary[1].value is not None and canary[1].value < 100, canary
        assert canary[2].passed and canary[2].value == pytest.approx(100), canary  # stable is healthy
        # reset: the canary stops receiving traffic, so its rate over a short window falls to zero
        with sandbox.api_client() as api:
            router.reset(api)
        _wait_value(prom, weight_q, lambda v: v == 0)
        _wait_value(prom, canary_rps.replace("[10s]", "[3s]"), lambda v: v == 0, timeout=20)


def http_route(sandbox: Sandbox, namespace: str, name: str, service: str) -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hostnames": ["demo.local"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                       "backendRefs": [{"name": service, "port": 80}]}],
        },
    }  # fmt: skip
    client.CustomObjectsApi(sandbox.api_client()).create_namespaced_custom_object(
        *GATEWAY_API, namespace, HTTPROUTES, body
    )


def test_gateway_router_weights_simulated_split_and_the_envoy_observer(
    sandbox: Sandbox, stable_and_canary: NginxCanaryRouter, namespace: str
) -> None:
    http_route(sandbox, namespace, "app", "app-demo-app")
    router = GatewayApiRouter(
        namespace=namespace, http_route="app", stable_service="app-demo-app", canary_service="app-next-demo-app"
    )
    custom = client.CustomObjectsApi(sandbox.api_client())
    with sandbox.api_client() as api:
        assert router.read_weight(api) == 0
        assert router.ensure(api) == 0
        assert router.set_weight(api, 30) == 30
        refs = custom.get_namespaced_custom_object(*GATEWAY_API, namespace, HTTPROUTES, "app")["spec"]["rules"][0]
        assert [(b["name"], b["weight"], b["port"]) for b in refs["backendRefs"]] == [
            ("app-demo-app", 70, 80),
            ("app-next-demo-app", 30, 80),
        ]
        fresh = GatewayApiRouter.model_validate(router.model_dump())
        assert fresh.ensure(api) == 30 and fresh.read_weight(api) == 30
        with pytest.raises(RouterError, match="0 to 100"):
            router.set_weight(api, 101)
        sim = f"http://127.0.0.1:{sandbox.cfg.port('traffic-simulator')}"
        deadline = time.monotonic() + 20
        while httpx.get(f"{sim}/weights").json().get(f"{namespace}/app") != 30 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert httpx.get(f"{sim}/weights").json()[f"{namespace}/app"] == 30
        with httpx.Client(base_url=prometheus_url(sandbox.cfg), timeout=5) as http:
            prom = PrometheusProvider(http)
            cluster = f'envoy_cluster_name="service/{namespace}/app-next-demo-app/80/http"'
            _wait_value(prom, f"sum(rate(envoy_cluster_upstream_rq_total{{{cluster}}}[10s]))", lambda v: v > 10)
            target = Target(observer="envoy-gateway", namespace=namespace, service="app-next-demo-app", route="app")
            canary = evaluate(prom, BUILT_IN, target)
        assert "envoy_cluster_upstream_rq_xx" in canary[0].query and "envoy_cluster_upstream_rq_time" in canary[1].query
        assert canary[0].passed is False and canary[0].value is not None and 60 < canary[0].value < 95, canary
        assert canary[1].passed and canary[1].value is not None and canary[1].value < 100, canary
        assert router.reset(api) == 0
        assert router.remove(api) is True and router.remove(api) is False
        refs = custom.get_namespaced_custom_object(*GATEWAY_API, namespace, HTTPROUTES, "app")["spec"]["rules"][0]
        assert [(b["name"], b["weight"]) for b in refs["backendRefs"]] == [("app-demo-app", 100)]
        missing = GatewayApiRouter(namespace=namespace, http_route="nope", stable_service="a", canary_service="b")
        with pytest.raises(RouterError, match="not found"):
            missing.read_weight(api)
        # blue/green's finish: refused without a canary backend; after a full shift the route sends to it only
        with pytest.raises(RouterError, match="no app-next-demo-app backend to hand over to"):
            router.hand_over(api)
        router.ensure(api)
        router.set_weight(api, 100)
        assert router.hand_over(api) is True
        refs = custom.get_namespaced_custom_object(*GATEWAY_API, namespace, HTTPROUTES, "app")["spec"]["rules"][0]
        assert [(b["name"], b["weight"], b["port"]) for b in refs["backendRefs"]] == [("app-next-demo-app", 100, 80)]
        assert router.hand_over(api) is False  # a retried hand-over changes nothing
