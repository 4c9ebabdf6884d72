"""Routing rules and the Alertmanager model: one-line errors for a bad rules file, first match wins, label values
checked against their kind and the flow's own parameter model, and an idempotency key per alert occurrence."""

from __future__ import annotations

from pathlib import Path

import pytest
from alert_samples import alert, body, notification, resolved, rules_yaml, write_rules

from flows import FLOWS
from rollbook.alert_rules import RefusedAlert, RulesError, load_rules
from rollbook.alerts import PayloadError, idempotency_key, parse_notification

FLOW_FNS = {name: flow.fn for name, flow in FLOWS.items()}


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return load_rules(path, FLOW_FNS)


GOOD_RULE = "  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: 3\n", "expected a mapping with one key, rules"),
        ("other: []\n", "expected a mapping with one key, rules"),
        ("rules: [\n", "not YAML"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: nope\n",
         "rule r.deployment: 'nope' is not in"),
        ("rules:\n  - name: R_1\n    match: {alertname: A}\n    deployment: hello-cluster\n", "rules[0].name"),
        ("rules:\n  - name: r\n    match: {}\n    deployment: hello-cluster\n", "rules[0].match"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n    surprise: 1\n",
         "rules[0].surprise: Extra inputs are not permitted"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n    on: resolved\n",
         "rules[0]: key True is not text"),  # YAML 1.1 reads `on` as true: refused, never silently ignored
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n    cooldown_seconds: '5'\n",
         "rules[0].cooldown_seconds"),
        ("rules:\n" + GOOD_RULE + GOOD_RULE, "two rules are named 'r'"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n"
         "    labels: {namespace: anything}\n", "rules[0].labels: namespace: unknown kind 'anything'"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n"
         "    parameters: {request: {namespace: '{{ namespace }}'}}\n", "uses labels ['namespace'] not declared"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n"
         "    labels: {namespace: dns-label}\n    parameters: {request: {namespace: 'ns-{{ namespace }}'}}\n",
         "a placeholder must be a whole value"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: hello-cluster\n"
         "    parameters: {request: {nmespace: x}}\n", "request.nmespace: unknown field"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: helm-rollback\n"
         "    parameters: {request: {namespace: x}}\n", "request.release: required"),
        ("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: helm-rollback\n    parameters: {x: 1}\n",
         "unknown parameter(s) ['x']"),
    ],
)  # fmt: skip
def test_a_bad_rules_file_is_one_line_naming_the_rule_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        load(tmp_path, text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "none.yaml", FLOW_FNS)


def test_first_matching_rule_wins_and_every_match_label_must_be_equal(tmp_path: Path) -> None:
    extra = "  - name: catch-all\n    match: {alertname: DemoHighErrorRate}\n    deployment: hello-cluster\n"
    rules = load_rules(write_rules(tmp_path / "r.yaml", extra=extra), FLOW_FNS)
    note = parse_notification(body(notification()))
    assert rules.rule_for(note.alerts[0]).name == "demo-error-rate"  # type: ignore[union-attr]
    warning = parse_notification(body(notification(alert(severity="warning")))).alerts[0]
    assert rules.rule_for(warning).name == "catch-all"  # type: ignore[union-attr]
    other = parse_notification(body(notification(alert(alertname="Other")))).alerts[0]
    assert rules.rule_for(other) is None
    gone = parse_notification(body(resolved(notification()))).alerts[0]
    assert rules.rule_for(gone) is None  # firing rules never react to the resolved notification


def test_parameters_take_only_checked_label_values_and_the_rules_own_fields(tmp_path: Path) -> None:
    rules = load_rules(write_rules(tmp_path / "r.yaml"), FLOW_FNS)
    note = parse_notification(body(notification(alert(kubeconfig_path="/tmp/evil", plan="true"))))
    rule = rules.rule_for(note.alerts[0])
    assert rule is not None
    params = rules.parameters(rule, note.alerts[0], note)
    assert params["request"] == {
        "namespace": "shop", "release": "demo", "kubeconfig_path": "/etc/rollbook/kubeconfig",
        "helm_executable": "helm", "timeout_seconds": 60,
    }  # fmt: skip
    assert set(params["controls"]) == {"reason", "requested_by"}  # extra labels never become parameters
    reason = "alert DemoHighErrorRate firing since 2026-12-03T08:00:00Z (rule demo-error-rate)"
    assert params["controls"]["reason"] == reason


@pytest.mark.parametrize(
    "labels",
    [{"namespace": "a b"}, {"namespace": "UPPER"}, {"release": "x" * 54}, {"release": "../x"}, {"namespace": "-a"}],
)
def test_label_values_outside_their_kind_are_refused(tmp_path: Path, labels: dict[str, str]) -> None:
    rules = load_rules(write_rules(tmp_path / "r.yaml"), FLOW_FNS)
    note = parse_notification(body(notification(alert(**labels))))
    rule = rules.rule_for(note.alerts[0])
    assert rule is not None
    with pytest.raises(RefusedAlert, match="rule demo-error-rate: label"):
        rules.parameters(rule, note.alerts[0], note)


def test_a_value_of_the_right_kind_is_still_checked_by_the_flows_model(tmp_path: Path) -> None:
    text = rules_yaml().replace("release: release-name", "release: dns-subdomain")
    rules = load(tmp_path, text)
    note = parse_notification(body(notification(alert(release="a" * 60))))  # a subdomain, but no helm release
    rule = rules.rule_for(note.alerts[0])  # type: ignore[attr-defined]
    with pytest.raises(RefusedAlert, match="request.release"):
        rules.parameters(rule, note.alerts[0], note)  # type: ignore[attr-defined]


def test_the_idempotency_key_is_per_alert_occurrence() -> None:
    base = parse_notification(body(notification()))
    key = idempotency_key(base, base.alerts[0], rule="r")
    assert key == idempotency_key(parse_notification(body(notification())), base.alerts[0], rule="r")
    later = parse_notification(body(notification(alert() | {"startsAt": "2026-12-03T09:00:00Z"})))
    other = parse_notification(body(notification(alert() | {"fingerprint": "fedcba9876543210"})))
    gone = parse_notification(body(resolved(notification())))
    keys = {
        key,
        idempotency_key(later, later.alerts[0], rule="r"),
        idempotency_key(other, other.alerts[0], rule="r"),
        idempotency_key(gone, gone.alerts[0], rule="r"),
        idempotency_key(base, base.alerts[0], rule="s"),
    }
    assert len(keys) == 5 and all(k.startswith("alertmanager-") and len(k) == 53 for k in keys)


def test_the_same_instant_in_another_offset_is_the_same_occurrence() -> None:
    a = parse_notification(body(notification(alert() | {"startsAt": "2026-12-03T08:00:00Z"})))
    b = parse_notification(body(notification(alert() | {"startsAt": "2026-12-03T09:00:00+01:00"})))
    assert idempotency_key(a, a.alerts[0], rule="r") == idempotency_key(b, b.alerts[0], rule="r")


def test_payload_errors_are_one_line_naming_the_field() -> None:
    with pytest.raises(PayloadError, match=r"^alerts\.0\.fingerprint: "):
        parse_notification(body(notification(alert() | {"fingerprint": "x"})))
    with pytest.raises(PayloadError, match="^version: "):
        parse_notification(body(notification() | {"version": "5"}))
