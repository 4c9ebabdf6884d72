"""The Prometheus provider against recorded /api/v1/query answers (shapes as Prometheus 2.42 sends them), the
observers' built-in queries, and retries inside a check (a fake HTTP transport: no sleeping, no server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from rollbook.plugins import UnknownKind
from tasks.metrics.checks import MetricCheck, evaluate, render_query
from tasks.metrics.prometheus import PrometheusProvider
from tasks.metrics.providers import MetricsUnavailable
from tasks.metrics.registry import PROVIDERS
from tasks.observers.base import Target
from tasks.observers.registry import OBSERVERS, observer, observer_for

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
UNAVAILABLE = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
CHECKS = [MetricCheck(name="request-success-rate", min=99), MetricCheck(name="request-duration", max=500)]


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


def scripted(*answers: Callable[[], httpx.Response], calls: list[str]) -> PrometheusProvider:
    """Answers in order, one per request (the last one repeats): a Prometheus that fails, then comes back."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.params["query"])
        return answers[min(len(calls), len(answers)) - 1]()

    return PrometheusProvider(httpx.Client(base_url="http://prom:9090", transport=httpx.MockTransport(handle)))


def refused() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def ok(value: str) -> Callable[[], httpx.Response]:
    body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, value]}]}}
    return lambda: httpx.Response(200, json=body)


NGINX = Target(observer="nginx-ingress", namespace="shop", service="web-next", route="web", version="1.2.0")
ENVOY = Target(observer="envoy-gateway", namespace="shop", service="web-next", route="web", version="1.2.0")


def test_nginx_observer_queries_ingress_nginx_own_series() -> None:
    rate = render_query(MetricCheck(name="request-success-rate", min=99, window="1m"), NGINX)
    sel = 'namespace="shop",ingress="web",canary=~"shop-web-next-.+"'
    assert rate == (
        f'100 * (sum(rate(nginx_ingress_controller_requests{{{sel},status!~"5.."}}[1m])) or vector(0))'
        f" / sum(rate(nginx_ingress_controller_requests{{{sel}}}[1m]))"
    )
    p99 = render_query(MetricCheck(name="request-duration", max=500), NGINX)
    assert p99 == (
        "1000 * histogram_quantile(0.99, sum by (le) "
        f"(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{sel}}}[30s])))"
    )
    assert "rollbook_sim" not in rate + p99


def test_envoy_gateway_observer_queries_the_canary_service_cluster() -> None:
    rate = render_query(MetricCheck(name="request-success-rate", min=99, window="1m"), ENVOY)
    cluster = 'envoy_cluster_name=~"service/shop/web-next/[0-9]+(/.+)?"'
    assert rate == (
        f'100 * (sum(rate(envoy_cluster_upstream_rq_xx{{{cluster},envoy_response_code_class!="5"}}[1m])) '
        f"or vector(0)) / sum(rate(envoy_cluster_upstream_rq_xx{{{cluster}}}[1m]))"
    )
    p99 = render_query(MetricCheck(name="request-duration", max=500), ENVOY)
    assert (
        p99 == f"histogram_quantile(0.99, sum by (le) (rate(envoy_cluster_upstream_rq_time_bucket{{{cluster}}}[30s])))"
    )


def test_each_router_has_its_data_plane_observer_and_registries_match_their_kinds() -> None:
    assert observer_for("nginx") == "nginx-ingress" and observer_for("gateway-api") == "envoy-gateway"
    assert observer_for("nginx", "envoy-gateway") == "envoy-gateway"  # overridable per request
    assert set(OBSERVERS) == {"nginx-ingress", "envoy-gateway"} and set(PROVIDERS) == {"prometheus"}
    with pytest.raises(UnknownKind, match="unknown metrics observer 'istio'; known: envoy-gateway, nginx-ingress"):
        observer("istio")
    with pytest.raises(ValidationError):
        Target(observer="istio", namespace="a", service="b", route="c")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):  # names go into label matchers: only Kubernetes names
        Target(observer="nginx-ingress", namespace='a"} or vector(1) #', service="b", route="c")


