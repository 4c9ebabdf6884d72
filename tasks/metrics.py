"""Metric providers: one small interface to judge a version from live metrics, Prometheus first.

A metric check is an instant query evaluated over a window (`rate(...[window])`), compared with optional
min/max thresholds. Two checks are built in, in Flagger's spirit: `request-success-rate` (percent of non-5xx
requests) and `request-duration` (p99 latency in milliseconds), both per backend version; any other check is
custom PromQL where `{{ namespace }}`, `{{ service }}`, `{{ version }}`, `{{ track }}`, `{{ window }}` and
`{{ selector }}` (all four labels as a matcher list) are filled in, as in Flagger's metric templates.

No data (an empty vector or NaN, e.g. no traffic reached the version) is a failed check, never a pass.
"""

from __future__ import annotations

import math
import re
from typing import Any, Protocol

import httpx
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator

from blocks.prometheus import PrometheusConnection

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
REQUESTS = "rollbook_sim_requests_total"
DURATION_BUCKETS = "rollbook_sim_request_duration_seconds_bucket"


class MetricsUnavailable(RuntimeError):
    """The metric provider could not be queried (unreachable, error answer); distinct from a failed check."""


class MetricsUnreachable(MetricsUnavailable):
    """No answer at all (connection refused, timeout): later queries in the same analysis would fail the same way."""


class MetricCheck(BaseModel):
    """One metric and its acceptable range."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=63, description="request-success-rate, request-duration or any name.")
    query: str | None = Field(default=None, description="Custom PromQL; required unless the name is a built-in.")
    min: float | None = Field(default=None, description="Fail when the value is below this.")
    max: float | None = Field(default=None, description="Fail when the value is above this.")
    window: str = Field(default="30s", pattern=r"^[0-9]+[smh]$", description="Range of rate() in the query.")

    @model_validator(mode="after")
    def _complete(self) -> MetricCheck:
        if self.query is None and self.name not in (SUCCESS_RATE, DURATION):
            raise ValueError(f"metric {self.name!r} is not built in; give its PromQL in `query`")
        if self.min is None and self.max is None:
            raise ValueError(f"metric {self.name!r} needs a min or a max threshold")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metric {self.name!r}: min {self.min} is above max {self.max}")
        return self


class Target(BaseModel):
    """Which traffic a check looks at: the backend Service and, optionally, the version it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    service: str
    version: str = ""
    track: str = ""


class CheckResult(BaseModel):
    name: str
    query: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool
    detail: str


def _selector(target: Target) -> str:
    parts = [f'namespace="{target.namespace}"', f'service="{target.service}"']
    if target.version:
        parts.append(f'version="{target.version}"')
    if target.track:
        parts.append(f'track="{target.track}"')
    return ",".join(parts)


def render_query(check: MetricCheck, target: Target) -> str:
    sel, window = _selector(target), check.window
    if check.query is not None:
        values = {
            "namespace": target.namespace,
            "service": target.service,
            "version": target.version,
            "track": target.track,
            "window": window,
            "selector": sel,
        }

        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ValueError(f"metric {check.name!r}: unknown placeholder {match.group(0)!r}")
            return values[match.group(1)]

        return re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, check.query)
    if check.name == SUCCESS_RATE:
        return f'100 * sum(rate({REQUESTS}{{{sel},code!~"5.."}}[{window}])) / sum(rate({REQUESTS}{{{sel}}}[{window}]))'
    return f"1000 * histogram_quantile(0.99, sum by (le) (rate({DURATION_BUCKETS}{{{sel}}}[{window}])))"


def judge(check: MetricCheck, query: str, value: float | None) -> CheckResult:
    if value is None or math.isnan(value):
        passed, detail = False, "no data (no traffic reached the version in the window?)"
    elif check.min is not None and value < check.min:
        passed, detail = False, f"{value:.3f} is below min {check.min}"
    elif check.max is not None and value > check.max:
        passed, detail = False, f"{value:.3f} is above max {check.max}"
    else:
        passed, detail = True, f"{value:.3f} within range"
    return CheckResult(
        name=check.name, query=query, value=value, min=check.min, max=check.max, passed=passed, detail=detail
    )


class MetricProvider(Protocol):
    def query_scalar(self, promql: str) -> float | None: ...


class PrometheusProvider:
    """Instant queries against Prometheus' HTTP API (`/api/v1/query`)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def query_scalar(self, promql: str) -> float | None:
        """The single value of a query; None for an empty result. More than one series is an error: a check
        must aggregate to one number."""
        try:
            resp = self.http.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise MetricsUnreachable(f"prometheus unreachable at {self.http.base_url}: {exc}") from None
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            raise MetricsUnavailable(f"prometheus answered HTTP {resp.status_code} without JSON") from None
        if body.get("status") != "success":
            raise MetricsUnavailable(f"query failed ({body.get('errorType')}): {body.get('error')}; query: {promql}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        result = data["result"]
        if not result:
            return None
        if len(result) > 1:
            raise MetricsUnavailable(f"query returned {len(result)} series, expected one: {promql}")
        return float(result[0]["value"][1])

    def ping(self) -> None:
        """Fail fast (before any change) when the server cannot answer a trivial query."""
        self.query_scalar("vector(1)")


def evaluate(provider: MetricProvider, checks: list[MetricCheck], target: Target) -> list[CheckResult]:
    """Judge every check. A provider error fails that check with the reason (Flagger counts it as a failed
    analysis too), so a Prometheus lost mid-rollout leads to a revert at the threshold instead of a crash with
    traffic still on the canary. Once Prometheus gave no answer at all, the remaining checks are failed with the
    same reason without waiting for more timeouts."""
    results = []
    unreachable: MetricsUnavailable | None = None
    for check in checks:
        query = render_query(check, target)
        if unreachable is not None:
            results.append(unavailable(check, query, unreachable))
            continue
        try:
            value = provider.query_scalar(query)
        except MetricsUnavailable as exc:
            if isinstance(exc, MetricsUnreachable):
                unreachable = exc
            results.append(unavailable(check, query, exc))
            continue
        results.append(judge(check, query, value))
    return results


def unavailable(check: MetricCheck, query: str, exc: MetricsUnavailable) -> CheckResult:
    """A failed check whose value is unknown because the provider could not answer."""
    return CheckResult(
        name=check.name, query=query, value=None, min=check.min, max=check.max, passed=False,
        detail=f"Prometheus could not be queried: {exc}",
    )  # fmt: skip


@task(retries=2, retry_delay_seconds=2, timeout_seconds=30)
def resolve_prometheus(block_name: str | None, url: object | None) -> PrometheusConnection:
    """A saved Prometheus block, or a connection to a bare URL; loading a block reads the Prefect API."""
    if block_name:
        block = PrometheusConnection.load(block_name)
        if not isinstance(block, PrometheusConnection):  # also narrows Prefect's sync/async dispatch type
            raise TypeError(f"block {block_name!r} is not a Rollbook Prometheus Connection")
        return block
    return PrometheusConnection.model_validate({"url": str(url)})


@task(retries=2, retry_delay_seconds=2, timeout_seconds=60)
def check_prometheus(connection: PrometheusConnection) -> None:
    with connection.http_client() as http:
        PrometheusProvider(http).ping()


@task(retries=2, retry_delay_seconds=2, timeout_seconds=60)
def run_checks(connection: PrometheusConnection, checks: list[MetricCheck], target: Target) -> list[CheckResult]:
    with connection.http_client() as http:
        return evaluate(PrometheusProvider(http), checks, target)
