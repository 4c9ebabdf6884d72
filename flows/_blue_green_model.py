"""The blue/green runbooks' parameters and results (blue-green and its follow-up blue-green-retire)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, HttpUrl, model_validator

from flows._canary_model import (
    METRICS_HELP,
    WEBHOOKS_HELP,
    CanaryAnalysis,
    CanaryRequest,
    CanaryResult,
    GateAnswer,
    check_steps,
    default_metrics,
)
from flows._cluster_source import ClusterSource
from flows._schema_gate import SchemaGuardFields
from flows._traffic_source import TrafficSource
from rollbook.change import ChangeResult
from rollbook.types import ChartRef, FormOptional, ImageTag, LocalPath, Namespace, ReleaseName, Values
from tasks.metrics.checks import MetricCheck
from tasks.webhooks import Webhook

# the canary analysis runs at most this many checks per step (CanaryAnalysis.iterations)
MAX_CHECKS_PER_STEP = 100


class BlueGreenRequest(TrafficSource, SchemaGuardFields):
    namespace: Namespace = Field(description="Namespace of both releases.")
    blue_release: ReleaseName = Field(description="Serves users now.")
    green_release: ReleaseName = Field(description="Installed by the run.")
    chart: ChartRef = Field(description="Chart of blue (path or reference); green uses the same.")
    version: ImageTag = Field(description="Image tag green runs.")
    green_values: Values = Field(default={}, description="Extra values for green only.")
    helm_executable: LocalPath = Field(default="helm")
    timeout_seconds: int = Field(default=300, ge=10, le=3600, description="helm --wait timeout.")
    steps: list[int] = Field(default=[10, 25, 50, 75, 100], description="Weights; must end at 100.")
    interval_seconds: int = Field(default=30, ge=1, le=3600, description="Time between two checks at a step.")
    window_seconds: int = Field(default=120, ge=1, le=24 * 3600, description="How long each step is observed.")
    threshold: int = Field(default=3, ge=1, le=100, description="Failed checks (in total) that revert to blue.")
    metrics: list[MetricCheck] = Field(default=default_metrics(), min_length=1, description=METRICS_HELP)
    webhooks: list[Webhook] = Field(default=[], description=WEBHOOKS_HELP)
    acceptance_url: FormOptional[HttpUrl] = Field(
        default=None, description="GET that must answer 2xx before any shift."
    )
    acceptance_command: list[str] | None = Field(default=None, description="Command that must exit 0 before any shift.")
    acceptance_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    approval_timeout_seconds: int = Field(default=3600, ge=5, le=7 * 24 * 3600)
    on_approval_timeout: Literal["revert", "hold"] = "revert"
    keep_blue_seconds: int = Field(default=0, ge=0, le=30 * 24 * 3600, description="0: uninstall blue at the end.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_steps(self.steps, "steps")  # the messages name this form's field, not the canary's step_weights
        if self.steps[-1] != 100:
            raise ValueError(f"steps must end at 100 (blue/green moves all traffic to green), got {self.steps}")
        if self.blue_release == self.green_release:
            raise ValueError("blue_release and green_release must differ")
        checks = self.window_seconds // self.interval_seconds
        if checks > MAX_CHECKS_PER_STEP:
            raise ValueError(
                f"window_seconds {self.window_seconds} / interval_seconds {self.interval_seconds} asks for {checks} "
                f"checks per step; at most {MAX_CHECKS_PER_STEP}: raise interval_seconds or shorten window_seconds"
            )
        return self

    def analysis(self) -> CanaryAnalysis:
        return CanaryAnalysis(
            interval_seconds=self.interval_seconds,
            iterations=max(1, self.window_seconds // self.interval_seconds),
            threshold=self.threshold,
            step_weights=self.steps,
            metrics=self.metrics,
            webhooks=self.webhooks,
        )

    def shift_request(self) -> CanaryRequest:
        """The canary-rollout subflow that moves the traffic: no promotion (blue/green finishes on its own), no
        second checklist (this run's already passed), a gate before 100%."""
        return CanaryRequest(
            cluster_block=self.cluster_block,
            kubeconfig_path=self.kubeconfig_path,
            context=self.context,
            namespace=self.namespace,
            stable_release=self.blue_release,
            canary_release=self.green_release,
            chart=self.chart,
            helm_executable=self.helm_executable,
            prometheus_url=self.prometheus_url,
            prometheus_block=self.prometheus_block,
            analysis=self.analysis(),
            approve_before_final_step=True,
            promote=False,
            approval_timeout_seconds=self.approval_timeout_seconds,
            on_approval_timeout=self.on_approval_timeout,
            router=self.router,
            http_route=self.http_route,
            observer=self.observer,
            run_checklist=False,
        )


# How a blue/green run ended: switched (green serves everyone, blue retired or scheduled), held (an approver kept
# the weight), reverted (an approver or a timeout sent traffic back to blue), planned / not-approved (nothing
# changed). Failed checks raise (RolloutStopped before traffic moved, CanaryReverted after).
BlueGreenStage = Literal["switched", "held", "reverted", "planned", "not-approved"]


class BlueGreenResult(ChangeResult):
    stage: BlueGreenStage
    namespace: str
    blue_release: str
    green_release: str
    version: str
    blue: str = Field(default="serving", description="What became of blue.")
    accepted: str = Field(default="", description="What green's acceptance check passed.")
    shift: CanaryResult | None = Field(default=None, description="The traffic shift (canary-rollout subflow).")
    retire_approval: GateAnswer | None = None
    checklist: str = "not run"
    plan: str = ""


class RetireRequest(ClusterSource):
    """Which retired blue release to uninstall. Names follow Kubernetes' and helm's rules, so nothing else
    (an empty, upper-case, shell-like or overlong name) ever reaches `helm uninstall`."""

    namespace: Namespace = Field(description="Namespace of the release.")
    release: ReleaseName = Field(description="The retired blue release (helm name).")
    helm_executable: LocalPath = Field(default="helm")
    timeout_seconds: int = Field(default=300, ge=10, le=3600, description="helm uninstall --wait timeout.")


class RetireResult(ChangeResult):
    namespace: str
    release: str
    removed: list[str] = Field(default_factory=list, description="Kind/name of every object the uninstall removes.")
    plan: str = ""
