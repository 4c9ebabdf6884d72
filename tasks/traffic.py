"""Traffic routers: one small interface (ensure, read, set, reset, remove) to shift a share of requests to a canary.

The weight lives only in the cluster. Every call reads it back from the API server, so a run that crashed
between two steps and starts again continues from the weight the cluster actually serves, never from memory.

`NginxCanaryRouter` uses ingress-nginx's canary annotations: beside the stable Ingress it keeps a second Ingress
with the same host and path, pointing at the canary Service, annotated `canary: "true"` and `canary-weight: <n>`.
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
                "annotations": {CANARY: "true", CANARY_WEIGHT: "0"},
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
        patch = {"metadata": {"annotations": {CANARY: "true", CANARY_WEIGHT: str(weight)}}}
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


Router = NginxCanaryRouter  # the union of router kinds once there is more than one

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