def test_custom_query_placeholders() -> None:
    check = MetricCheck(name="cpu", query='max(x{namespace="{{ namespace }}",v="{{version}}"}[{{ window }}])', max=1)
    assert render_query(check, NGINX) == 'max(x{namespace="shop",v="1.2.0"}[30s])'
    route = MetricCheck(name="r", query="{{ route }}/{{ service }}", max=1)
    assert render_query(route, ENVOY) == "web/web-next"
    with pytest.raises(ValueError, match=r"unknown placeholder '\{\{ nope \}\}'; known: \{\{ namespace \}\}"):
        render_query(MetricCheck(name="c", query="{{ nope }}", max=1), NGINX)


def test_evaluate_against_recorded_answers() -> None:
    seen: list[str] = []
    prom = provider({"status!~": VECTOR_ONE, "histogram_quantile": VECTOR_NAN}, seen)
    results = evaluate(prom, CHECKS, NGINX)
    assert [r.value for r in results][0] == 97.5 and not results[0].passed
    assert "below min 99" in results[0].detail
    assert not results[1].passed and "no data" in results[1].detail
    assert len(seen) == 2
    assert provider({"vector": SCALAR}).query_scalar("vector(1)") == 1.0
    assert provider({}).query_scalar("up") is None


def test_provider_errors_are_clear() -> None:
    with pytest.raises(MetricsUnavailable, match="bad_data") as refused_query:
        provider({"": BAD_QUERY}).query_scalar("sum(")
    assert refused_query.value.transient is False
    with pytest.raises(MetricsUnavailable, match="2 series"):
        provider({"": VECTOR_TWO}).query_scalar("up")
    down = scripted(refused, calls=[])
    with pytest.raises(MetricsUnavailable, match="unreachable at http://prom:9090") as unreachable:
        down.ping()
    assert unreachable.value.transient is True


def test_checks_are_validated() -> None:
    with pytest.raises(ValidationError, match="not built in"):
        MetricCheck(name="cpu", max=1)
    with pytest.raises(ValidationError, match="min or a max"):
        MetricCheck(name="request-success-rate")
    with pytest.raises(ValidationError, match="above max"):
        MetricCheck(name="request-duration", min=10, max=1)
    with pytest.raises(ValidationError):
        MetricCheck(name="request-duration", max=1, window="5 minutes")


def test_a_prometheus_blip_is_retried_inside_the_check_and_does_not_fail_it() -> None:
    """Issue 16: refused twice (and a 503), then answered: every check passes, after waits of 1 s and 2 s."""
    calls: list[str] = []
    waits: list[float] = []
    flaky = scripted(refused, lambda: httpx.Response(503, json=UNAVAILABLE), ok("99.9"), calls=calls)
    results = evaluate(flaky, CHECKS[:1], NGINX, sleep=waits.append)
    assert [(r.passed, r.value) for r in results] == [(True, 99.9)], results
    assert len(calls) == 3 and waits == [1, 2]


def test_a_lasting_outage_fails_the_checks_with_the_reason_after_bounded_tries() -> None:
    """A Prometheus lost mid-rollout counts against the canary (and leads to a revert), never crashes the run."""
    calls: list[str] = []
    waits: list[float] = []
    results = evaluate(scripted(refused, calls=calls), CHECKS, NGINX, sleep=waits.append)
    assert [r.passed for r in results] == [False, False] and [r.value for r in results] == [None, None]
    assert all(r.detail.startswith("Prometheus could not be queried: prometheus unreachable at http://prom:9090")
               for r in results)  # fmt: skip
    assert "(3 tries over 3s)" in results[0].detail
    assert len(calls) == 3 and waits == [1, 2]  # the second check is not queried (and waited for) again


def test_a_refused_query_fails_at_once_and_the_next_check_is_still_asked() -> None:
    waits: list[float] = []
    results = evaluate(provider({"status!~": BAD_QUERY, "histogram_quantile": VECTOR_ONE}), CHECKS, NGINX,
                       sleep=waits.append)  # fmt: skip
    assert not results[0].passed and "bad_data" in results[0].detail and "tries" not in results[0].detail
    assert results[1].passed and results[1].value == 97.5
    assert waits == []  # a 400 is never asked again
