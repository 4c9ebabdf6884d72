"""Parameters every traffic-shifting runbook shares: the cluster, where the metrics are, how traffic is split,
how long to wait for the application's rollout lock, and the pre-deploy checklist run first. One definition, so
canary and blue/green forms agree."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from flows._cluster_source import ClusterSource
from flows.predeploy_checklist import CheckPolicy, Waiver
from rollbook.types import BlockName, LocalPath, ResourceName, Values
from tasks.observers.base import ObserverKind
from tasks.routers.registry import RouterKind


class ChecklistOptions(BaseModel):
    """How the pre-deploy checklist judges the release before any traffic moves (the checklist's own fields;
    the release, chart and values come from the rollout itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    cosign_public_key: LocalPath | None = Field(default=None, description="The cosign public key for signatures.")
    registry_block: BlockName | None = Field(default=None, description="'Rollbook Container Registry' block (key).")
    scanner_executable: LocalPath | None = Field(default=None, description="Scanner binary (default: on PATH).")
    severity_threshold: str = Field(default="critical", description="Fail on findings at or above this severity.")
    migration_checker: str | None = Field(default=None, description="Registered DB migration checker; empty: none.")
    migration_settings: Values = Field(default_factory=dict)
    policy: CheckPolicy = Field(default_factory=CheckPolicy)
    waivers: list[Waiver] = Field(default_factory=list)


class TrafficSource(ClusterSource):
    prometheus_url: HttpUrl | None = Field(default=None, description="Prometheus base URL (or prometheus_block).")
    prometheus_block: BlockName | None = Field(default=None, description="Saved 'Rollbook Prometheus Connection'.")
    router: RouterKind = Field(
        default="nginx",
        description="nginx: a canary Ingress beside the serving one; gateway-api: HTTPRoute backend weights.",
    )
    http_route: ResourceName | None = Field(default=None, description="HTTPRoute name (gateway-api).")
    observer: ObserverKind | None = Field(
        default=None,
        description="Data plane whose metrics the built-in checks query; default: nginx-ingress for the nginx "
        "router, envoy-gateway for gateway-api.",
    )
    lock_timeout_seconds: float = Field(
        default=30, ge=1, le=300, description="Longest wait for the app's lock when it looked free (a race)."
    )
    run_checklist: bool = Field(
        default=True, description="Run the pre-deploy checklist first; a failed verdict stops before any change."
    )
    checklist: ChecklistOptions = Field(default_factory=ChecklistOptions)

    @model_validator(mode="after")
    def _traffic_consistent(self) -> Self:
        if bool(self.prometheus_url) == bool(self.prometheus_block):
            raise ValueError("give exactly one of prometheus_url or prometheus_block")
        if (self.router == "gateway-api") != bool(self.http_route):
            raise ValueError("http_route is required with router=gateway-api, and only then")
        return self
