"""Traffic simulator: the sandbox's stand-in for users and an ingress controller (kwok pods serve nothing).

Every tick it reads the live Ingresses from the API server, pairs each stable Ingress with the nginx canary
Ingress on the same host and path, splits a steady request rate between the two by the canary weight the
cluster serves, and plays each request against the behaviour profile of the version the backend's Ready pods
run. It exposes the counts, errors and latency histograms in the Prometheus text format on /metrics.

Profiles: a pod annotation `sandbox.rollbook.dev/profile` chooses one; otherwise the version decides
(1.2.0 "errors", everything else "healthy"). A backend without Ready pods answers 503 to every request.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client, config

PROFILE_ANNOTATION = "sandbox.rollbook.dev/profile"
CANARY = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Profile:
    error_share: float = 0.0  # share of requests answered 500
    errors_from_weight: int = 0  # errors only while the version gets at least this weight
    latency_ms: float = 20.0  # median-ish latency
    slow_share: float = 0.0  # share of requests that take slow_ms
    slow_ms: float = 0.0


PROFILES = {
    "healthy": Profile(),
    "errors": Profile(error_share=0.2),
    "errors-from-50": Profile(error_share=0.3, errors_from_weight=50),
    "slow": Profile(slow_share=0.05, slow_ms=1500.0),
}
VERSION_PROFILES = {"1.2.0": "errors"}


@dataclass(frozen=True)
class Backend:
    namespace: str
    service: str
    version: str
    profile: str
    ready: bool


Key = tuple[str, str, str, str, str, str]  # namespace, ingress, service, version, track, code


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[Key, int] = defaultdict(int)
        self.buckets: dict[tuple[str, str, str, str, str], list[int]] = {}
        self.sums: dict[tuple[str, str, str, str, str], float] = defaultdict(float)
        self.weights: dict[str, int] = {}

    def observe(self, key: Key, seconds: float) -> None:
        hkey = key[:5]
        with self.lock:
            self.requests[key] += 1
            counts = self.buckets.setdefault(hkey, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.sums[hkey] += seconds

    def render(self) -> str:
        names = ("namespace", "ingress", "service", "version", "track")
        lines = [
            "# HELP rollbook_sim_requests_total Simulated requests by backend version and status code.",
            "# TYPE rollbook_sim_requests_total counter",
        ]
        with self.lock:
            for key, value in sorted(self.requests.items()):
                labels = _labels(zip((*names, "code"), key, strict=True))
                lines.append(f"rollbook_sim_requests_total{{{labels}}} {value}")
            lines += [
                "# HELP rollbook_sim_request_duration_seconds Simulated request latency.",
                "# TYPE rollbook_sim_request_duration_seconds histogram",
            ]
            for hkey, counts in sorted(self.buckets.items()):
                base = _labels(zip(names, hkey, strict=True))
                for bound, count in zip((*(str(b) for b in BUCKETS), "+Inf"), counts, strict=True):
                    lines.append(f'rollbook_sim_request_duration_seconds_bucket{{{base},le="{bound}"}} {count}')
                lines.append(f"rollbook_sim_request_duration_seconds_sum{{{base}}} {self.sums[hkey]:.6f}")
                lines.append(f"rollbook_sim_request_duration_seconds_count{{{base}}} {counts[-1]}")
            lines += ["# TYPE rollbook_sim_canary_weight gauge"]
            for route, weight in sorted(self.weights.items()):
                ns, ingress = route.split("/", 1)
                lines.append(f'rollbook_sim_canary_weight{{namespace="{ns}",ingress="{ingress}"}} {weight}')
        return "\n".join(lines) + "\n"


def _labels(pairs: Any) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


class Simulator:
    def __init__(self, api: client.ApiClient, rps: float, seed: int = 0) -> None:
        self.net = client.NetworkingV1Api(api)
        self.core = client.CoreV1Api(api)
        self.rps = rps
        self.rng = random.Random(seed)
        self.metrics = Metrics()
        self.carry: dict[str, float] = defaultdict(float)

    def backend(self, namespace: str, service: str) -> Backend:
        try:
            svc = _json(
                self.core.read_namespaced_service(service, namespace, _request_timeout=5, _preload_content=False)
            )
        except client.ApiException:
            return Backend(namespace, service, "unknown", "healthy", False)
        selector = ",".join(f"{k}={v}" for k, v in sorted((svc["spec"].get("selector") or {}).items()))
        pods = _json(
            self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=5, _preload_content=False
            )
        )["items"]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in _conditions(p))]
        if not ready:
            return Backend(namespace, service, "unknown", "healthy", False)
        meta = ready[0]["metadata"]
        version = (meta.get("labels") or {}).get("app.kubernetes.io/version", "unknown")
        chosen = (meta.get("annotations") or {}).get(PROFILE_ANNOTATION) or VERSION_PROFILES.get(version, "healthy")
        return Backend(namespace, service, version, chosen, True)

    def routes(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """(stable, canary or None) Ingress pairs, matched on namespace, host and first path."""
        items = _json(self.net.list_ingress_for_all_namespaces(_request_timeout=5, _preload_content=False))["items"]

        def where(ing: dict[str, Any]) -> tuple[str, str, str]:
            rule = (ing["spec"].get("rules") or [{}])[0]
            path = ((rule.get("http") or {}).get("paths") or [{}])[0].get("path", "/")
            return ing["metadata"]["namespace"], rule.get("host") or "", path

        canaries = {where(i): i for i in items if (i["metadata"].get("annotations") or {}).get(CANARY) == "true"}
        stables = [i for i in items if (i["metadata"].get("annotations") or {}).get(CANARY) != "true"]
        return [(s, canaries.get(where(s))) for s in stables]

    def http_routes(self) -> list[tuple[str, str, list[tuple[str, int]]]]:
        """(namespace, HTTPRoute, [(service, weight)]) of each route's first rule; none without the CRDs."""
        api = client.CustomObjectsApi(self.core.api_client)
        try:
            items = _json(
                api.list_cluster_custom_object(
                    "gateway.networking.k8s.io", "v1", "httproutes", _request_timeout=5, _preload_content=False
                )
            )["items"]
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise
        out = []
        for route in items:
            rule = (route["spec"].get("rules") or [{}])[0]
            refs = [(str(b["name"]), int(b.get("weight", 1))) for b in rule.get("backendRefs") or []]
            out.append((route["metadata"]["namespace"], route["metadata"]["name"], refs))
        return out

    def tick(self, seconds: float) -> None:
        for ns, name, refs in self.http_routes():
            route = f"{ns}/{name}"
            self.carry[route] += self.rps * seconds
            count = int(self.carry[route])
            self.carry[route] -= count
            total = sum(w for _, w in refs)
            if total <= 0 or count <= 0:
                continue
            shares = [count * w // total for _, w in refs]
            shares[0] += count - sum(shares)
            for (service, weight), share in zip(refs, shares, strict=True):
                self.play(ns, name, service, "route", share, round(100 * weight / total))
            if len(refs) > 1:
                self.metrics.weights[route] = round(100 * sum(w for _, w in refs[1:]) / total)
        for stable, canary in self.routes():
            ns, name = stable["metadata"]["namespace"], stable["metadata"]["name"]
            route = f"{ns}/{name}"
            self.carry[route] += self.rps * seconds
            count = int(self.carry[route])
            self.carry[route] -= count
            weight = 0
            if canary is not None:
                try:
                    weight = max(0, min(100, int(canary["metadata"]["annotations"].get(CANARY_WEIGHT, "0"))))
                except ValueError:
                    weight = 0
            self.metrics.weights[route] = weight
            to_canary = round(count * weight / 100)
            self.play(ns, name, _service(stable), "stable", count - to_canary, 100 - weight)
            if canary is not None:
                self.play(ns, name, _service(canary), "canary", to_canary, weight)

    def play(self, ns: str, ingress: str, service: str, track: str, count: int, weight: int) -> None:
        if count <= 0:
            return
        backend = self.backend(ns, service)
        profile = PROFILES.get(backend.profile, PROFILES["healthy"])
        for _ in range(count):
            code, latency = "200", self.rng.lognormvariate(0, 0.3) * profile.latency_ms / 1000
            if not backend.ready:
                code, latency = "503", 0.001
            elif weight >= profile.errors_from_weight and self.rng.random() < profile.error_share:
                code = "500"
            if backend.ready and self.rng.random() < profile.slow_share:
                latency = profile.slow_ms / 1000 * self.rng.uniform(0.9, 1.1)
            self.metrics.observe((ns, ingress, service, backend.version, track, code), latency)


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data)
    return body


def _conditions(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("conditions") or [])


def _service(ingress: dict[str, Any]) -> str:
    rule = (ingress["spec"].get("rules") or [{}])[0]
    path = ((rule.get("http") or {}).get("paths") or [{}])[0]
    return str(path.get("backend", {}).get("service", {}).get("name", ""))


def serve(sim: Simulator, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                body, ctype = sim.metrics.render().encode(), "text/plain; version=0.0.4"
            elif self.path == "/weights":
                body, ctype = json.dumps(sim.metrics.weights).encode(), "application/json"
            elif self.path == "/healthz":
                body, ctype = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rps", type=float, default=50.0, help="requests per second per stable Ingress")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    sim = Simulator(config.new_client_from_config(args.kubeconfig), args.rps)
    serve(sim, args.port)
    print(f"traffic simulator on 127.0.0.1:{args.port}, {args.rps} rps per route", flush=True)
    last = time.monotonic()
    while True:
        time.sleep(args.interval)
        now = time.monotonic()
        try:
            sim.tick(now - last)
        except Exception as exc:  # the API server restarting must not kill the simulator
            print(f"tick failed: {exc!r}", flush=True)
        last = now


if __name__ == "__main__":
    main()
