"""Unit tests of the pre-deploy checklist's logic: verdict, policy, waivers, report, request, parsing, grype.
The capacity arithmetic is tested in test_capacity.py, the migration providers in test_migrations.py."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from flows.predeploy_checklist import ChecklistFailed, ChecklistRequest
from rollbook.capacity import pod_request
from rollbook.checklist import CHECKS, CheckPolicy, CheckResult, Status, Waiver, decide
from rollbook.reports.checklist import log_lines, markdown, table_rows
from tasks.checks.chart import images_in
from tasks.checks.common import ApiServerUnreachable, connection_reason
from tasks.checks.current_release import pod_issue
from tasks.checks.db_migration import check_db_migration
from tasks.checks.vulnerabilities import check_vulnerabilities
from tasks.listing import Pod, count, decode_page, list_all
from tasks.scanners import SCANNERS, GrypeScanner, ScannerUnavailable, make_scanner, severity_rank
from tasks.scanners.grype import parse_grype

GRYPE = Path(__file__).resolve().parents[1] / "data" / "grype"
NOW = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
GI = 1 << 30
MI = 1 << 20


def result(check: str, status: Status, reason: str = "because") -> CheckResult:
    return CheckResult(check=check, status=status, reason=reason)


# ---------------------------------------------------------------- verdict, policy, waivers


def test_required_failure_blocks_and_downgraded_failure_warns() -> None:
    policy = CheckPolicy(downgrade=["db-migration"])
    verdict = decide(
        [result("chart", Status.FAIL), result("db-migration", Status.FAIL), result("capacity", Status.PASS)],
        policy,
        [],
        NOW,
    )
    assert not verdict.ready
    assert verdict.summary == "NOT READY: required check(s) failed: chart"
    assert [r.outcome for r in verdict.rows] == ["blocking", "warning", "ok"]


def test_error_of_a_required_check_blocks_like_a_failure() -> None:
    verdict = decide([result("cluster-health", Status.ERROR, "API server unreachable")], CheckPolicy(), [], NOW)
    assert not verdict.ready and verdict.rows[0].outcome == "blocking"


def test_active_waiver_accepts_a_failure_and_is_reported() -> None:
    waiver = Waiver(
        check="capacity", reason="scale-up approved", expires=NOW + dt.timedelta(hours=2), approved_by="ops"
    )
    verdict = decide([result("capacity", Status.FAIL, "memory short by 1.0Gi")], CheckPolicy(), [waiver], NOW)
    assert verdict.ready
    assert verdict.summary == "READY to deploy (waived: capacity)"
    assert verdict.rows[0].outcome == "waived" and "by ops until" in verdict.rows[0].waiver
    md = markdown(verdict, "prod/shop")
    assert "### Waivers" in md and "`capacity` active" in md and "scale-up approved" in md
    assert table_rows(verdict)[0]["waiver"].startswith("waived by ops")


def test_expired_waiver_is_ignored_and_shown_as_expired() -> None:
    waiver = Waiver(check="chart", reason="known lint noise", expires=NOW - dt.timedelta(seconds=1))
    verdict = decide([result("chart", Status.FAIL)], CheckPolicy(), [waiver], NOW)
    assert not verdict.ready
    assert "EXPIRED" in verdict.rows[0].waiver
    assert "expired (ignored)" in markdown(verdict, "x")


def test_naive_expiry_is_read_as_utc() -> None:
    waiver = Waiver(check="chart", reason="until noon", expires=dt.datetime(2026, 11, 27, 12, 0))
    assert waiver.active(NOW)


def test_skipped_and_warn_results_do_not_block() -> None:
    policy = CheckPolicy(skip=["vulnerabilities"])
    verdict = decide(
        [result("vulnerabilities", Status.FAIL), result("db-migration", Status.WARN, "not configured")], policy, [], NOW
    )
    assert verdict.ready
    assert [r.outcome for r in verdict.rows] == ["skipped", "warning"]
    assert verdict.summary == "READY to deploy (warnings: db-migration)"


def test_markdown_table_escapes_pipes() -> None:
    verdict = decide([result("chart", Status.FAIL, "a | b")], CheckPolicy(), [], NOW)
    assert "a \\| b" in markdown(verdict, "ns/app")


def test_waiver_needs_a_known_check_and_a_reason() -> None:
    with pytest.raises(ValidationError):
        Waiver(check="nonsense", reason="x" * 5, expires=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Waiver(check="chart", reason="", expires=NOW)


# ---------------------------------------------------------------- listing views


def test_pod_pages_decode_only_what_capacity_reads() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "shop", "labels": {"app.kubernetes.io/instance": "demo"}},
        "spec": {"nodeName": "n7", "containers": [{"image": "x", "resources": {"requests": {"cpu": "250m"}}}]},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }
    page = json.dumps({"kind": "PodList", "metadata": {"continue": "next"}, "items": [pod]}).encode()
    items, token = decode_page(page, Pod)
    assert token == "next" and items[0].spec.node_name == "n7" and items[0].metadata.namespace == "shop"
    assert pod_request(items[0].spec) == (250, 0)
    assert decode_page(b'{"metadata": {}, "items": null}', Pod) == ([], "")


def test_images_of_the_rendered_chart_in_order() -> None:
    manifests: list[dict[str, Any]] = [
        {"kind": "Service", "metadata": {"name": "web"}},
        {
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"name": "migrate", "image": "reg/migrate:1"}],
                        "containers": [{"name": "web", "image": "reg/web:1"}, {"name": "side", "image": "reg/web:1"}],
                    }
                }
            },
        },
        {
            "kind": "CronJob",
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "reg/job:2"}]}}}}},
        },
    ]
    assert images_in(manifests) == ["reg/migrate:1", "reg/web:1", "reg/job:2"]


def test_pod_issue_names_crash_loops_and_unready_pods() -> None:
    crashing = {
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        }
    }
    assert pod_issue(crashing) == "app: CrashLoopBackOff"
    unready = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}
    assert pod_issue(unready) == "not Ready"
    assert pod_issue({"status": {"phase": "Pending"}}) == "phase Pending"
    assert pod_issue({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}) == ""


# ---------------------------------------------------------------- input


def test_request_refuses_bad_input(tmp_path: Path) -> None:
    base = {"kubeconfig_path": "/k", "namespace": "prod", "release": "shop", "chart": str(tmp_path)}
    assert ChecklistRequest(**base, images=["reg.example:5000/shop/api:1.2@sha256:" + "a" * 64]).images
    with pytest.raises(ValidationError, match="chart not found"):
        ChecklistRequest(**{**base, "chart": str(tmp_path / "nope")})
    with pytest.raises(ValidationError, match="not a valid image reference: 'shop api'"):
        ChecklistRequest(**base, images=["shop api"])
    with pytest.raises(ValidationError, match="not valid YAML"):
        ChecklistRequest(**base, values_yaml="a: [")
    with pytest.raises(ValidationError, match="registry_block or cosign_public_key"):
        ChecklistRequest(**base, registry_block="r", cosign_public_key="/k.pub")
    merged = ChecklistRequest(**base, values_yaml="image: {tag: '1', repository: r}", values={"image": {"tag": "2"}})
    assert merged.merged_values() == {"image": {"tag": "2", "repository": "r"}}
    assert ChecklistRequest(**{**base, "chart": "oci://reg/charts/shop"}).chart.startswith("oci://")


def test_db_migration_not_configured_is_said_clearly_and_never_blocks() -> None:
    answer = check_db_migration.fn(None)
    assert answer.status == Status.WARN and answer.reason.startswith("not configured")
    assert answer.evidence["available_providers"] == ["alembic", "flyway", "golang-migrate", "rails"]
    verdict = decide([answer], CheckPolicy(), [], NOW)  # db-migration is required by default: a warn still passes
    assert (
        verdict.ready
        and verdict.rows[0].level == "required"
        and verdict.summary == "READY to deploy (warnings: db-migration)"
    )


def test_request_refuses_negative_or_empty_requests_naming_the_field(tmp_path: Path) -> None:
    base = {"kubeconfig_path": "/k", "namespace": "prod", "release": "shop", "chart": str(tmp_path)}
    good = {"workload": "Deployment/api", "replicas": 2, "cpu_m": 100, "memory": 64 << 20}
    assert ChecklistRequest(**base, requests=[good]).requests[0].memory == 64 << 20
    for field, value in [("replicas", -1), ("cpu_m", 0), ("cpu_m", -100), ("memory", 0), ("memory", -1)]:
        with pytest.raises(ValidationError) as refused:
            ChecklistRequest(**base, requests=[{**good, field: value}])
        assert refused.value.errors()[0]["loc"] == ("requests", 0, field), (field, value)
    for field, value in [("replicas", True), ("cpu_m", "100"), ("memory", 1.5)]:  # no coercion into numbers
        with pytest.raises(ValidationError, match=field):
            ChecklistRequest(**base, requests=[{**good, field: value}])


def test_request_scanner_is_a_registered_kind(tmp_path: Path) -> None:
    base = {"kubeconfig_path": "/k", "namespace": "prod", "release": "shop", "chart": str(tmp_path)}
    with pytest.raises(ValidationError, match="'grype'"):
        ChecklistRequest(**base, scanner="trivy")
    schema = ChecklistRequest.model_json_schema()
    field = schema["properties"]["scanner"]
    assert field.get("enum", [field.get("const")]) == sorted(SCANNERS) == ["grype"]  # one kind: a const
    assert "pattern" not in schema["properties"]["scanner"]
    assert isinstance(make_scanner("grype", executable="/x/grype"), GrypeScanner)
    with pytest.raises(ValueError, match="unknown vulnerability scanner 'trivy'; known: grype"):
        make_scanner("trivy")


# ---------------------------------------------------------------- API server unreachable, report, gate


def test_connection_errors_are_reduced_to_their_reason() -> None:
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    inner = NewConnectionError(object(), "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    wrapped = MaxRetryError(None, "/version", inner)  # type: ignore[arg-type]
    assert connection_reason(wrapped) == "Failed to establish a new connection: [Errno 111] Connection refused"
    assert issubclass(ApiServerUnreachable, ConnectionError)  # transient: the named policy retries it first


def test_unreachable_cause_leads_the_verdict() -> None:
    cause = "cannot reach the API server at https://127.0.0.1:1: Connection refused"
    results = [result("cluster-health", Status.ERROR, cause), result("capacity", Status.ERROR, cause)]
    verdict = decide(results, CheckPolicy(), [], NOW, cause=cause)
    assert verdict.summary == f"NOT READY: {cause}; required check(s) failed: cluster-health, capacity"
    assert decide([result("chart", Status.PASS)], CheckPolicy(), [], NOW, cause=cause).ready


def test_report_lines_and_table() -> None:
    verdict = decide(
        [result("chart", Status.FAIL, "lint"), result("capacity", Status.PASS, "room")], CheckPolicy(), [], NOW
    )
    assert log_lines(verdict) == [
        "chart: fail (blocking) lint",
        "capacity: pass (ok) room",
        "verdict: NOT READY: required check(s) failed: chart",
    ]
    md = markdown(verdict, "prod/shop")
    assert md.startswith("## Pre-deploy checklist: prod/shop\n\n**NOT READY: required check(s) failed: chart**")
    assert "| ❌ | chart | fail (blocking) | required | lint | 0.0 |" in md
    assert [r["outcome"] for r in table_rows(verdict)] == ["blocking", "ok"]


def test_checklist_failed_carries_the_verdict_through_pickling() -> None:
    import pickle

    verdict = decide([result("chart", Status.FAIL)], CheckPolicy(), [], NOW)
    failed = pickle.loads(pickle.dumps(ChecklistFailed(verdict.summary, verdict)))
    assert str(failed) == verdict.summary and failed.verdict == verdict


# ---------------------------------------------------------------- grype


def test_grype_report_parsing_and_thresholds() -> None:
    report = parse_grype(json.loads((GRYPE / "debian12-critical.json").read_text()))
    assert report.image == "registry.example.com/shop/api:1.4.2"
    assert report.scanner == "grype 0.79.6" and report.database["schemaVersion"] == 5
    assert report.counts() == {"critical": 1, "high": 1, "negligible": 1}
    assert [f.id for f in report.at_or_above("critical")] == ["CVE-2023-38545"]
    assert [f.id for f in report.at_or_above("high")] == ["CVE-2023-38545", "CVE-2023-4911"]
    assert report.findings[0].fixed_in == ["7.88.1-10+deb12u4"] and report.findings[0].package == "libcurl4"
    assert len(report.at_or_above("negligible")) == 3


def test_grype_duplicates_are_counted_once_and_unknown_never_crosses_a_threshold() -> None:
    report = parse_grype(json.loads((GRYPE / "alpine-clean.json").read_text()))
    assert report.counts() == {"low": 1, "unknown": 1}
    assert report.at_or_above("medium") == []
    assert [f.id for f in report.at_or_above("low")] == ["CVE-2024-9143"]
    assert report.database["status"]["schemaVersion"] == "v6.0.2"
    assert parse_grype(json.loads((GRYPE / "empty.json").read_text())).findings == []
    assert severity_rank("Unknown") == -1 and severity_rank("CRITICAL") == 4


def test_not_a_grype_report() -> None:
    with pytest.raises(ValueError, match="not a grype JSON report"):
        parse_grype({"results": []})


def _fake_grype(tmp_path: Path, body: str) -> str:
    script = tmp_path / "grype"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_grype_missing_or_without_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ScannerUnavailable, match="grype not found"):
        GrypeScanner(str(tmp_path / "absent")).scan("reg/app:1")
    no_db = _fake_grype(tmp_path, 'echo "failed to load vulnerability db: db is too old" >&2\nexit 1\n')
    with pytest.raises(ScannerUnavailable, match="database not available"):
        GrypeScanner(no_db).scan("reg/app:1")


def test_vulnerability_check_with_a_fake_grype(tmp_path: Path) -> None:
    sample = GRYPE / "debian12-critical.json"
    grype = _fake_grype(tmp_path, f'cat "{sample}"\n')
    failed = check_vulnerabilities.fn(["reg/api:1"], "grype", "critical", "warn", grype)
    assert failed.status == Status.FAIL
    assert failed.reason.startswith("1 finding(s) at or above critical in 1 image(s); reg/api:1: CVE-2023-38545")
    assert failed.evidence["counts"] == {"reg/api:1": {"critical": 1, "high": 1, "negligible": 1}}
    (tmp_path / "clean").mkdir()
    clean = _fake_grype(tmp_path / "clean", f'cat "{GRYPE / "alpine-clean.json"}"\n')
    assert check_vulnerabilities.fn(["reg/web:2"], "grype", "high", "warn", clean).status == Status.PASS


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_unavailable_scanner_answers_what_the_policy_says(tmp_path: Path, policy: str) -> None:
    answer = check_vulnerabilities.fn(["reg/api:1"], "grype", "critical", policy, str(tmp_path / "absent"))
    assert answer.status == Status(policy)
    assert "scan not possible: grype not found" in answer.reason


class _FakeLister:
    """A kubernetes-client list method answering from canned pages, recording the limit/continue it was given."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append({"args": args, **kwargs})
        body = self.pages[len(self.calls) - 1]

        class Response:
            data = json.dumps(body).encode()

        return Response()


