"""The traffic simulator's split, profiles and data-plane metrics, and the missing-Prometheus message, without a
cluster: the series it renders are the ones ingress-nginx and Envoy Gateway's proxies export, with the labels
the built-in observer queries select on."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any

import pytest

from sandbox import observability
from sandbox.config import SandboxConfig
from sandbox.services import ServiceError
from sandbox.trafficsim import Backend, Metrics, Simulator

NGINX_CONTROLLER = (
    'controller_class="k8s.io/ingress-nginx",controller_namespace="ingress-nginx",'
    'controller_pod="ingress-nginx-controller-sandbox"'
)


def ingress(name: str, service: str, weight: int | None = None) -> dict[str, Any]:
    annotations = {} if weight is None else {
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": str(weight),
    }  # fmt: skip
    path = {"path": "/", "backend": {"service": {"name": service, "port": {"name": "http"}}}}
    return {
        "metadata": {"name": name, "namespace": "ns", "annotations": annotations},
        "spec": {"rules": [{"host": "demo.local", "http": {"paths": [path]}}]},
    }


class FakeSimulator(Simulator):
    def __init__(self, weight: int, versions: dict[str, tuple[str, str]]) -> None:
        self.rps, self.rng, self.metrics, self.carry = 100.0, random.Random(1), Metrics(), defaultdict(float)
        self.weight, self.versions = weight, versions

    def http_routes(self) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
        return [("ns", "api", [("api", 80, 70), ("api-next", 80, 30)])] if "api" in self.versions else []

    def routes(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        return [(ingress("web", "web"), ingress("web-canary", "web-next", self.weight))]

    def backend(self, namespace: str, service: str) -> Backend:
        version, profile = self.versions[service]
        return Backend(namespace, service, version, profile, True)


def series(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric in the Prometheus text format."""
    found = re.findall(rf"^{name}\{{(.*)\}} (\S+)$", text, flags=re.M)
    return {labels: float(value) for labels, value in found}


def test_nginx_series_carry_ingress_nginx_labels_for_stable_and_canary() -> None:
    sim = FakeSimulator(25, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "errors")})
    for _ in range(20):
        sim.tick(1.0)
    text = sim.metrics.render()
    requests = series(text, "nginx_ingress_controller_requests")
    where = f'{NGINX_CONTROLLER},host="demo.local",ingress="web",method="GET",namespace="ns",path="/",service="web"'
    stable, canary = f'canary="",{where}', f'canary="ns-web-next-http",{where}'  # canary: the stable's location
    assert requests[f'{stable},status="200"'] == 1500 and f'{stable},status="500"' not in requests
    errors = requests[f'{canary},status="500"']
    assert requests[f'{canary},status="200"'] + errors == 500 and 60 < errors < 140
    assert 'rollbook_sim_canary_weight{namespace="ns",ingress="web"} 25' in text
    buckets = series(text, "nginx_ingress_controller_request_duration_seconds_bucket")
    assert buckets[f'{stable},status="200",le="+Inf"'] == 1500 and buckets[f'{stable},status="200",le="10"'] == 1500
    assert "rollbook_sim_requests_total" not in text


def test_errors_from_50_only_at_high_weight() -> None:
    sim = FakeSimulator(25, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "errors-from-50")})
    sim.tick(10.0)
    assert not any('status="500"' in k for k in series(sim.metrics.render(), "nginx_ingress_controller_requests"))
    sim.weight = 50
    sim.tick(10.0)
    errors = [v for k, v in series(sim.metrics.render(), "nginx_ingress_controller_requests").items() if "500" in k]
    assert sum(errors) > 50


def test_http_route_weights_split_traffic_into_envoy_clusters_per_service() -> None:
    sim = FakeSimulator(0, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "healthy"),
                            "api": ("1.0.0", "healthy"), "api-next": ("1.1.0", "slow")})  # fmt: skip
    sim.tick(10.0)
    text = sim.metrics.render_envoy()
    stable, canary = "service/ns/api/80/http", "service/ns/api-next/80/http"
    by_code = series(text, "envoy_cluster_upstream_rq")
    assert by_code[f'envoy_response_code="200",envoy_cluster_name="{stable}"'] == 700
    assert by_code[f'envoy_response_code="200",envoy_cluster_name="{canary}"'] == 300
    by_class = series(text, "envoy_cluster_upstream_rq_xx")
    assert by_class[f'envoy_response_code_class="2",envoy_cluster_name="{canary}"'] == 300
    assert series(text, "envoy_cluster_upstream_rq_total")[f'envoy_cluster_name="{canary}"'] == 300
    buckets = series(text, "envoy_cluster_upstream_rq_time_bucket")  # milliseconds, as Envoy counts
    assert buckets[f'envoy_cluster_name="{stable}",le="250"'] == 700
    assert (
        buckets[f'envoy_cluster_name="{canary}",le="250"'] < 300 == buckets[f'envoy_cluster_name="{canary}",le="+Inf"']
    )
    assert sim.metrics.weights["ns/api"] == 30
    assert "nginx_ingress_controller_requests" not in text and "envoy_cluster" not in sim.metrics.render()


def test_prometheus_scrapes_both_data_planes(tmp_path: Any) -> None:
    cfg = SandboxConfig(work_dir=tmp_path, base_port=24800)
    text = observability.prometheus_config(cfg).read_text()
    assert "job_name: ingress-nginx" in text and "job_name: envoy-gateway" in text
    assert "metrics_path: /stats/prometheus" in text and f"127.0.0.1:{cfg.port('traffic-simulator')}" in text


def test_missing_prometheus_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability.shutil, "which", lambda name: None)
    with pytest.raises(ServiceError, match="apt-get install -y --no-install-recommends prometheus"):
        observability.prometheus_binary()
