"""The traffic simulator's split and profiles, and the missing-Prometheus message, without a cluster."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from sandbox import observability
from sandbox.services import ServiceError
from sandbox.trafficsim import Backend, Metrics, Simulator


def ingress(name: str, service: str, weight: int | None = None) -> dict[str, Any]:
    annotations = {} if weight is None else {
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": str(weight),
    }  # fmt: skip
    path = {"path": "/", "backend": {"service": {"name": service}}}
    return {
        "metadata": {"name": name, "namespace": "ns", "annotations": annotations},
        "spec": {"rules": [{"host": "demo.local", "http": {"paths": [path]}}]},
    }


class FakeSimulator(Simulator):
    def __init__(self, weight: int, versions: dict[str, tuple[str, str]]) -> None:
        self.rps, self.rng, self.metrics, self.carry = 100.0, random.Random(1), Metrics(), defaultdict(float)
        self.weight, self.versions = weight, versions

    def http_routes(self) -> list[tuple[str, str, list[tuple[str, int]]]]:
        return [("ns", "api", [("api", 70), ("api-next", 30)])] if "api" in self.versions else []

    def routes(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        return [(ingress("web", "web"), ingress("web-canary", "web-next", self.weight))]

    def backend(self, namespace: str, service: str) -> Backend:
        version, profile = self.versions[service]
        return Backend(namespace, service, version, profile, True)


def counts(sim: Simulator) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for (_ns, _ing, _svc, version, _track, code), n in sim.metrics.requests.items():
        out[version, code] = out.get((version, code), 0) + n
    return out


def test_split_follows_weight_and_profiles() -> None:
    sim = FakeSimulator(25, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "errors")})
    for _ in range(20):
        sim.tick(1.0)
    c = counts(sim)
    assert c["1.1.0", "200"] == 1500 and ("1.1.0", "500") not in c
    canary = c["1.2.0", "200"] + c["1.2.0", "500"]
    assert canary == 500 and 60 < c["1.2.0", "500"] < 140
    text = sim.metrics.render()
    assert 'rollbook_sim_canary_weight{namespace="ns",ingress="web"} 25' in text
    assert 'le="+Inf"} 1500' in text


def test_errors_from_50_only_at_high_weight() -> None:
    sim = FakeSimulator(25, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "errors-from-50")})
    sim.tick(10.0)
    assert ("1.2.0", "500") not in counts(sim)
    sim.weight = 50
    sim.tick(10.0)
    assert counts(sim)["1.2.0", "500"] > 50


def test_http_route_weights_split_traffic() -> None:
    sim = FakeSimulator(0, {"web": ("1.1.0", "healthy"), "web-next": ("1.2.0", "healthy"),
                            "api": ("1.0.0", "healthy"), "api-next": ("1.1.0", "healthy")})  # fmt: skip
    sim.tick(10.0)
    c = counts(sim)
    assert c["1.0.0", "200"] == 700 and c["1.1.0", "200"] == 1300  # 1000 on web (weight 0) + 300 on api-next
    assert sim.metrics.weights["ns/api"] == 30


def test_missing_prometheus_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability.shutil, "which", lambda name: None)
    with pytest.raises(ServiceError, match="apt-get install -y --no-install-recommends prometheus"):
        observability.prometheus_binary()
