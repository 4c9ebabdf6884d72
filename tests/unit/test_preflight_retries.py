"""Pre-flight checks ride out a short outage (issue 16): the PREFLIGHT policy, run by Prefect's own retry engine
against a fake clock and a fake Prometheus transport, so no test sleeps and no server is needed.

The fault campaign found canary-rollout failing with MetricsUnreachable (nothing changed) when Prometheus was gone
for 8 s at its pre-flight check, which had 3 tries over 3 s; the same blip during analysis was ridden out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from prefect import task_engine

from blocks.prometheus import PrometheusConnection
from tasks.backup_store import check_bucket
from tasks.metrics import tasks as metric_tasks
from tasks.metrics.prometheus import PrometheusProvider
from tasks.metrics.providers import MetricsUnavailable, MetricsUnreachable
from tasks.policies import (
    KUBE_API,
    KUBE_API_LONG,
    KUBE_LIST,
    METRICS_API,
    OUTAGE_DELAYS,
    OUTAGE_WAIT_SECONDS,
    PREFLIGHT,
    retry_transient,
)

CONNECTION = PrometheusConnection.model_validate({"url": "http://prom:9090"})
UP = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "1"]}]}}
BAD_QUERY = {"status": "error", "errorType": "bad_data", "error": "parse error"}


class FakeClock:
    """Stands in for the `time` module Prefect's task engine sleeps with before a retry: a sleep moves the clock
    instead of waiting. Everything else is the real module."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class Prometheus:
    """A Prometheus behind a fake transport: refuses connections until `down_until` on the fake clock, then
    answers every query with `answer` (status, body)."""

    def __init__(self, clock: FakeClock, *, down_until: float, answer: tuple[int, dict[str, Any]] = (200, UP)) -> None:
        self.clock, self.down_until, self.answer = clock, down_until, answer
        self.calls: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(self.clock.now)
        if self.clock.now < self.down_until:
            raise httpx.ConnectError("connection refused")
        status, body = self.answer
        return httpx.Response(status, json=body)

    @contextmanager
    def open(self, connection: PrometheusConnection) -> Iterator[PrometheusProvider]:
        yield PrometheusProvider(httpx.Client(base_url=str(connection.url), transport=httpx.MockTransport(self.handle)))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(task_engine, "time", fake)
    return fake


def _prometheus(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, **kw: Any) -> Prometheus:
    prometheus = Prometheus(clock, **kw)
    monkeypatch.setattr(metric_tasks, "open_provider", prometheus.open)
    return prometheus


@pytest.mark.parametrize("outage_seconds", [0, 8, 15])
def test_a_prometheus_outage_at_the_pre_flight_check_is_ridden_out(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, outage_seconds: float
) -> None:
    """The 8 s blip of the campaign, and the ~15 s the policy promises: the check passes, after tries spaced on
    the outage schedule; it stops asking as soon as Prometheus answers."""
    prometheus = _prometheus(monkeypatch, clock, down_until=outage_seconds)
    metric_tasks.check_prometheus(CONNECTION)
    assert prometheus.calls[-1] >= outage_seconds  # the answer came after the outage
    assert all(t < outage_seconds for t in prometheus.calls[:-1])  # every earlier try met the outage
    assert 1 <= len(prometheus.calls) <= len(OUTAGE_DELAYS) + 1
    waited = [s for s in clock.sleeps if s > 0.5]  # Prefect's own sub-second polls aside
    assert len(waited) == len(prometheus.calls) - 1
    assert [round(s) for s in waited] == [round(d) for d in OUTAGE_DELAYS[: len(waited)]]


def test_a_lasting_outage_fails_after_the_bounded_budget_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    prometheus = _prometheus(monkeypatch, clock, down_until=float("inf"))
    with pytest.raises(MetricsUnreachable, match="prometheus unreachable at http://prom:9090"):
        metric_tasks.check_prometheus(CONNECTION)
    assert len(prometheus.calls) == len(OUTAGE_DELAYS) + 1  # 6 tries, never more
    assert sum(s for s in clock.sleeps if s > 0.5) == pytest.approx(OUTAGE_WAIT_SECONDS, abs=1)
    assert OUTAGE_WAIT_SECONDS == 23  # the budget the policy's comment states


@pytest.mark.parametrize(
    ("answer", "what"),
    [((400, BAD_QUERY), "bad_data"), ((422, BAD_QUERY), "bad_data"), ((403, {"error": "forbidden"}), "HTTP 403")],
)
def test_a_permanent_error_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, answer: tuple[int, dict[str, Any]], what: str
) -> None:
    """A refused query or a 4xx other than 429 gets the same answer every time: one try, the real error."""
    prometheus = _prometheus(monkeypatch, clock, down_until=0, answer=answer)
    with pytest.raises(MetricsUnavailable, match=what) as failed:
        metric_tasks.check_prometheus(CONNECTION)
    assert failed.value.transient is False
    assert len(prometheus.calls) == 1 and not [s for s in clock.sleeps if s > 0.5]


def test_throttling_and_5xx_are_retried(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    for status in (429, 503):
        prometheus = _prometheus(monkeypatch, clock, down_until=0, answer=(status, {"status": "error"}))
        with pytest.raises(MetricsUnavailable, match=f"HTTP {status}"):
            metric_tasks.check_prometheus(CONNECTION)
        assert len(prometheus.calls) == len(OUTAGE_DELAYS) + 1


def test_one_outage_schedule_everywhere() -> None:
    """The pre-flight policy and the Kubernetes API policies ride out an outage the same way; the analysis keeps
    its short in-check schedule (a failed analysis is tolerated by `threshold`)."""
    for policy in (PREFLIGHT, KUBE_API, KUBE_LIST, KUBE_API_LONG):
        assert policy["retries"] == len(OUTAGE_DELAYS) == 5
        assert policy["retry_delay_seconds"] == [1, 2, 4, 8, 8]
        assert policy["retry_condition_fn"] is retry_transient
    assert PREFLIGHT["timeout_seconds"] == 60  # each try bounded: at most 6 x 60 s + 23 s in all
    assert METRICS_API["retry_delay_seconds"] == [1, 2]
    assert metric_tasks.check_prometheus.retries == 5 and metric_tasks.run_checks.retries == 2
    assert check_bucket.retries == 5 and check_bucket.retry_delay_seconds == [1, 2, 4, 8, 8]  # etcd-snapshot's
