"""The canary runbook's parameters, its evidence and its result (the models canary-rollout and blue-green share)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows._schema_gate import SchemaGuardFields
from flows._traffic_source import TrafficSource
from rollbook.change import ChangeResult
from rollbook.form_rules import form_rules_schema, given, requires, when_value
from rollbook.reports.progressive import analysis_table
from rollbook.types import ChartRef, LocalPath, Namespace, ReleaseName
from tasks.metrics.checks import CheckResult, MetricCheck
from tasks.progressive import ReleaseRouting
from tasks.webhooks import Webhook, WebhookResult


def default_metrics() -> list[MetricCheck]:
    return [
        MetricCheck(name="request-success-rate", min=99, window="1m"),
        MetricCheck(name="request-duration", max=500, window="1m"),
    ]


METRICS_HELP = (
    "Checks judged at every step; by default the data plane's success rate (at least 99 %) and latency "
    "(at most 500 ms) over one minute."
)
WEBHOOKS_HELP = "Endpoints called at each step (pre-rollout, rollout, confirm, post-rollout); empty: none."


def check_steps(weights: list[int], field: str) -> list[int]:
    """Weights a rollout can walk through; the message names the caller's own field."""
    if not weights:
        raise ValueError(f"{field} must not be empty")
    bad = [w for w in weights if not 1 <= w <= 100]
    if bad:
        raise ValueError(f"{field} must be from 1 to 100, got {bad}")
    if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
        raise ValueError(f"{field} must be strictly increasing, got {weights}")
    return weights


class CanaryAnalysis(BaseModel):
    """How traffic moves and how each step is judged (Flagger's `analysis` block)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    interval_seconds: int = Field(default=60, ge=1, le=3600, description="Time between two analyses.")
    iterations: int = Field(default=1, ge=1, le=100, description="Passed analyses needed at each step.")
    threshold: int = Field(default=2, ge=1, le=100, description="Failed analyses (in total) that trigger rollback.")
    step_weights: list[int] | None = Field(default=None, description="Explicit weights, e.g. [10, 25, 50, 75, 100].")
    step_weight: int = Field(default=10, ge=1, le=100, description="Step size when step_weights is empty.")
    max_weight: int = Field(default=100, ge=1, le=100, description="Last weight when step_weights is empty.")
    metrics: list[MetricCheck] = Field(default=default_metrics(), min_length=1, description=METRICS_HELP)
    webhooks: list[Webhook] = Field(default=[], description=WEBHOOKS_HELP)

    @model_validator(mode="after")
    def _steps_valid(self) -> Self:
        if self.step_weights is not None:
            check_steps(self.step_weights, "step_weights")
        return self

    def steps(self) -> list[int]:
        if self.step_weights is not None:
            return list(self.step_weights)
        weights = list(range(self.step_weight, self.max_weight, self.step_weight))
        return [*weights, self.max_weight]


class CanaryRequest(TrafficSource, SchemaGuardFields):
    """Which releases, where the metrics are, and how to decide."""

    namespace: Namespace = Field(description="Namespace of both releases.")
    stable_release: ReleaseName = Field(description="Serves users now.")
    canary_release: ReleaseName = Field(description="The new version.")
    chart: ChartRef = Field(description="Chart of the stable release (path or reference), for promotion.")
    helm_executable: LocalPath = Field(default="helm")
    timeout_seconds: int = Field(default=300, ge=10, le=3600, description="helm --wait timeout for promotion.")
    analysis: CanaryAnalysis = Field(
        default=CanaryAnalysis(), description="How traffic moves and how each step is judged."
    )
    approve_before_final_step: bool = Field(default=True, description="Ask a person before the last weight.")
    approve_before_promotion: bool = Field(default=True, description="Ask a person before promoting.")
    approval_timeout_seconds: int = Field(default=3600, ge=5, le=7 * 24 * 3600)
    on_approval_timeout: Literal["revert", "hold"] = Field(
        default="revert", description="No answer in time: send all traffic back to stable, or keep the weight."
    )
    promote: bool = Field(default=True, description="After the last step: upgrade stable to the canary's image.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stable_release == self.canary_release:
            raise ValueError("stable_release and canary_release must differ")
        return self


class RolloutDecision(RunInput):
    """The answer at a traffic gate: approve (go on), reject (revert to stable) or hold (keep the weight, stop
    here). Three answers where `rollbook.change.Decision` has two: holding a weight is neither a yes nor a no."""

    model_config = ConfigDict(json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        requires(when_value("action", "approve"), given("approver"), "approving needs your name in approver"),
    )

    action: Literal["approve", "reject", "hold"] = "hold"
    approver: str = Field(default="", max_length=100, description="Who answers (recorded on the run and report).")
    reason: str = ""

    @model_validator(mode="after")
    def _named_approval(self) -> Self:
        if self.action == "approve" and not self.approver.strip():
            raise ValueError("approving needs your name in approver")
        return self


class GateAnswer(BaseModel):
    """What was answered at one traffic gate, and by whom (a timeout answers for no one)."""

    gate: str
    action: str
    by: str = ""
    reason: str = ""


class CanaryReverted(RuntimeError):
    """The rollout failed its checks (or a step it needs failed) and traffic went back to stable; the message
    carries the evidence."""


class AnalysisRecord(BaseModel):
    weight: int
    attempt: int
    passed: bool
    checks: list[CheckResult]
    webhooks: list[WebhookResult] = []


class Evidence(BaseModel):
    steps: list[AnalysisRecord] = []
    approvals: list[GateAnswer] = []
    webhooks: list[WebhookResult] = []

    def table(self) -> str:
        return analysis_table(self.steps)


# How a canary run ended: promoted (stable runs the canary's version), shifted (the last step reached without
# promotion), held (an approver or a timeout kept the weight), reverted (an approver or a timeout sent traffic
# back), planned / not-approved (nothing changed). Failed checks raise CanaryReverted instead.
Stage = Literal["promoted", "shifted", "held", "reverted", "planned", "not-approved"]


class CanaryResult(ChangeResult):
    stage: Stage
    namespace: str
    stable: ReleaseRouting
    canary: ReleaseRouting
    steps: list[int] = Field(description="The weights this run was to walk through.")
    weight: int = Field(description="The canary weight the cluster serves at the end (read back).")
    canary_release: str = Field(default="kept", description="What became of the canary release.")
    checklist: str = Field(default="not run", description="The pre-deploy checklist's verdict.")
    evidence: Evidence = Field(default_factory=Evidence)
    plan: str = ""
