"""The router registry and the optimistic-write loop, without a cluster (the routers' writes are proven on the
sandbox in tests/integration/test_progressive_traffic.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from rollbook.plugins import UnknownKind
from tasks.routers.base import CONFLICT_ATTEMPTS, RouterError, check_weight, on_conflict_reread
from tasks.routers.gateway_api import GatewayApiRouter
from tasks.routers.nginx import NginxCanaryRouter
from tasks.routers.registry import ROUTERS, make_router

CHANGE = {"rollbook.dev/reason": "test"}


def _route(stable_ingress: str | None, http_route: str | None) -> dict[str, Any]:
    return {
        "namespace": "ns",
        "stable_service": "web",
        "canary_service": "web-next",
        "stable_ingress": stable_ingress,
        "http_route": http_route,
        "change": CHANGE,
    }


def test_make_router_builds_the_registered_kind_from_the_release_routing() -> None:
    assert set(ROUTERS) == {"nginx", "gateway-api"}
    nginx = make_router("nginx", **_route("web-ing", None))
    assert isinstance(nginx, NginxCanaryRouter) and nginx.route == "web-ing" and nginx.canary_name == "web-ing-canary"
    assert nginx.change == CHANGE and nginx.canary_service == "web-next"
    gateway = make_router("gateway-api", **_route(None, "web-route"))
    assert isinstance(gateway, GatewayApiRouter) and gateway.route == "web-route" and gateway.stable_service == "web"
    with pytest.raises(ValueError, match="service 'web' has no Ingress to split traffic from"):
        make_router("nginx", **_route(None, None))
    with pytest.raises(ValueError, match="needs an HTTPRoute name"):
        make_router("gateway-api", **_route("web-ing", None))
    with pytest.raises(UnknownKind, match="unknown traffic router 'traefik'; known: gateway-api, nginx"):
        make_router("traefik", **_route("web-ing", None))


def test_a_write_that_lost_a_race_is_computed_again_from_a_fresh_read() -> None:
    attempts: list[int] = []

    def write() -> str:
        attempts.append(1)
        if len(attempts) < CONFLICT_ATTEMPTS:
            raise ApiException(status=409, reason="Conflict")
        return "written"

    assert on_conflict_reread(write, "ingress ns/web-canary") == "written"
    assert len(attempts) == CONFLICT_ATTEMPTS


def test_conflicts_that_never_stop_name_the_object_and_other_errors_pass_through() -> None:
    def conflict() -> None:
        raise ApiException(status=409, reason="Conflict")

    with pytest.raises(RouterError, match="ingress ns/web-canary kept changing under us"):
        on_conflict_reread(conflict, "ingress ns/web-canary")

    def forbidden() -> None:
        raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException) as exc:
        on_conflict_reread(forbidden, "ingress ns/web-canary")
    assert exc.value.status == 403


def test_weights_are_whole_percentages() -> None:
    assert check_weight(0) == 0 and check_weight(100) == 100
    for bad in (-1, 101, True, 12.5):
        with pytest.raises(RouterError, match="0 to 100"):
            check_weight(bad)  # type: ignore[arg-type]
