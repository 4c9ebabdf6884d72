"""Traffic simulator: the sandbox's stand-in for users and for the data planes (kwok pods serve nothing).

Every tick it reads the live Ingresses and HTTPRoutes from the API server, splits a steady request rate by the
weights the cluster serves, and plays each request against the behaviour profile of the version the backend's
Ready pods run. It counts the requests the way the real data planes do, under their own metric names and labels,
so rollbook's built-in observer queries run unchanged here and on a real cluster:

- Ingresses, as ingress-nginx's controller exports them on `/metrics`: `nginx_ingress_controller_requests` and
  `nginx_ingress_controller_request_duration_seconds` (seconds). A request sent to a canary Ingress's backend is
  counted under the stable Ingress's location (its `ingress` and `service`) with `canary="<ns>-<service>-<port>"`
  (the alternative upstream), a stable request with `canary=""`.
- HTTPRoutes, as Envoy Gateway's proxies export them on `/stats/prometheus` with `mergeBackends` on (one cluster
  per Service, `service/<ns>/<service>/<port>/http`): `envoy_cluster_upstream_rq` (`envoy_response_code`),
  `envoy_cluster_upstream_rq_xx` (`envoy_response_code_class`), `envoy_cluster_upstream_rq_total` and the
  histogram `envoy_cluster_upstream_rq_time` (milliseconds).

`/metrics` also carries the simulator's own `rollbook_sim_canary_weight` and `/weights` the same as JSON, for tests.

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
# prometheus client_golang's default buckets (ingress-nginx's request duration), in seconds
NGINX_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Envoy's default histogram buckets, in milliseconds
ENVOY_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000)
NGINX_CONTROLLER = {
    "controller_class": "k8s.io/ingress-nginx",
    "controller_namespace": "ingress-nginx",
    "controller_pod": "ingress-nginx-controller-sandbox",
}


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


Labels = tuple[tuple[str, str], ...]


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.counts[-1] += 1
        self.sum += value

    def lines(self, name: str, labels: Labels) -> list[str]:
        base = _labels(labels)
        les = (*(f"{b:g}" for b in self.bounds), "+Inf")
        out = [f'{name}_bucket{{{base},le="{le}"}} {n}' for le, n in zip(les, self.counts, strict=True)]
        return [*out, f"{name}_sum{{{base}}} {self.sum:.6f}", f"{name}_count{{{base}}} {self.counts[-1]}"]


class Metrics:
    """Counts kept per data plane, rendered in the Prometheus text format with each data plane's own names."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nginx: dict[Labels, int] = defaultdict(int)
        self.nginx_seconds: dict[Labels, Histogram] = {}
        self.envoy: dict[tuple[str, str], int] = defaultdict(int)  # (cluster, code)
        self.envoy_ms: dict[str, Histogram] = {}
        self.weights: dict[str, int] = {}

    def nginx_request(self, labels: Labels, status: str, seconds: float) -> None:
        key = (*labels, ("status", status))
        with self.lock:
            self.nginx[key] += 1
            self.nginx_seconds.setdefault(key, Histogram(NGINX_BUCKETS)).observe(seconds)

    def envoy_request(self, cluster: str, code: str, seconds: float) -> None:
        with self.lock:
            self.envoy[cluster, code] += 1
            self.envoy_ms.setdefault(cluster, Histogram(ENVOY_BUCKETS)).observe(seconds * 1000)

    def render(self) -> str:
        """ingress-nginx's controller metrics, and the simulator's weight gauge."""
        lines = ["# TYPE nginx_ingress_controller_requests counter"]
        with self.lock:
            for key, value in sorted(self.nginx.items()):
                lines.append(f"nginx_ingress_controller_requests{{{_labels(key)}}} {value}")
            lines.append("# TYPE nginx_ingress_controller_request_duration_seconds histogram")
            for key, hist in sorted(self.nginx_seconds.items()):
                lines += hist.lines("nginx_ingress_controller_request_duration_seconds", key)
            lines.append("# TYPE rollbook_sim_canary_weight gauge")
            for route, weight in sorted(self.weights.items()):
                ns, name = route.split("/", 1)
                lines.append(f'rollbook_sim_canary_weight{{namespace="{ns}",ingress="{name}"}} {weight}')
        return "\n".join(lines) + "\n"

    def render_envoy(self) -> str:
        """Envoy's cluster statistics as `/stats/prometheus` shows them."""
        by_class: dict[tuple[str, str], int] = defaultdict(int)
        totals: dict[str, int] = defaultdict(int)
        lines = ["# TYPE envoy_cluster_upstream_rq counter"]
        with self.lock:
            for (cluster, code), value in sorted(self.envoy.items()):
                by_class[cluster, code[0]] += value
                totals[cluster] += value
                lines.append(
                    f'envoy_cluster_upstream_rq{{envoy_response_code="{code}",envoy_cluster_name="{cluster}"}} {value}'
                )
            lines.append("# TYPE envoy_cluster_upstream_rq_xx counter")
            for (cluster, cls), value in sorted(by_class.items()):
                lines.append(
                    f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="{cls}",envoy_cluster_name="{cluster}"}}'
                    f" {value}"
                )
            lines.append("# TYPE envoy_cluster_upstream_rq_total counter")
            lines += [
                f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{c}"}} {n}' for c, n in sorted(totals.items())
            ]
            lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
            for cluster, hist in sorted(self.envoy_ms.items()):
                lines += hist.lines("envoy_cluster_upstream_rq_time", (("envoy_cluster_name", cluster),))
        return "\n".join(lines) + "\n"


def _labels(pairs: Labels) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


