"""Parameters every traffic-shifting runbook shares: the cluster, where the metrics are, how traffic is split,
how long to wait for the application's rollout lock, and the pre-deploy checklist run first. One definition, so
canary and blue/green forms agree."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import Field, HttpUrl, model_validator

from flows._checklist_gate import ChecklistOptions
from flows._cluster_source import ClusterSource
from rollbook.form_rules import exactly_one, given, rule, when_value
from rollbook.types import BlockName, FormOptional, ResourceName
from tasks.observers.base import ObserverKind
from tasks.routers.registry import RouterKind


class TrafficSource(ClusterSource):
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        exactly_one("prometheus_url", "prometheus_block", "give exactly one of prometheus_url or prometheus_block"),
        rule(
            "http_route is required with router=gateway-api, and only then",
            {
                "if": when_value("router", "gateway-api"),
                "then": given("http_route"),
                "else": {"not": given("http_route")},
            },
        ),
    )

    prometheus_url: FormOptional[HttpUrl] = Field(
        default=None, description="Prometheus base URL (or prometheus_block)."
    )
    prometheus_block: FormOptional[BlockName] = Field(
        default=None, description="Saved 'Rollbook Prometheus Connection'."
    )
    router: RouterKind = Field(
        default="nginx",
        description="nginx: a canary Ingress beside the serving one; gateway-api: HTTPRoute backend weights.",
    )
    http_route: FormOptional[ResourceName] = Field(default=None, description="HTTPRoute name (gateway-api).")
    observer: FormOptional[ObserverKind] = Field(
        default=None,
        description="Data plane whose metrics the built-in checks query; default: nginx-ingress for the nginx "
        "router, envoy-gateway for gateway-api.",
    )
    run_checklist: bool = Field(
        default=True, description="Run the pre-deploy checklist first; a failed verdict stops before any change."
    )
    checklist: ChecklistOptions = Field(default=ChecklistOptions(), description="How the checklist judges the release.")

    @model_validator(mode="after")
    def _traffic_consistent(self) -> Self:
        if bool(self.prometheus_url) == bool(self.prometheus_block):
            raise ValueError("give exactly one of prometheus_url or prometheus_block")
        if (self.router == "gateway-api") != bool(self.http_route):
            raise ValueError("http_route is required with router=gateway-api, and only then")
        return self
