"""Parameters every traffic-shifting runbook shares: the cluster, where the metrics are, how traffic is split,
and how long to wait for the application's rollout lock. One definition, so canary and blue/green forms agree."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, HttpUrl, model_validator

from flows._cluster_source import DNS_LABEL, ClusterSource


class TrafficSource(ClusterSource):
    prometheus_url: HttpUrl | None = Field(default=None, description="Prometheus base URL (or prometheus_block).")
    prometheus_block: str | None = Field(default=None, description="Saved 'Rollbook Prometheus Connection' block.")
    router: Literal["nginx", "gateway-api"] = Field(
        default="nginx",
        description="nginx: a canary Ingress beside the serving one; gateway-api: HTTPRoute backend weights.",
    )
    http_route: str | None = Field(default=None, pattern=DNS_LABEL, description="HTTPRoute name (gateway-api).")
    lock_timeout_seconds: float = Field(
        default=30, ge=1, le=300, description="Longest wait for the app's lock when it looked free (a race)."
    )

    @model_validator(mode="after")
    def _traffic_consistent(self) -> Self:
        if bool(self.prometheus_url) == bool(self.prometheus_block):
            raise ValueError("give exactly one of prometheus_url or prometheus_block")
        if (self.router == "gateway-api") != bool(self.http_route):
            raise ValueError("http_route is required with router=gateway-api, and only then")
        return self