def nginx_labels(ingress: dict[str, Any], canary: dict[str, Any] | None) -> Labels:
    """The labels ingress-nginx gives a request on the stable Ingress's location; with `canary`, one it sent to
    the canary Ingress's backend (its alternative upstream, `<namespace>-<service>-<port>`)."""
    ns = ingress["metadata"]["namespace"]
    rule, path = _rule_and_path(ingress)
    upstream = ""
    if canary is not None:
        backend = _rule_and_path(canary)[1].get("backend", {}).get("service", {})
        port = backend.get("port") or {}
        upstream = f"{ns}-{backend.get('name', '')}-{port.get('number') or port.get('name') or ''}"
    return (
        ("canary", upstream),
        *NGINX_CONTROLLER.items(),
        ("host", rule.get("host") or "_"),
        ("ingress", ingress["metadata"]["name"]),
        ("method", "GET"),
        ("namespace", ns),
        ("path", path.get("path", "/")),
        ("service", _service(ingress)),
    )


def envoy_cluster(namespace: str, service: str, port: object) -> str:
    """Envoy Gateway's cluster of a Service backend when backends are merged (one cluster per Service and port)."""
    return f"service/{namespace}/{service}/{port}/http"


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
            rule, path = _rule_and_path(ing)
            return ing["metadata"]["namespace"], rule.get("host") or "", path.get("path", "/")

        canaries = {where(i): i for i in items if (i["metadata"].get("annotations") or {}).get(CANARY) == "true"}
        stables = [i for i in items if (i["metadata"].get("annotations") or {}).get(CANARY) != "true"]
        return [(s, canaries.get(where(s))) for s in stables]

    def http_routes(self) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
        """(namespace, HTTPRoute, [(service, port, weight)]) of each route's first rule; none without the CRDs."""
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
            refs = [
                (str(b["name"]), int(b.get("port", 80)), int(b.get("weight", 1))) for b in rule.get("backendRefs") or []
            ]
            out.append((route["metadata"]["namespace"], route["metadata"]["name"], refs))
        return out

    def _requests(self, route: str, seconds: float) -> int:
        self.carry[route] += self.rps * seconds
        count = int(self.carry[route])
        self.carry[route] -= count
        return count

    def tick(self, seconds: float) -> None:
        for ns, name, refs in self.http_routes():
            count, total = self._requests(f"{ns}/{name}", seconds), sum(w for _, _, w in refs)
            if total <= 0 or count <= 0:
                continue
            shares = [count * w // total for _, _, w in refs]
            shares[0] += count - sum(shares)
            for (service, port, weight), share in zip(refs, shares, strict=True):
                cluster = envoy_cluster(ns, service, port)
                for code, latency in self.play(ns, service, share, round(100 * weight / total)):
                    self.metrics.envoy_request(cluster, code, latency)
            if len(refs) > 1:
                self.metrics.weights[f"{ns}/{name}"] = round(100 * sum(w for _, _, w in refs[1:]) / total)
        for stable, canary in self.routes():
            ns, name = stable["metadata"]["namespace"], stable["metadata"]["name"]
            count, weight = self._requests(f"{ns}/{name}", seconds), _canary_weight(canary)
            self.metrics.weights[f"{ns}/{name}"] = weight
            to_canary = round(count * weight / 100)
            for code, latency in self.play(ns, _service(stable), count - to_canary, 100 - weight):
                self.metrics.nginx_request(nginx_labels(stable, None), code, latency)
            if canary is not None:
                for code, latency in self.play(ns, _service(canary), to_canary, weight):
                    self.metrics.nginx_request(nginx_labels(stable, canary), code, latency)

    def play(self, ns: str, service: str, count: int, weight: int) -> list[tuple[str, float]]:
        """(status code, seconds) of `count` requests to the Service, which serves `weight` % of its route."""
        if count <= 0:
            return []
        backend = self.backend(ns, service)
        profile = PROFILES.get(backend.profile, PROFILES["healthy"])
        out = []
        for _ in range(count):
            code, latency = "200", self.rng.lognormvariate(0, 0.3) * profile.latency_ms / 1000
            if not backend.ready:
                code, latency = "503", 0.001
            elif weight >= profile.errors_from_weight and self.rng.random() < profile.error_share:
                code = "500"
            if backend.ready and self.rng.random() < profile.slow_share:
                latency = profile.slow_ms / 1000 * self.rng.uniform(0.9, 1.1)
            out.append((code, latency))
        return out


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data)
    return body


def _conditions(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("conditions") or [])


def _rule_and_path(ingress: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    rule = (ingress["spec"].get("rules") or [{}])[0]
    return rule, ((rule.get("http") or {}).get("paths") or [{}])[0]


def _service(ingress: dict[str, Any]) -> str:
    return str(_rule_and_path(ingress)[1].get("backend", {}).get("service", {}).get("name", ""))


def _canary_weight(canary: dict[str, Any] | None) -> int:
    if canary is None:
        return 0
    try:
        return max(0, min(100, int(canary["metadata"]["annotations"].get(CANARY_WEIGHT, "0"))))
    except ValueError:
        return 0


def serve(sim: Simulator, port: int) -> ThreadingHTTPServer:
    pages = {
        "/metrics": lambda: (sim.metrics.render().encode(), "text/plain; version=0.0.4"),
        "/stats/prometheus": lambda: (sim.metrics.render_envoy().encode(), "text/plain; version=0.0.4"),
        "/weights": lambda: (json.dumps(sim.metrics.weights).encode(), "application/json"),
        "/healthz": lambda: (b"ok\n", "text/plain"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            page = pages.get(self.path)
            if page is None:
                self.send_error(404)
                return
            body, ctype = page()
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
