"""The observer kinds, and which one a traffic router's data plane uses unless the request names another."""

from __future__ import annotations

from rollbook.plugins import lookup, registry
from tasks.observers.base import Observer, ObserverKind
from tasks.observers.envoy_gateway import EnvoyGatewayObserver
from tasks.observers.nginx_ingress import NginxIngressObserver
from tasks.routers.registry import RouterKind

OBSERVERS: dict[str, Observer] = registry(
    ObserverKind, {"nginx-ingress": NginxIngressObserver(), "envoy-gateway": EnvoyGatewayObserver()}
)
# The nginx router writes ingress-nginx canary Ingresses; the Gateway API is judged on Envoy Gateway's proxies.
DEFAULT_OBSERVERS: dict[str, ObserverKind] = registry(
    RouterKind, {"nginx": "nginx-ingress", "gateway-api": "envoy-gateway"}
)


def observer(kind: str) -> Observer:
    return lookup(OBSERVERS, kind, concern="metrics observer")


def observer_for(router: str, override: ObserverKind | None = None) -> ObserverKind:
    """The observer a rollout's built-in checks use: `override` when given, else the router's data plane."""
    if override is not None:
        return override
    return lookup(DEFAULT_OBSERVERS, router, concern="traffic router")
