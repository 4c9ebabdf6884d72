"""Traffic routers: one small interface (ensure, read, set, reset, remove, hand over) to shift requests to a canary.

The weight lives only in the cluster. Every call reads it back from the API server, so a run that crashed
between two steps and starts again continues from the weight the cluster actually serves, never from memory.

`NginxCanaryRouter` uses ingress-nginx's canary annotations: beside the stable Ingress it keeps a second Ingress
with the same host and path, pointing at the canary Service, annotated `canary: "true"` and `canary-weight: <n>`.
`GatewayApiRouter` sets the backend weights of an HTTPRoute (stable and canary Services in the same rule).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import retry_transient

NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = NGINX_PREFIX + "canary"
CANARY_WEIGHT = NGINX_PREFIX + "canary-weight"
MANAGED_BY_LABEL = "rollbook.dev/traffic-router"


class RouterError(ValueError):
    """The routing objects are missing or not what the router expects (permanent: never retried)."""


class TrafficRouter(Protocol):
    """What a flow needs from a router; `api` is an open Kubernetes ApiClient."""

    def ensure(self, api: k8s_client.ApiClient) -> int: ...

    def read_weight(self, api: k8s_client.ApiClient) -> int: ...

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int: ...

    def reset(self, api: k8s_client.ApiClient) -> int: ...

    def remove(self, api: k8s_client.ApiClient) -> bool: ...

    def hand_over(self, api: k8s_client.ApiClient) -> bool: ...


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise RouterError(f"weight must be an integer from 0 to 100, got {weight!r}")
    return weight


class NginxCanaryRouter(BaseModel):
    """ingress-nginx canary annotations on a router-owned canary Ingress beside the stable one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default="nginx", pattern="^nginx$")
    namespace: str
    stable_ingress: str = Field(description="The Ingress that serves the stable version (left untouched).")
    canary_service: str = Field(description="Service of the new version that the canary Ingress sends traffic to.")
    canary_ingress: str = Field(default="", description="Name of the canary Ingress; default <stable_ingress>-canary.")
    change: dict[str, str] = Field(
        default_factory=dict, description="Annotations written with every change (who, which flow run, why)."
    )

    @property
    def canary_name(self) -> str:
        return self.canary_ingress or f"{self.stable_ingress}-canary"

    # -- reads -------------------------------------------------------------------------------------------------

    def _get(self, api: k8s_client.ApiClient, name: str) -> dict[str, Any] | None:
        try:
            resp = k8s_client.NetworkingV1Api(api).read_namespaced_ingress(
                name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(resp.data)  # type: ignore[attr-defined]
        return body

    def read_weight(self, api: k8s_client.ApiClient) -> int:
        """The weight the cluster serves now: 0 when there is no canary Ingress yet."""
        ingress = self._get(api, self.canary_name)
        if ingress is None:
            return 0
        annotations = ingress["metadata"].get("annotations") or {}
        if annotations.get(CANARY) != "true":
            raise RouterError(f"ingress {self.namespace}/{self.canary_name} exists but is not a canary Ingress")
        raw = annotations.get(CANARY_WEIGHT, "0")
        try:
            return check_weight(int(raw))
        except ValueError:
            raise RouterError(f"ingress {self.namespace}/{self.canary_name} has canary-weight {raw!r}") from None

    # -- writes ------------------------------------------------------------------------------------------------

    def ensure(self, api: k8s_client.ApiClient) -> int:
        """Create the canary Ingress at weight 0 if it is missing (a copy of the stable rules, canary backend);
        an existing one keeps its weight. Returns the weight now served."""
        if self._get(api, self.canary_name) is not None:
            return self.read_weight(api)
        stable = self._get(api, self.stable_ingress)
        if stable is None:
            raise RouterError(f"stable ingress {self.namespace}/{self.stable_ingress} not found")
        if (stable["metadata"].get("annotations") or {}).get(CANARY) == "true":
            raise RouterError(f"ingress {self.namespace}/{self.stable_ingress} is itself a canary Ingress")
        spec = copy.deepcopy(stable["spec"])
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                port = path["backend"]["service"].get("port") or {"name": "http"}
                path["backend"] = {"service": {"name": self.canary_service, "port": port}}
        spec.pop("defaultBackend", None)
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": self.canary_name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: "nginx", "rollbook.dev/stable-ingress": self.stable_ingress},
                "annotations": {**self.change, CANARY: "true", CANARY_WEIGHT: "0"},
            },
            "spec": spec,
        }
        try:
            k8s_client.NetworkingV1Api(api).create_namespaced_ingress(
                self.namespace,
                body,  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status != 409:  # created by a concurrent or earlier attempt: keep its weight
                raise
        return self.read_weight(api)

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int:
        """Serve `weight` percent to the canary; returns the weight read back from the cluster."""
        check_weight(weight)
        if self._get(api, self.canary_name) is None:
            raise RouterError(f"canary ingress {self.namespace}/{self.canary_name} not found (call ensure first)")
        patch = {"metadata": {"annotations": {**self.change, CANARY: "true", CANARY_WEIGHT: str(weight)}}}
        k8s_client.NetworkingV1Api(api).patch_namespaced_ingress(
            self.canary_name, self.namespace, patch, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        served = self.read_weight(api)
        if served != weight:
            raise RouterError(f"set canary-weight {weight} but the cluster serves {served}")
        return served

    def reset(self, api: k8s_client.ApiClient) -> int:
        """All traffic back to stable (weight 0); a missing canary Ingress already means 0."""
        if self._get(api, self.canary_name) is None:
            return 0
        return self.set_weight(api, 0)

    def remove(self, api: k8s_client.ApiClient) -> bool:
        """Delete the canary Ingress; True if it existed."""
        try:
            k8s_client.NetworkingV1Api(api).delete_namespaced_ingress(
                self.canary_name, self.namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def hand_over(self, api: k8s_client.ApiClient) -> bool:
        """Blue/green's switch: the caller has moved the main Ingress to the canary release (with Helm), so the
        canary Ingress is no longer needed; True if it existed."""
        return self.remove(api)


class GatewayApiRouter(BaseModel):
    """Gateway API: backend weights on an HTTPRoute's rules (stable and canary Services side by side).

    The HTTPRoute is the application's own (the router never creates it); `ensure` adds the canary backend at
    weight 0 to every rule that sends to the stable Service. Weights are relative in Gateway API, so the
    served percentage is canary / (stable + canary), read back from the route.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default="gateway-api", pattern="^gateway-api$")
    namespace: str
    http_route: str
    stable_service: str
    canary_service: str
    change: dict[str, str] = Field(
        default_factory=dict, description="Annotations written with every change (who, which flow run, why)."
    )

    def _api(self, api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
        return k8s_client.CustomObjectsApi(api)

    def _get(self, api: k8s_client.ApiClient) -> dict[str, Any]:
        try:
            route: dict[str, Any] = self._api(api).get_namespaced_custom_object(
                *GATEWAY_API, self.namespace, HTTPROUTES, self.http_route, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )  # type: ignore[assignment]
        except ApiException as exc:
            if exc.status == 404:
                raise RouterError(f"HTTPRoute {self.namespace}/{self.http_route} not found") from None
            raise
        return route

    def _annotate(self, route: dict[str, Any]) -> None:
        meta = route.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **self.change}

    def _rules(self, route: dict[str, Any]) -> list[dict[str, Any]]:
        rules = [
            r
            for r in route["spec"].get("rules") or []
            if any(b.get("name") == self.stable_service for b in r.get("backendRefs") or [])
        ]
        if not rules:
            raise RouterError(
                f"HTTPRoute {self.namespace}/{self.http_route} has no rule sending to {self.stable_service}"
            )
        return rules

    def _weights(self, rule: dict[str, Any]) -> tuple[int, int]:
        refs = {b.get("name"): b for b in rule.get("backendRefs") or []}
        stable = int(refs[self.stable_service].get("weight", 1))
        canary = int(refs[self.canary_service].get("weight", 1)) if self.canary_service in refs else 0
        return stable, canary

    def read_weight(self, api: k8s_client.ApiClient) -> int:
        stable, canary = self._weights(self._rules(self._get(api))[0])
        return 0 if stable + canary == 0 else round(100 * canary / (stable + canary))

    def _write(self, api: k8s_client.ApiClient, weight: int | None) -> int:
        """Set every matching rule to 100-weight / weight; None drops the canary backend. Optimistic: the replace
        carries the resourceVersion read, so a concurrent edit makes it fail (and the task retry re-reads)."""
        route = self._get(api)
        for rule in self._rules(route):
            refs = [b for b in rule["backendRefs"] if b.get("name") != self.canary_service]
            stable = next(b for b in refs if b.get("name") == self.stable_service)
            stable["weight"] = 100 - (weight or 0)
            if weight is not None:
                refs.append({**{k: v for k, v in stable.items() if k != "weight"}, "name": self.canary_service})
                refs[-1]["weight"] = weight
            rule["backendRefs"] = refs
        self._annotate(route)
        self._api(api).replace_namespaced_custom_object(
            *GATEWAY_API, self.namespace, HTTPROUTES, self.http_route, route, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        return self.read_weight(api)

    def ensure(self, api: k8s_client.ApiClient) -> int:
        route = self._get(api)
        rule = self._rules(route)[0]
        if any(b.get("name") == self.canary_service for b in rule.get("backendRefs") or []):
            return self.read_weight(api)
        return self._write(api, 0)

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int:
        check_weight(weight)
        served = self._write(api, weight)
        if served != weight:
            raise RouterError(f"set HTTPRoute weight {weight} but the route serves {served}")
        return served

    def reset(self, api: k8s_client.ApiClient) -> int:
        if self.canary_service not in {b.get("name") for b in self._rules(self._get(api))[0]["backendRefs"]}:
            return 0
        return self.set_weight(api, 0)

    def remove(self, api: k8s_client.ApiClient) -> bool:
        present = self.canary_service in {b.get("name") for b in self._rules(self._get(api))[0]["backendRefs"]}
        if present:
            self._write(api, None)
        return present

    def hand_over(self, api: k8s_client.ApiClient) -> bool:
        """Blue/green's switch: every rule that sends to the stable Service sends to the canary Service only, so
        the stable release can be retired. Only after a full shift (the canary backend must be there); False when
        no rule sends to stable any more (done before: a retried call changes nothing)."""
        route = self._get(api)
        rules = [
            r
            for r in route["spec"].get("rules") or []
            if any(b.get("name") == self.stable_service for b in r.get("backendRefs") or [])
        ]
        if not rules:
            return False
        for rule in rules:
            if not any(b.get("name") == self.canary_service for b in rule["backendRefs"]):
                raise RouterError(
                    f"HTTPRoute {self.namespace}/{self.http_route} has no {self.canary_service} backend to hand over to"
                )
            rule["backendRefs"] = [b for b in rule["backendRefs"] if b.get("name") != self.stable_service]
        self._annotate(route)
        self._api(api).replace_namespaced_custom_object(
            *GATEWAY_API, self.namespace, HTTPROUTES, self.http_route, route, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
        return True


GATEWAY_API = ("gateway.networking.k8s.io", "v1")
HTTPROUTES = "httproutes"

Router = NginxCanaryRouter | GatewayApiRouter


def make_router(
    kind: str,
    namespace: str,
    stable_service: str,
    canary_service: str,
    stable_ingress: str | None,
    http_route: str | None,
    change: dict[str, str],
) -> Router:
    """The router of a rollout, built the same way by every flow that shifts traffic (and by its revert);
    `change` annotates every object it writes."""
    if kind == "gateway-api":
        if not http_route:
            raise ValueError("the gateway-api router needs an HTTPRoute name")
        return GatewayApiRouter(
            namespace=namespace,
            http_route=http_route,
            stable_service=stable_service,
            canary_service=canary_service,
            change=change,
        )
    if stable_ingress is None:
        raise ValueError(f"service {stable_service!r} has no Ingress to split traffic from")
    return NginxCanaryRouter(
        namespace=namespace, stable_ingress=stable_ingress, canary_service=canary_service, change=change
    )


_RETRY: dict[str, Any] = dict(
    retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient, timeout_seconds=60
)


@task(**_RETRY)
def ensure_route(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.ensure(api)


@task(**_RETRY)
def read_weight(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.read_weight(api)


@task(**_RETRY)
def set_weight(cluster: KubernetesCluster, router: Router, weight: int) -> int:
    """Idempotent: setting the weight already served is a no-op write, so a retried step never shifts twice."""
    with cluster.api_client() as api:
        return router.set_weight(api, weight)


@task(**_RETRY)
def reset_route(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.reset(api)


@task(**_RETRY)
def remove_route(cluster: KubernetesCluster, router: Router) -> bool:
    with cluster.api_client() as api:
        return router.remove(api)


@task(**_RETRY)
def hand_over_route(cluster: KubernetesCluster, router: Router) -> bool:
    """After a full shift, make the canary the route's only backend (blue/green's finish)."""
    with cluster.api_client() as api:
        return router.hand_over(api)
