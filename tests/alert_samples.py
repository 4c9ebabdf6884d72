"""Alertmanager notifications and routing rules shared by the receiver's unit, Prefect and sandbox tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

TOKEN = "test-token-0123456789abcdef"
FINGERPRINT = "0123456789abcdef"
STARTS = "2026-12-03T08:00:00.123456789Z"  # Alertmanager sends nanoseconds


def alert(**labels: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "DemoHighErrorRate", "severity": "critical", "namespace": "shop", "release": "demo",
                   **labels},
        "annotations": {"summary": "5xx share above 5%"},
        "startsAt": STARTS,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=x",
        "fingerprint": FINGERPRINT,
    }  # fmt: skip


def notification(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    items = list(alerts) or [alert()]
    return {
        "receiver": "rollbook",
        "status": status,
        "alerts": items,
        "groupLabels": {"alertname": "DemoHighErrorRate"},
        "commonLabels": {"alertname": "DemoHighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="DemoHighErrorRate"}',
        "truncatedAlerts": 0,
    }


def resolved(payload: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(payload)
    out["status"] = "resolved"
    for item in out["alerts"]:
        item["status"], item["endsAt"] = "resolved", "2026-12-03T08:05:00Z"
    return out


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def rules_yaml(
    *,
    kubeconfig: str = "/etc/rollbook/kubeconfig",
    helm: str = "helm",
    match_ns: str | None = None,
    cooldown: int = 600,
    extra: str = "",
) -> str:
    match = f", namespace: {match_ns}" if match_ns else ""
    return (
        "rules:\n"
        "  - name: demo-error-rate\n"
        f"    match: {{alertname: DemoHighErrorRate, severity: critical{match}}}\n"
        "    deployment: helm-rollback\n"
        f"    cooldown_seconds: {cooldown}\n"
        "    labels: {namespace: dns-label, release: release-name}\n"
        "    parameters:\n"
        "      request:\n"
        "        namespace: '{{ namespace }}'\n"
        "        release: '{{ release }}'\n"
        f"        kubeconfig_path: {kubeconfig}\n"
        f"        helm_executable: {helm}\n"
        "        timeout_seconds: 60\n"
        f"{extra}"
    )  # fmt: skip


def write_rules(path: Path, **kwargs: Any) -> Path:
    path.write_text(rules_yaml(**kwargs))
    return path


# ---- hostile requests: (id, request kwargs for httpx/TestClient, expected status) --------------------------------
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def _with(**changes: Any) -> bytes:
    payload = notification()
    payload.update(changes)
    return body(payload)


def _alert_with(**changes: Any) -> bytes:
    item = alert()
    item.update(changes)
    return body(notification(item))


def _without(key: str, *, in_alert: bool = False) -> bytes:
    payload = notification()
    (payload["alerts"][0] if in_alert else payload).pop(key)
    return body(payload)


def _labels(**labels: Any) -> bytes:
    item = alert()
    item["labels"].update(labels)
    return body(notification(item))


def _nested(depth: int) -> bytes:
    return b'{"version":"4","groupKey":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


def _hostile() -> list[tuple[str, dict[str, Any], int]]:
    good = body(notification())
    cases: list[tuple[str, dict[str, Any], int]] = []

    def add(case_id: str, status: int, *, content: bytes = good, headers: dict[str, Any] | None = None) -> None:
        cases.append((case_id, {"content": content, "headers": AUTH if headers is None else headers}, status))

    json_only: dict[str, Any] = {"Content-Type": "application/json"}
    # authentication: 401, checked before the body is read
    add("no-token", 401, headers=json_only)
    add("wrong-token", 401, headers={**json_only, "Authorization": "Bearer wrong-token-0123456789abcdef"})
    add("token-prefix", 401, headers={**json_only, "Authorization": f"Bearer {TOKEN[:-1]}"})
    add("token-longer", 401, headers={**json_only, "Authorization": f"Bearer {TOKEN}x"})
    add("basic-scheme", 401, headers={**json_only, "Authorization": f"Basic {TOKEN}"})
    add("scheme-only", 401, headers={**json_only, "Authorization": "Bearer"})
    add("empty-header", 401, headers={**json_only, "Authorization": ""})
    add("token-as-other-header", 401, headers={**json_only, "X-Token": TOKEN})
    latin1 = "Bearer t\u00e9st-token-0123456789abcde".encode("latin-1")
    add("latin1-token", 401, headers={**json_only, "Authorization": latin1})
    # content type: 415
    add("text-plain", 415, headers={**AUTH, "Content-Type": "text/plain"})
    add("form-encoded", 415, headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    add("no-content-type", 415, headers={"Authorization": AUTH["Authorization"]})
    # size: 413
    add("body-over-limit", 413, content=b" " * (300 * 1024) + good)
    add("huge-label-value", 413, content=_labels(namespace="a" * (1 << 20)))
    add("huge-annotation", 413, content=_alert_with(annotations={"summary": "x" * (512 * 1024)}))
    add("declared-length-over-limit", 413, headers={**AUTH, "Content-Length": str(10 << 20)}, content=b"")
    add("bad-content-length", 400, headers={**AUTH, "Content-Length": "-1"}, content=b"")
    # not JSON, or not an object: 400
    add("empty-body", 400, content=b"")
    add("not-json", 400, content=b"this is not json")
    add("truncated-json", 400, content=good[:-20])
    add("json-array", 400, content=b"[]")
    add("json-null", 400, content=b"null")
    add("json-string", 400, content=b'"alerts"')
    add("deep-arrays", 400, content=b"[" * 50_000 + b"]" * 50_000)
    add("deep-objects", 400, content=_nested(5_000))
    add("invalid-utf8", 400, content=good.replace(b"shop", b"sh\xff\xfep"))
    add("nan-literal", 400, content=good.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": NaN'))
    # not an Alertmanager v4 notification: 400
    add("version-3", 400, content=_with(version="3"))
    add("version-number", 400, content=_with(version=4))
    add("version-missing", 400, content=_without("version"))
    add("group-key-missing", 400, content=_without("groupKey"))
    add("group-key-empty", 400, content=_with(groupKey=""))
    add("status-unknown", 400, content=_with(status="exploded"))
    add("receiver-empty", 400, content=_with(receiver=""))
    add("alerts-empty", 400, content=_with(alerts=[]))
    add("alerts-object", 400, content=_with(alerts={"a": alert()}))
    add("alerts-101", 400, content=_with(alerts=[alert() for _ in range(101)]))
    add("unknown-field", 400, content=_with(extra="x"))
    add("truncated-negative", 400, content=_with(truncatedAlerts=-1))
    add("truncated-as-text", 400, content=_with(truncatedAlerts="0"))
    add("truncated-as-bool", 400, content=_with(truncatedAlerts=True))
    add("common-labels-list", 400, content=_with(commonLabels=["a"]))
    add("fingerprint-missing", 400, content=_without("fingerprint", in_alert=True))
    add("fingerprint-short", 400, content=_alert_with(fingerprint="0123"))
    add("fingerprint-injection", 400, content=_alert_with(fingerprint="0123456789abcde'"))
    add("starts-missing", 400, content=_without("startsAt", in_alert=True))
    add("starts-not-a-date", 400, content=_alert_with(startsAt="yesterday"))
    add("starts-naive", 400, content=_alert_with(startsAt="2026-12-03T08:00:00"))
    add("starts-number", 400, content=_alert_with(startsAt=1764748800))
    add("alert-status-unknown", 400, content=_alert_with(status="pending"))
    add("alert-unknown-field", 400, content=_alert_with(silenceURL="http://x"))
    add("alertname-missing", 400, content=_alert_with(labels={"severity": "critical"}))
    add("label-value-number", 400, content=_labels(namespace=5))
    add("label-value-null", 400, content=_labels(namespace=None))
    add("label-value-list", 400, content=_labels(namespace=["shop"]))
    add("label-name-dash", 400, content=_labels(**{"bad-name": "x"}))
    add("label-name-space", 400, content=_labels(**{"a b": "x"}))
    add("labels-65", 400, content=_labels(**{f"l{i}": "x" for i in range(65)}))
    add("label-value-1025", 400, content=_labels(namespace="a" * 1025))
    add("annotation-object", 400, content=_alert_with(annotations={"summary": {"a": 1}}))
    # valid notifications whose labels cannot make the rule's parameters: 422, nothing of the group started
    add("ns-shell", 422, content=_labels(namespace="shop; rm -rf /"))
    add("ns-command-substitution", 422, content=_labels(namespace="$(whoami)"))
    add("ns-path", 422, content=_labels(namespace="../../etc"))
    add("ns-template", 422, content=_labels(namespace="{{ release }}"))
    add("ns-upper", 422, content=_labels(namespace="Shop"))
    add("ns-64", 422, content=_labels(namespace="a" * 64))
    add("ns-empty", 422, content=_labels(namespace=""))
    add("release-flag", 422, content=_labels(release="demo --set image.tag=evil"))
    add("release-newline", 422, content=_labels(release="demo\nkubeconfig_path: /tmp/x"))
    add("release-unicode", 422, content=_labels(release="d\u0435mo"))  # Cyrillic e
    add("release-missing", 422, content=body(notification({**alert(), "labels": {
        "alertname": "DemoHighErrorRate", "severity": "critical", "namespace": "shop"}})))  # fmt: skip
    add(
        "one-bad-alert-of-two",
        422,
        content=body(notification(alert(), {**alert(namespace="x;y"), "fingerprint": "fedcba9876543210"})),
    )
    return cases


HOSTILE = _hostile()
