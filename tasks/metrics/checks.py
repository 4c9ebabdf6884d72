"""Metric checks: what a user asks for, the query it becomes, and its evaluation with retries inside the check.

A check is an instant query over a window (`rate(...[window])`) compared with optional min/max thresholds. Two
are built in, as in Flagger: `request-success-rate` (percent of non-5xx requests) and `request-duration` (p99
latency in milliseconds); their PromQL comes from the observer of the data plane that carries the traffic (see
`tasks.observers`), so a user writes no query for them. Any other check is custom PromQL where
`{{ namespace }}`, `{{ service }}`, `{{ route }}`, `{{ version }}` and `{{ window }}` are filled in, as in Flagger's
metric templates.

A provider error that may pass (no answer, 5xx, 429) is asked again inside the check, on the METRICS_API delays,
so a Prometheus blip of a second or two does not fail an analysis; a lasting outage or a refused query fails the
check with the reason (and so, at the threshold, reverts the rollout).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollbook.judging import judge
from rollbook.types import FormOptional
from tasks.metrics.providers import MetricsProvider, MetricsUnavailable, MetricsUnreachable
from tasks.observers.base import BuiltinCheck, Target
from tasks.observers.registry import observer
from tasks.policies import METRICS_API

BUILTIN_CHECKS: tuple[str, ...] = get_args(BuiltinCheck)
# The same schedule as a retried metrics task: 3 tries over about 3 seconds.
QUERY_RETRY_DELAYS: tuple[float, ...] = tuple(METRICS_API["retry_delay_seconds"])


class MetricCheck(BaseModel):
    """One metric and its acceptable range."""

    # strict: a threshold is a number, never `true` or text that looks like one
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=63, description="request-success-rate, request-duration or any name.")
    query: FormOptional[str] = Field(default=None, description="Custom PromQL; required unless the name is a built-in.")
    min: FormOptional[float] = Field(default=None, description="Fail when the value is below this.")
    max: FormOptional[float] = Field(default=None, description="Fail when the value is above this.")
    window: str = Field(default="30s", pattern=r"^[0-9]+[smh]$", description="Range of rate() in the query.")

    @model_validator(mode="after")
    def _complete(self) -> MetricCheck:
        if self.query is None and self.name not in BUILTIN_CHECKS:
            raise ValueError(f"metric {self.name!r} is not built in; give its PromQL in `query`")
        if self.min is None and self.max is None:
            raise ValueError(f"metric {self.name!r} needs a min or a max threshold")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metric {self.name!r}: min {self.min} is above max {self.max}")
        return self


class CheckResult(BaseModel):
    name: str
    query: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool
    detail: str


def render_query(check: MetricCheck, target: Target) -> str:
    if check.query is None:
        builtin: BuiltinCheck = "request-success-rate" if check.name == "request-success-rate" else "request-duration"
        return observer(target.observer).query(builtin, target, check.window)
    values = {
        "namespace": target.namespace,
        "service": target.service,
        "route": target.route,
        "version": target.version,
        "window": check.window,
    }

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            known = ", ".join("{{ %s }}" % k for k in values)  # noqa: UP031 (braces in the text)
            raise ValueError(f"metric {check.name!r}: unknown placeholder {match.group(0)!r}; known: {known}")
        return values[match.group(1)]

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, check.query)


def result(check: MetricCheck, query: str, value: float | None) -> CheckResult:
    verdict = judge(value, minimum=check.min, maximum=check.max)
    return CheckResult(
        name=check.name,
        query=query,
        value=value,
        min=check.min,
        max=check.max,
        passed=verdict.passed,
        detail=verdict.detail,
    )


def unavailable(check: MetricCheck, query: str, exc: MetricsUnavailable) -> CheckResult:
    """A failed check whose value is unknown because the provider could not answer."""
    return CheckResult(
        name=check.name,
        query=query,
        value=None,
        min=check.min,
        max=check.max,
        passed=False,
        detail=f"Prometheus could not be queried: {exc}",
    )


def ask(
    provider: MetricsProvider, query: str, *, delays: Sequence[float], sleep: Callable[[float], None]
) -> float | None:
    """The query's value, asked again after each of `delays` while the error may pass; the last error says how
    many tries were made."""
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            return provider.query_scalar(query)
        except MetricsUnavailable as exc:
            if not exc.transient or delay is None:
                if attempt > 1:
                    exc.args = (f"{exc} ({attempt} tries over {sum(delays[: attempt - 1]):g}s)",)
                raise
            sleep(delay)
    raise AssertionError("unreachable")  # the last try returns or raises


def evaluate(
    provider: MetricsProvider,
    checks: list[MetricCheck],
    target: Target,
    *,
    delays: Sequence[float] = QUERY_RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CheckResult]:
    """Judge every check. A provider error that outlasts the retries fails that check with the reason (Flagger
    counts it as a failed analysis too), so a Prometheus lost mid-rollout leads to a revert at the threshold
    instead of a crash with traffic still on the canary. Once Prometheus gave no answer at all, the remaining
    checks are failed with the same reason without waiting for more timeouts."""
    results = []
    unreachable: MetricsUnavailable | None = None
    for check in checks:
        query = render_query(check, target)
        if unreachable is not None:
            results.append(unavailable(check, query, unreachable))
            continue
        try:
            value = ask(provider, query, delays=delays, sleep=sleep)
        except MetricsUnavailable as exc:
            if isinstance(exc, MetricsUnreachable):
                unreachable = exc
            results.append(unavailable(check, query, exc))
            continue
        results.append(result(check, query, value))
    return results