def test_the_one_pager_follows_continue_tokens() -> None:
    lister = _FakeLister(
        [
            {"metadata": {"continue": "t1"}, "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]},
            {"metadata": {}, "items": [{"metadata": {"name": "c"}, "spec": {"x": 1}}]},
        ]
    )
    assert [o["metadata"]["name"] for o in list_all(lister, "ns", label_selector="app=x")] == ["a", "b", "c"]
    assert [(c["args"], c["_continue"], c["limit"], c["label_selector"]) for c in lister.calls] == [
        (("ns",), None, 500, "app=x"),
        (("ns",), "t1", 500, "app=x"),
    ]
    lister.calls.clear()
    assert count(lister, "ns") == 3


def test_the_required_set_cannot_be_weakened_by_choosing_fewer() -> None:
    """No field selects the required checks: naming one check only ever weakens that one check, explicitly."""
    assert CheckPolicy().required == list(CHECKS)
    assert "required" not in CheckPolicy.model_json_schema()["properties"]
    with pytest.raises(ValidationError, match="required"):
        CheckPolicy.model_validate({"required": ["chart"]})  # the old replacing list is refused, not ignored
    with pytest.raises(ValidationError, match="warn_only"):
        CheckPolicy.model_validate({"warn_only": ["chart"]})
    policy = CheckPolicy(downgrade=["chart"])
    assert policy.required == [c for c in CHECKS if c != "chart"]
    critical = result("vulnerabilities", Status.FAIL, "1 Critical: CVE-0000-0001")
    assert not decide([critical], policy, [], NOW).ready  # downgrading chart does not let a Critical CVE pass


def test_a_check_cannot_be_both_downgraded_and_skipped() -> None:
    with pytest.raises(ValidationError, match="both downgrade and skip"):
        CheckPolicy(downgrade=["chart"], skip=["chart"])
