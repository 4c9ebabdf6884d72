"""ingress-nginx's own metrics, as its controller exports them (the data plane of the nginx router).

`nginx_ingress_controller_requests` (counter) and `nginx_ingress_controller_request_duration_seconds` (histogram,
seconds) carry `namespace`, `ingress`, `service`, `status`, `method`, `path`, `host` and `canary`. A request that
ingress-nginx sends to a canary Ingress's backend is counted under the *stable* Ingress's location (`ingress` and
`service` are the stable ones) with `canary` set to the canary's upstream, `<namespace>-<service>-<port>` (the
controller's Lua monitor records `proxy_alternative_upstream_name`); stable requests have `canary=""`. Flagger's
NGINX tutorial selects canary traffic the same way (`canary!=""`).
"""

from __future__ import annotations

from tasks.observers.base import SUCCESS_RATE, BuiltinCheck, Target, p99, success_rate

REQUESTS = "nginx_ingress_controller_requests"
DURATION_BUCKETS = "nginx_ingress_controller_request_duration_seconds_bucket"


class NginxIngressObserver:
    def matchers(self, target: Target) -> str:
        """The canary's requests on the stable Ingress: namespaces and Service names are DNS labels (no dots or
        regex characters), and ingress-nginx allows one canary per host and path, so the prefix is exact."""
        upstream = f"{target.namespace}-{target.service}-.+"
        return f'namespace="{target.namespace}",ingress="{target.route}",canary=~"{upstream}"'

    def query(self, check: BuiltinCheck, target: Target, window: str) -> str:
        sel = self.matchers(target)
        if check == SUCCESS_RATE:
            return success_rate(REQUESTS, sel, 'status!~"5.."', window)
        return "1000 * " + p99(DURATION_BUCKETS, sel, window)  # seconds -> milliseconds
