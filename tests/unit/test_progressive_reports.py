"""The progressive-delivery reports (pure) and the request checks that need no cluster."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from flows._canary_model import AnalysisRecord, GateAnswer
from flows.blue_green import BlueGreenRequest, RetireRequest
from rollbook.reports.progressive import (
    BlueGreenPlan,
    CanaryPlan,
    analysis_table,
    blue_green_plan,
    blue_green_report,
    canary_plan,
    canary_report,
    gate_form,
    not_approved,
    retire_plan,
    titled,
)
from tasks.metrics.checks import CheckResult, MetricCheck
from tasks.webhooks import Webhook, WebhookResult

OK = CheckResult(name="request-success-rate", query="q", value=99.5, min=99, max=None, passed=True, detail="ok")
BAD = CheckResult(name="request-duration", query="q", value=812.0, min=None, max=500, passed=False, detail="above")
NAN = CheckResult(name="request-duration", query="q", value=float("nan"), min=1, max=2, passed=False, detail="nan")


def test_analysis_table_has_one_row_per_check_and_webhook() -> None:
    hook = WebhookResult(name="smoke", type="rollout", passed=False, detail="HTTP 500")
    steps = [
        AnalysisRecord(weight=25, attempt=1, passed=True, checks=[OK]),
        AnalysisRecord(weight=50, attempt=2, passed=False, checks=[BAD, NAN], webhooks=[hook]),
    ]
    table = analysis_table(steps).splitlines()
    assert table[2] == "| 25% | 1 | request-success-rate | 99.50 | ≥ 99 | pass |"
    assert table[3] == "| 50% | 2 | request-duration | 812.00 | ≤ 500 | FAIL: above |"
    assert table[4] == "| 50% | 2 | request-duration | no data | 1 … 2 | FAIL: nan |"
    assert table[5] == "| 50% | 2 | webhook smoke | | | FAIL |"
    assert len(table) == 6
    assert analysis_table([]) == "_no analysis ran_"


def _canary_plan(**extra: Any) -> CanaryPlan:
    fields: dict[str, Any] = {
        "namespace": "shop",
        "stable": "web",
        "canary": "web-next",
        "version": "1.1.0",
        "router": "nginx",
        "route_object": "web-demo-app-canary",
        "current": 25,
        "todo": [25, 50, 100],
        "iterations": 2,
        "interval_seconds": 30,
        "threshold": 3,
        "metrics": [MetricCheck(name="request-success-rate", min=99, window="1m")],
        "webhooks": [Webhook.model_validate({"name": "smoke", "type": "pre-rollout", "url": "http://h/"})],
        "gates": ["approval before 100%"],
        "checklist": "ready: 8 passed",
        "reason": "ship the fix",
        "requested_by": "alice",
        **extra,
    }
    return CanaryPlan(**fields)


def test_canary_plan_names_every_object_it_would_change() -> None:
    plan = canary_plan(_canary_plan())
    assert "canary Ingress `web-demo-app-canary`" in plan
    assert "weight served now: **25%**; steps to run: **25%, 50%, 100%**" in plan
    assert "2 passing analysis(es), every 30s; revert to `web` after 3 failed" in plan
    assert "request-success-rate ≥ 99 over 1m" in plan and "smoke (pre-rollout)" in plan
    assert "helm upgrade `web` to image 1.1.0" in plan and "helm uninstall `web-next`" in plan
    assert "requested by **alice**: ship the fix" in plan and "checklist: ready: 8 passed" in plan
    held = canary_plan(_canary_plan(promote=False, router="gateway-api", route_object="web", todo=[]))
    assert "backend weights of HTTPRoute `web`" in held and "steps to run: **none**" in held
    assert "no promotion" in held and "helm upgrade" not in held


def test_canary_report_keeps_answers_and_webhooks() -> None:
    answers = [GateAnswer(gate="promote", action="approve", by="alice", reason="looks good")]
    hooks = [WebhookResult(name="notify", type="post-rollout", passed=True, detail="HTTP 200")]
    report = canary_report("Promoted", steps=[], answers=answers, hooks=hooks, plan="PLAN")
    assert report.startswith("# Promoted\n")
    assert "| promote | approve | alice | looks good |" in report
    assert "| notify | post-rollout | pass |" in report
    assert report.endswith("## Plan\n\nPLAN")


def _bg_plan(**extra: Any) -> BlueGreenPlan:
    fields: dict[str, Any] = {
        "namespace": "shop",
        "blue": "shop",
        "blue_version": "1.0.0",
        "green": "shop-green",
        "version": "1.1.0",
        "chart": "charts/demo-app",
        "install": True,
        "router": "nginx",
        "http_route": None,
        "blue_has_ingress": True,
        "acceptance": ["GET http://x/ answers 2xx"],
        "steps": [50, 100],
        "interval_seconds": 4,
        "window_seconds": 8,
        "threshold": 2,
        "on_approval_timeout": "revert",
        "keep_blue_seconds": 0,
        **extra,
    }
    return BlueGreenPlan(**fields)


def test_blue_green_plan_lists_install_shift_hand_over_and_retire() -> None:
    plan = blue_green_plan(_bg_plan(green_values=["replicas=3"]))
    assert "helm install `shop-green` from `charts/demo-app`" in plan and "image tag 1.1.0" in plan
    assert "and replicas=3" in plan
    assert "steps [50, 100]; checks every 4s for 8s per step; revert to blue after 2 failed checks" in plan
    assert "helm upgrade `shop-green` ingress.enabled=true, then `shop` ingress.enabled=false" in plan
    assert "label `shop-green` active and `shop` retired" in plan and "6. blue: helm uninstall `shop`" in plan
    later = blue_green_plan(
        _bg_plan(install=False, keep_blue_seconds=600, router="gateway-api", http_route="shop", blue_has_ingress=False)
    )
    assert "already runs 1.1.0: not installed again" in later and "HTTPRoute `shop` backend weights" in later
    assert "ingress.enabled" not in later
    assert "schedule a `blue-green-retire` run in 600s that uninstalls `shop`" in later


def test_blue_green_report_and_retire_plan() -> None:
    answers = [GateAnswer(gate="retire blue", action="timeout → revert", reason="no answer in time")]
    report = blue_green_report("Reverted", blue="serving", answers=answers, plan="PLAN")
    assert "- blue: serving" in report and "| retire blue | timeout → revert | - | no answer in time |" in report
    retire = retire_plan(
        namespace="ns", release="shop", objects=["Deployment/shop", "Service/shop"], reason="why", requested_by="bob"
    )
    assert "removes 2 object(s)" in retire and "- `Deployment/shop`" in retire and "**bob**: why" in retire
    empty = retire_plan(namespace="ns", release="shop", objects=[], reason="why", requested_by="bob")
    assert "no objects left" in empty


BG: dict[str, Any] = {
    "namespace": "ns",
    "blue_release": "shop",
    "green_release": "shop-green",
    "chart": "charts/demo-app",
    "version": "1.1.0",
    "prometheus_url": "http://p:9090",
}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "steps must not be empty"),
        ([50, 25, 100], "steps must be strictly increasing"),
        ([0, 100], "steps must be from 1 to 100"),
        ([10, 50], "steps must end at 100"),
    ],
)
def test_blue_green_step_errors_name_the_field_the_user_set(steps: list[int], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        BlueGreenRequest.model_validate({**BG, "steps": steps})
    assert "step_weights" not in str(refused.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("namespace", ""),
        ("namespace", "Shop"),
        ("namespace", "a;rm -rf /"),
        ("namespace", "a" * 10_000),
        ("release", ""),
        ("release", "Shop"),
        ("release", "a;rm -rf /"),
        ("release", "$(reboot)"),
        ("release", "a" * 10_000),
        ("release", "-shop"),
    ],
)
def test_retire_refuses_names_kubernetes_and_helm_would_refuse(field: str, value: str) -> None:
    fields = {"namespace": "ns", "release": "shop", field: value}
    with pytest.raises(ValidationError) as refused:
        RetireRequest.model_validate(fields)
    assert refused.value.errors()[0]["loc"] == (field,)


def test_green_runs_blue_values_with_its_own_tag_track_and_no_ingress() -> None:
    from flows._blue_green_steps import green_values

    blue = {"image": {"repository": "reg/app", "tag": "1.0.0"}, "ingress": {"enabled": True, "host": "h"}, "x": [1]}
    green = green_values(blue, version="1.1.0", extra={"replicas": 3, "x": [2]})
    assert green == {
        "image": {"repository": "reg/app", "tag": "1.1.0"},
        "ingress": {"enabled": False, "host": "h"},
        "track": "green",
        "replicas": 3,
        "x": [2],
    }
    assert blue["image"]["tag"] == "1.0.0"  # blue's values are not changed


def test_blue_green_window_errors_name_the_fields_the_user_set() -> None:
    with pytest.raises(
        ValidationError, match="window_seconds 3600 / interval_seconds 1 asks for 3600 checks"
    ) as refused:
        BlueGreenRequest.model_validate({**BG, "window_seconds": 3600, "interval_seconds": 1})
    assert "iterations" not in str(refused.value)
    analysis = BlueGreenRequest.model_validate({**BG, "window_seconds": 100, "interval_seconds": 1}).analysis()
    assert (analysis.iterations, analysis.interval_seconds, analysis.step_weights) == (100, 1, [10, 25, 50, 75, 100])


def test_titles_refusals_and_gate_forms() -> None:
    assert titled("Plan (nothing changed)", "PLAN") == "# Plan (nothing changed)\n\nPLAN"
    assert not_approved("", "PLAN") == "# Not approved: nothing changed\n\n_no comment_\n\nPLAN"
    form = gate_form("promote", serving="The canary serves **100%**.", details="TABLE")
    assert form == "## Gate: promote\n\nThe canary serves **100%**.\n\nTABLE"
