"""The nginx router: ingress-nginx's canary annotations on a router-owned canary Ingress beside the stable one.

Beside the stable Ingress it keeps a second Ingress with the same host and path, pointing at the canary Service,
annotated `canary: "true"` and `canary-weight: <n>`. ingress-nginx merges it into the stable Ingress's location
as an alternative backend, so the controller's metrics for canary requests carry the stable Ingress's name and
a non-empty `canary` label (what the nginx-ingress observer queries).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.routers.base import MANAGED_BY_LABEL, RouterError, check_weight, on_conflict_reread

NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = NGINX_PREFIX + "canary"
CANARY_WEIGHT = NGINX_PREFIX + "canary-weight"


class NginxCanaryRouter(BaseModel):
    """ingress-nginx canary annotations on a router-owned canary Ingress beside the stable one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["nginx"] = "nginx"
    namespace: str
    stable_ingress: str = Field(description="The Ingress that serves the stable version (left untouched).")
    canary_service: str = Field(description="Service of the new version that the canary Ingress sends traffic to.")
    canary_ingress: str = Field(default="", description="Name of the canary Ingress; default <stable_ingress>-canary.")
    change: dict[str, str] = Field(
        default_factory=dict, description="Annotations written with every change (who, which flow run, why)."
    )

    @classmethod
    def for_rollout(
        cls,
        *,
        namespace: str,
        stable_service: str,
        canary_service: str,
        stable_ingress: str | None,
        http_route: str | None,
        change: dict[str, str],
    ) -> NginxCanaryRouter:
        if stable_ingress is None:
            raise ValueError(f"service {stable_service!r} has no Ingress to split traffic from")
        return cls(namespace=namespace, stable_ingress=stable_ingress, canary_service=canary_service, change=change)

    @property
    def canary_name(self) -> str:
        return self.canary_ingress or f"{self.stable_ingress}-canary"

    @property
    def route(self) -> str:
        return self.stable_ingress

    def _net(self, api: k8s_client.ApiClient) -> k8s_client.NetworkingV1Api:
        return k8s_client.NetworkingV1Api(api)

    def _get(self, api: k8s_client.ApiClient, name: str) -> dict[str, Any] | None:
        try:
            resp = self._net(api).read_namespaced_ingress(
                name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(resp.data)  # type: ignore[attr-defined]
        return body

    def _weight_of(self, ingress: dict[str, Any]) -> int:
        annotations = ingress["metadata"].get("annotations") or {}
        if annotations.get(CANARY) != "true":
            raise RouterError(f"ingress {self.namespace}/{self.canary_name} exists but is not a canary Ingress")
        raw = annotations.get(CANARY_WEIGHT, "0")
        try:
            return check_weight(int(raw))
        except ValueError:
            raise RouterError(f"ingress {self.namespace}/{self.canary_name} has canary-weight {raw!r}") from None

    def read_weight(self, api: k8s_client.ApiClient) -> int:
        """The weight the cluster serves now: 0 when there is no canary Ingress yet."""
        ingress = self._get(api, self.canary_name)
        return 0 if ingress is None else self._weight_of(ingress)

    def _canary_body(self, stable: dict[str, Any]) -> dict[str, Any]:
        """A copy of the stable Ingress's rules sending to the canary Service, at weight 0."""
        spec = copy.deepcopy(stable["spec"])
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                port = path["backend"]["service"].get("port") or {"name": "http"}
                path["backend"] = {"service": {"name": self.canary_service, "port": port}}
        spec.pop("defaultBackend", None)
        return {
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

    def ensure(self, api: k8s_client.ApiClient) -> int:
        """Create the canary Ingress at weight 0 if it is missing; an existing one keeps its weight. Returns the
        weight now served."""
        if self._get(api, self.canary_name) is not None:
            return self.read_weight(api)
        stable = self._get(api, self.stable_ingress)
        if stable is None:
            raise RouterError(f"stable ingress {self.namespace}/{self.stable_ingress} not found")
        if (stable["metadata"].get("annotations") or {}).get(CANARY) == "true":
            raise RouterError(f"ingress {self.namespace}/{self.stable_ingress} is itself a canary Ingress")
        try:
            self._net(api).create_namespaced_ingress(
                self.namespace,
                self._canary_body(stable),  # type: ignore[arg-type]
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status != 409:  # created by a concurrent or earlier attempt: keep its weight
                raise
        return self.read_weight(api)

    def _patch_weight(self, api: k8s_client.ApiClient, weight: int) -> None:
        """One write guarded by the resourceVersion just read (a concurrent edit answers 409)."""
        ingress = self._get(api, self.canary_name)
        if ingress is None:
            raise RouterError(f"canary ingress {self.namespace}/{self.canary_name} not found (call ensure first)")
        patch = {
            "metadata": {
                "resourceVersion": ingress["metadata"]["resourceVersion"],
                "annotations": {**self.change, CANARY: "true", CANARY_WEIGHT: str(weight)},
            }
        }
        self._net(api).patch_namespaced_ingress(
            self.canary_name, self.namespace, patch, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int:
        """Serve `weight` percent to the canary; returns the weight read back from the cluster."""
        check_weight(weight)
        on_conflict_reread(lambda: self._patch_weight(api, weight), f"ingress {self.namespace}/{self.canary_name}")
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
            self._net(api).delete_namespaced_ingress(
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
