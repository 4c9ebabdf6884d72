"""The Prometheus metric provider against recorded /api/v1/query answers (shapes as Prometheus 2.42 sends them)."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from tasks.metrics import (
    MetricCheck,
    MetricsUnavailable,
    PrometheusProvider,
    Target,
    evaluate,
    judge,
    render_query,
)

VECTOR_ONE = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.7e9, "97.5"]}]},
}
VECTOR_EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}
VECTOR_NAN = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1.7e9, "NaN"]}]},
}
VECTOR_TWO = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [{"metric": {"version": "a"}, "value": [1, "1"]}, {"metric": {"version": "b"}, "value": [1, "2"]}],
    },
}
SCALAR = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "1"]}}
BAD_QUERY = {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query": 1:5: parse error'}


def provider(answers: dict[str, Any], seen: list[str] | None = None) -> PrometheusProvider:
    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        if seen is not None:
            seen.append(query)
        for fragment, body in answers.items():
            if fragment in query:
                return httpx.Response(400 if body.get("status") == "error" else 200, json=body)
        return httpx.Response(200, json=VECTOR_EMPTY)

    return PrometheusProvider(httpx.Client(base_url="http://prom", transport=httpx.MockTransport(handle)))


TARGET = Target(namespace="shop", service="web-canary", version="1.2.0")


def test_builtin_queries_select_the_version() -> None:
    rate = render_query(MetricCheck(name="request-success-rate", min=99, window="1m"), TARGET)
    assert 'namespace="shop",service="web-canary",version="1.2.0",code!~"5.."' in rate
    assert "[1m]" in rate and rate.startswith("100 * ")
    p99 = render_query(MetricCheck(name="request-duration", max=500), TARGET)
    assert p99.startswith("1000 * histogram_quantile(0.99") and "[30s]" in p99


def test_custom_query_placeholders() -> None:
    check = MetricCheck(name="cpu", query='max(x{namespace="{{ namespace }}",v="{{version}}"}[{{ window }}])', max=1)
    assert render_query(check, TARGET) == 'max(x{namespace="shop",v="1.2.0"}[30s])'
    with pytest.raises(ValueError, match="unknown placeholder"):
        render_query(MetricCheck(name="c", query="{{ nope }}", max=1), TARGET)


def test_thresholds_and_no_data() -> None:
    check = MetricCheck(name="request-success-rate", min=99)
    assert judge(check, "q", 99.5).passed
    assert not judge(check, "q", 97.5).passed and "below min 99" in judge(check, "q", 97.5).detail
    assert not judge(check, "q", None).passed and "no data" in judge(check, "q", None).detail
    assert not judge(check, "q", math.nan).passed
    slow = MetricCheck(name="request-duration", max=500)
    assert not judge(slow, "q", 1400.0).passed and judge(slow, "q", 25.0).passed


def test_evaluate_against_recorded_answers() -> None:
    seen: list[str] = []
    prom = provider({"code!~": VECTOR_ONE, "histogram_quantile": VECTOR_NAN}, seen)
    results = evaluate(
        prom,
        [MetricCheck(name="request-success-rate", min=99), MetricCheck(name="request-duration", max=500)],
        TARGET,
    )
    assert [r.value for r in results][0] == 97.5 and not results[0].passed
    assert not results[1].passed and "no data" in results[1].detail
    assert len(seen) == 2
    assert provider({"vector": SCALAR}).query_scalar("vector(1)") == 1.0
    assert provider({}).query_scalar("up") is None


def test_provider_errors_are_clear() -> None:
    with pytest.raises(MetricsUnavailable, match="bad_data"):
        provider({"": BAD_QUERY}).query_scalar("sum(")
    with pytest.raises(MetricsUnavailable, match="2 series"):
        provider({"": VECTOR_TWO}).query_scalar("up")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    down = PrometheusProvider(httpx.Client(base_url="http://prom:9090", transport=httpx.MockTransport(refuse)))
    with pytest.raises(MetricsUnavailable, match="unreachable at http://prom:9090"):
        down.ping()


def test_checks_are_validated() -> None:
    with pytest.raises(ValidationError, match="not built in"):
        MetricCheck(name="cpu", max=1)
    with pytest.raises(ValidationError, match="min or a max"):
        MetricCheck(name="request-success-rate")
    with pytest.raises(ValidationError, match="above max"):
        MetricCheck(name="request-duration", min=10, max=1)
    with pytest.raises(ValidationError):
        MetricCheck(name="request-duration", max=1, window="5 minutes")


def test_provider_errors_during_analysis_are_failed_checks_with_the_reason() -> None:
    """A Prometheus lost mid-rollout must count against the canary (and lead to a revert), not crash the run."""
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params["query"])
        raise httpx.ConnectError("connection refused")

    down = PrometheusProvider(httpx.Client(base_url="http://prom:9090", transport=httpx.MockTransport(refuse)))
    checks = [MetricCheck(name="request-success-rate", min=99), MetricCheck(name="request-duration", max=500)]
    results = evaluate(down, checks, TARGET)
    assert [r.passed for r in results] == [False, False] and [r.value for r in results] == [None, None]
    assert all(r.detail.startswith("Prometheus could not be queried: prometheus unreachable at http://prom:9090")
               for r in results)  # fmt: skip
    assert len(calls) == 1  # no answer at all: the second check is not queried (and waited for) again
    # an error answer to one query fails that check only; the next query is still asked
    results = evaluate(provider({"code!~": BAD_QUERY, "histogram_quantile": VECTOR_ONE}), checks, TARGET)
    assert not results[0].passed and "bad_data" in results[0].detail
    assert results[1].passed and results[1].value == 97.5
