"""Pure parts of the canary runbook: step plans, restart points, evidence, webhooks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from flows.canary_rollout import CanaryAnalysis, CanaryRequest, Evidence, _remaining
from tasks.metrics.checks import CheckResult
from tasks.webhooks import Webhook, call_webhook


def test_steps_from_step_weight_or_list() -> None:
    assert CanaryAnalysis(step_weight=20, max_weight=50).steps() == [20, 40, 50]
    assert CanaryAnalysis(step_weight=25).steps() == [25, 50, 75, 100]
    assert CanaryAnalysis(step_weights=[5, 50]).steps() == [5, 50]
    for bad in ([], [50, 50], [60, 10], [0], [101]):
        with pytest.raises(ValidationError):
            CanaryAnalysis(step_weights=bad)


def test_restart_point_never_shifts_twice() -> None:
    assert _remaining([10, 25, 50, 100], 0) == [10, 25, 50, 100]
    assert _remaining([10, 25, 50, 100], 25) == [25, 50, 100]
    assert _remaining([10, 25, 50, 100], 30) == [30, 50, 100]
    assert _remaining([10, 25, 50], 50) == [50]


def test_request_needs_one_prometheus_and_two_releases() -> None:
    base: dict[str, Any] = {"namespace": "ns", "stable_release": "a", "canary_release": "b", "chart": "repo/c"}
    with pytest.raises(ValidationError, match="exactly one of prometheus_url or prometheus_block"):
        CanaryRequest.model_validate(base)
    with pytest.raises(ValidationError, match="must differ"):
        CanaryRequest.model_validate({**base, "canary_release": "a", "prometheus_url": "http://p:9090"})


def test_router_and_observer_fields_accept_exactly_the_registered_kinds() -> None:
    base: dict[str, Any] = {
        "namespace": "ns", "stable_release": "a", "canary_release": "b", "chart": "repo/c", "prometheus_url": "http://p:9090",
    }  # fmt: skip
    assert CanaryRequest.model_validate(base).observer is None  # the router's data plane decides
    chosen = CanaryRequest.model_validate(
        {**base, "router": "gateway-api", "http_route": "r", "observer": "nginx-ingress"}
    )
    assert (chosen.router, chosen.observer) == ("gateway-api", "nginx-ingress")
    with pytest.raises(ValidationError, match="'nginx' or 'gateway-api'"):
        CanaryRequest.model_validate({**base, "router": "traefik"})
    with pytest.raises(ValidationError, match="'nginx-ingress' or 'envoy-gateway'"):
        CanaryRequest.model_validate({**base, "observer": "istio"})


def test_evidence_table_shows_values_and_failures() -> None:
    ok = CheckResult(name="request-success-rate", query="q", value=99.9, min=99, max=None, passed=True, detail="ok")
    bad = CheckResult(name="request-duration", query="q", value=None, min=None, max=500, passed=False, detail="no data")
    evidence = Evidence.model_validate({"steps": [{"weight": 25, "attempt": 1, "passed": False, "checks": [ok, bad]}]})
    table = evidence.table()
    assert "| 25% | 1 | request-success-rate | 99.90 | ≥ 99 | pass |" in table
    assert "| 25% | 1 | request-duration | no data | ≤ 500 | FAIL: no data |" in table


@pytest.fixture
def hook_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200 if self.path == "/ok" else 500)
            self.end_headers()
            self.wfile.write(b"done")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_webhooks_pass_only_on_2xx(hook_server: str) -> None:
    def hook(path: str) -> Webhook:
        return Webhook.model_validate({"name": "h", "type": "pre-rollout", "url": hook_server + path})

    assert call_webhook(hook("/ok"), {}).passed
    failed = call_webhook(hook("/fail"), {})
    assert not failed.passed and "HTTP 500" in failed.detail
    down = Webhook.model_validate({"name": "h", "type": "rollback", "url": "http://127.0.0.1:9/", "timeout_seconds": 1})
    assert "unreachable" in call_webhook(down, {}).detail
