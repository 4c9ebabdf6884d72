"""The metric calls flows make, as Prefect tasks with the named retry policies."""

from __future__ import annotations

from prefect import task

from blocks.prometheus import PrometheusConnection
from tasks.metrics.checks import CheckResult, MetricCheck, evaluate
from tasks.metrics.registry import open_provider
from tasks.observers.base import Target
from tasks.policies import METRICS_API, PREFECT_API, PREFLIGHT


@task(**PREFECT_API)
def resolve_prometheus(block_name: str | None, url: object | None) -> PrometheusConnection:
    """A saved Prometheus block, or a connection to a bare URL; loading a block reads the Prefect API."""
    if block_name:
        block = PrometheusConnection.load(block_name)
        if not isinstance(block, PrometheusConnection):  # also narrows Prefect's sync/async dispatch type
            raise TypeError(f"block {block_name!r} is not a Rollbook Prometheus Connection")
        return block
    return PrometheusConnection.model_validate({"url": str(url)})


@task(**PREFLIGHT)
def check_prometheus(connection: PrometheusConnection) -> None:
    """Fail before any change when Prometheus cannot answer `vector(1)`; an outage of ~15 s is ridden out
    (PREFLIGHT), a refused query or a 4xx other than 429 fails at once (the error says it is not transient)."""
    with open_provider(connection) as provider:
        provider.ping()


@task(**METRICS_API)
def run_checks(connection: PrometheusConnection, checks: list[MetricCheck], target: Target) -> list[CheckResult]:
    """One analysis: every check judged. Provider errors are retried inside each check and then become failed
    checks (see `evaluate`), so this task's own retries only cover unexpected errors."""
    with open_provider(connection) as provider:
        return evaluate(provider, checks, target)
