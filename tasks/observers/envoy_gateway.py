"""Envoy Gateway's proxies: Envoy's own cluster statistics (the data plane of the gateway-api router).

Envoy exports per upstream cluster `envoy_cluster_upstream_rq_xx` (counter, label `envoy_response_code_class`
"2".."5"), `envoy_cluster_upstream_rq` (counter, `envoy_response_code`), `envoy_cluster_upstream_rq_total` and the
histogram `envoy_cluster_upstream_rq_time` (milliseconds), all labelled `envoy_cluster_name` (Envoy Gateway's
Grafana dashboards in charts/gateway-addons-helm query exactly these).

Which cluster is the canary's: by default Envoy Gateway builds ONE cluster per HTTPRoute rule
(`httproute/<namespace>/<route>/rule/<n>`) with each weighted backendRef as a locality inside it, so cluster
statistics cannot tell the canary's requests from the stable ones. With `mergeBackends` set on the EnvoyProxy
(Envoy Gateway 1.9 and later, experimental there), each Service backend gets its own cluster,
`service/<namespace>/<name>/<port>/http`, and the route's weights become Envoy weighted clusters. This observer
requires that setting: it selects the canary Service's own cluster, on any port and protocol. Without it the
queries find no series, which fails the check as "no data" (never a pass); for a default install, use custom
queries or another observer.
"""

from __future__ import annotations

from tasks.observers.base import SUCCESS_RATE, BuiltinCheck, Target, p99, success_rate

REQUESTS_BY_CLASS = "envoy_cluster_upstream_rq_xx"
DURATION_BUCKETS = "envoy_cluster_upstream_rq_time_bucket"


class EnvoyGatewayObserver:
    def matchers(self, target: Target) -> str:
        return f'envoy_cluster_name=~"service/{target.namespace}/{target.service}/[0-9]+(/.+)?"'

    def query(self, check: BuiltinCheck, target: Target, window: str) -> str:
        sel = self.matchers(target)
        if check == SUCCESS_RATE:
            return success_rate(REQUESTS_BY_CLASS, sel, 'envoy_response_code_class!="5"', window)
        return p99(DURATION_BUCKETS, sel, window)  # Envoy's histogram is already in milliseconds
