"""The Gateway API router: backend weights on an HTTPRoute's rules (stable and canary Services side by side).

The HTTPRoute is the application's own (the router never creates it); `ensure` adds the canary backend at weight 0
to every rule that sends to the stable Service. Weights are relative in Gateway API, so the served percentage is
canary / (stable + canary), read back from the route. Every replace carries the resourceVersion it was computed
from, so a concurrent edit is never overwritten (the change is computed again from a fresh read).
"""

from __future__ import annotations

from typing import Any, Literal

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field

from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.routers.base import RouterError, check_weight, on_conflict_reread

GATEWAY_API = ("gateway.networking.k8s.io", "v1")
HTTPROUTES = "httproutes"


class GatewayApiRouter(BaseModel):
    """Gateway API: backend weights on an HTTPRoute's rules (stable and canary Services side by side)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["gateway-api"] = "gateway-api"
    namespace: str
    http_route: str
    stable_service: str
    canary_service: str
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
    ) -> GatewayApiRouter:
        if not http_route:
            raise ValueError("the gateway-api router needs an HTTPRoute name")
        return cls(
            namespace=namespace,
            http_route=http_route,
            stable_service=stable_service,
            canary_service=canary_service,
            change=change,
        )

    @property
    def route(self) -> str:
        return self.http_route

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

    def _replace(self, api: k8s_client.ApiClient, route: dict[str, Any]) -> None:
        """Write back a route read by `_get` (its metadata still holds the resourceVersion read), annotated."""
        meta = route.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **self.change}
        self._api(api).replace_namespaced_custom_object(
            *GATEWAY_API, self.namespace, HTTPROUTES, self.http_route, route, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )

    def _sends_to_stable(self, route: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in route["spec"].get("rules") or []
            if any(b.get("name") == self.stable_service for b in r.get("backendRefs") or [])
        ]

    def _rules(self, route: dict[str, Any]) -> list[dict[str, Any]]:
        rules = self._sends_to_stable(route)
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

    def _has_canary(self, route: dict[str, Any]) -> bool:
        return self.canary_service in {b.get("name") for b in self._rules(route)[0].get("backendRefs") or []}

    def read_weight(self, api: k8s_client.ApiClient) -> int:
        stable, canary = self._weights(self._rules(self._get(api))[0])
        return 0 if stable + canary == 0 else round(100 * canary / (stable + canary))

    def _write_once(self, api: k8s_client.ApiClient, weight: int | None) -> None:
        route = self._get(api)
        for rule in self._rules(route):
            refs = [b for b in rule["backendRefs"] if b.get("name") != self.canary_service]
            stable = next(b for b in refs if b.get("name") == self.stable_service)
            stable["weight"] = 100 - (weight or 0)
            if weight is not None:
                refs.append({**{k: v for k, v in stable.items() if k != "weight"}, "name": self.canary_service})
                refs[-1]["weight"] = weight
            rule["backendRefs"] = refs
        self._replace(api, route)

    def _write(self, api: k8s_client.ApiClient, weight: int | None) -> int:
        """Set every matching rule to 100-weight / weight; None drops the canary backend."""
        on_conflict_reread(lambda: self._write_once(api, weight), f"HTTPRoute {self.namespace}/{self.http_route}")
        return self.read_weight(api)

    def ensure(self, api: k8s_client.ApiClient) -> int:
        if self._has_canary(self._get(api)):
            return self.read_weight(api)
        return self._write(api, 0)

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int:
        check_weight(weight)
        served = self._write(api, weight)
        if served != weight:
            raise RouterError(f"set HTTPRoute weight {weight} but the route serves {served}")
        return served

    def reset(self, api: k8s_client.ApiClient) -> int:
        if not self._has_canary(self._get(api)):
            return 0
        return self.set_weight(api, 0)

    def remove(self, api: k8s_client.ApiClient) -> bool:
        present = self._has_canary(self._get(api))
        if present:
            self._write(api, None)
        return present

    def _hand_over_once(self, api: k8s_client.ApiClient) -> bool:
        route = self._get(api)
        rules = self._sends_to_stable(route)
        if not rules:
            return False
        for rule in rules:
            if not any(b.get("name") == self.canary_service for b in rule["backendRefs"]):
                raise RouterError(
                    f"HTTPRoute {self.namespace}/{self.http_route} has no {self.canary_service} backend to hand over to"
                )
            rule["backendRefs"] = [b for b in rule["backendRefs"] if b.get("name") != self.stable_service]
        self._replace(api, route)
        return True

    def hand_over(self, api: k8s_client.ApiClient) -> bool:
        """Blue/green's switch: every rule that sends to the stable Service sends to the canary Service only, so
        the stable release can be retired. Only after a full shift (the canary backend must be there); False when
        no rule sends to stable any more (done before: a retried call changes nothing)."""
        return on_conflict_reread(lambda: self._hand_over_once(api), f"HTTPRoute {self.namespace}/{self.http_route}")
