"""The router kinds and the one way a flow builds a router (canary and blue/green alike, and their reverts)."""

from __future__ import annotations

from typing import Literal

from rollbook.plugins import lookup, registry
from tasks.routers.base import TrafficRouter
from tasks.routers.gateway_api import GatewayApiRouter
from tasks.routers.nginx import NginxCanaryRouter

RouterKind = Literal["nginx", "gateway-api"]
Router = NginxCanaryRouter | GatewayApiRouter

ROUTERS: dict[str, type[Router]] = registry(RouterKind, {"nginx": NginxCanaryRouter, "gateway-api": GatewayApiRouter})


def make_router(
    kind: str,
    *,
    namespace: str,
    stable_service: str,
    canary_service: str,
    stable_ingress: str | None,
    http_route: str | None,
    change: dict[str, str],
) -> Router:
    """The router of a rollout; `change` annotates every object it writes. Each implementation takes what it
    needs from the release's routing (the stable Ingress for nginx, the HTTPRoute for the Gateway API)."""
    implementation = lookup(ROUTERS, kind, concern="traffic router")
    return implementation.for_rollout(
        namespace=namespace,
        stable_service=stable_service,
        canary_service=canary_service,
        stable_ingress=stable_ingress,
        http_route=http_route,
        change=change,
    )


def as_traffic_router(router: Router) -> TrafficRouter:
    """Where mypy checks that every registered router implements the interface flows rely on."""
    return router
