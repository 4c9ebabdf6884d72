"""The checklist's vulnerability check with the real grype (built by the toolchain) against the sandbox registry.

The sandbox's own grype database (sandbox/vulndb.py, written with grype's v6 writer) holds made-up advisories for
the `rollbook/scan-demo` images: 1.0.0 has SANDBOX-2026-0001 (Critical) and SANDBOX-2026-0002 (Medium), 1.1.0
only the Medium one, 2.0.0 none. No network is used: grype neither downloads a database nor checks for updates.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helm_helpers import RELEASE, helm_deploy
from prefect import flow
from pydantic import SecretStr

from flows.predeploy_checklist import ChecklistFailed, ChecklistRequest, predeploy_checklist
from rollbook.checklist import CHECKS, CheckName, CheckPolicy, Status
from sandbox import datastores
from sandbox.cluster import Sandbox
from sandbox.registry import SCAN_DEMO_PACKAGE, SandboxRegistries
from sandbox.toolchain import SCANNER_PINS
from sandbox.vulndb import CRITICAL_ADVISORY, MEDIUM_ADVISORY
from tasks.checks.vulnerabilities import check_vulnerabilities
from tasks.migrations import MigrationCheck
from tasks.scanners import GrypeScanner

OTHER_CHECKS: list[CheckName] = [
    "cluster-health",
    "current-release",
    "image-signature",
    "image-details",
    "chart",
    "capacity",
    "db-migration",
]


@pytest.fixture(scope="module")
def grype_env(sandbox: Sandbox) -> dict[str, str]:
    """ROLLBOOK_GRYPE and grype's GRYPE_DB_* settings for the sandbox's database (written on first use)."""
    return sandbox.grype_env()


@pytest.fixture
def sandbox_db(grype_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Scans in this test use the sandbox's grype and database, the way `eval "$(rollbook sandbox env)"` sets up."""
    for name, value in grype_env.items():
        monkeypatch.setenv(name, value)
    return grype_env["ROLLBOOK_GRYPE"]


def test_real_grype_reports_the_sandbox_advisories(registries: SandboxRegistries, sandbox_db: str) -> None:
    image = registries.scan_image("1.0.0")
    report = GrypeScanner(sandbox_db).scan(image)
    assert report.image == image
    assert report.scanner == f"grype {SCANNER_PINS['grype']}"
    found = {f.id: f for f in report.findings}
    assert set(found) == {CRITICAL_ADVISORY, MEDIUM_ADVISORY}
    critical = found[CRITICAL_ADVISORY]
    assert (critical.severity, critical.package, critical.version) == ("Critical", SCAN_DEMO_PACKAGE, "1.0.0")
    assert critical.fixed_in == ["1.1.0"] and found[MEDIUM_ADVISORY].severity == "Medium"
    assert report.database["status"]["schemaVersion"].startswith("v6.") and report.database["status"]["valid"]
    assert report.database["status"]["path"].startswith(os.environ["GRYPE_DB_CACHE_DIR"])  # the sandbox's DB


def test_vulnerable_image_fails_at_critical_naming_the_advisory(registries: SandboxRegistries, sandbox_db: str) -> None:
    image = registries.scan_image("1.0.0")
    result = check_vulnerabilities.fn([image], "grype", "critical", "warn")  # grype from ROLLBOOK_GRYPE
    assert result.status == Status.FAIL, result.reason
    assert f"{CRITICAL_ADVISORY} Critical {SCAN_DEMO_PACKAGE}@1.0.0" in result.reason
    assert MEDIUM_ADVISORY not in result.reason  # below the threshold: counted, not named
    assert result.evidence["counts"] == {image: {"critical": 1, "medium": 1}}


def test_with_a_registry_block_the_mirror_copy_is_scanned_while_the_registry_is_down(
    sandbox: Sandbox, registries: SandboxRegistries, registry_block: str, sandbox_db: str
) -> None:
    image = registries.scan_image("1.0.0")
    digest = registries.digest(image)
    sandbox.stop_service("registry")
    try:
        without = check_vulnerabilities.fn([image], "grype", "critical", "fail")  # the dead registry only
        result = check_vulnerabilities.fn([image], "grype", "critical", "warn", registry_block=registry_block)
    finally:
        sandbox.start_registry()
    assert without.status == Status.FAIL and "scan not possible" in without.reason
    assert result.status == Status.FAIL and CRITICAL_ADVISORY in result.reason  # the finding, not "unreachable"
    mirror_copy = f"{sandbox.cfg.registry_host(mirror=True)}/rollbook/scan-demo@{digest}"
    assert result.evidence["served_by"] == {image: mirror_copy}
    assert result.evidence["counts"] == {image: {"critical": 1, "medium": 1}}


def test_threshold_above_the_findings_passes_and_at_them_fails(registries: SandboxRegistries, sandbox_db: str) -> None:
    image = registries.scan_image("1.1.0")  # only the Medium advisory affects 1.1.0
    above = check_vulnerabilities.fn([image], "grype", "high", "warn")
    assert above.status == Status.PASS, above.reason
    assert above.reason == "no finding at or above high in 1 image(s)"
    assert above.evidence["counts"] == {image: {"medium": 1}}  # what is below the threshold stays visible
    at = check_vulnerabilities.fn([image], "grype", "medium", "warn")
    assert at.status == Status.FAIL and f"{MEDIUM_ADVISORY} Medium {SCAN_DEMO_PACKAGE}@1.1.0" in at.reason


def test_clean_image_passes_at_any_threshold(
    registries: SandboxRegistries, sandbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = registries.scan_image("2.0.0")  # the package is there, at a version no advisory affects
    # no argument: the grype ROLLBOOK_GRYPE names, as `rollbook sandbox env --scanner` exports it
    report = GrypeScanner().scan(image)
    assert report.findings == [] and report.scanner == f"grype {SCANNER_PINS['grype']}"
    monkeypatch.setenv("ROLLBOOK_GRYPE", sandbox_db)
    result = check_vulnerabilities.fn([image], "grype", "negligible", "fail")
    assert result.status == Status.PASS, result.reason
    assert result.evidence["counts"] == {image: {}}


def test_a_fail_on_severity_setting_does_not_hide_the_report(
    registries: SandboxRegistries, sandbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grype config's fail-on-severity makes grype exit 2 with the report on stdout: still a report, not an error."""
    monkeypatch.setenv("GRYPE_FAIL_ON_SEVERITY", "medium")
    report = GrypeScanner(sandbox_db).scan(registries.scan_image("1.1.0"))
    assert [f.id for f in report.findings] == [MEDIUM_ADVISORY]


def test_checklist_flow_blocks_on_the_critical_advisory(
    sandbox: Sandbox, registries: SandboxRegistries, demo_chart: Path, namespace: str, sandbox_db: str
) -> None:
    """The whole flow, only the scan enabled: the verdict blocks and the report names the advisory."""
    fields = {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "release": "scan",
        "chart": str(demo_chart),
        "images": [registries.scan_image("1.0.0")],
        "helm_executable": str(sandbox.bins / "helm"),
        "severity_threshold": "critical",
    }
    required = CheckPolicy(skip=OTHER_CHECKS)  # every check blocks unless downgraded or skipped
    with pytest.raises(ChecklistFailed, match="vulnerabilities"):
        predeploy_checklist(ChecklistRequest(**fields, policy=required))
    verdict = predeploy_checklist(
        ChecklistRequest(**fields, policy=CheckPolicy(downgrade=["vulnerabilities"], skip=OTHER_CHECKS))
    )
    scan = next(r for r in verdict.results if r.check == "vulnerabilities")
    assert scan.status == "fail" and CRITICAL_ADVISORY in scan.reason


@pytest.mark.parametrize("auto_update", ["false", "true"])
def test_without_a_database_the_policy_decides(
    registries: SandboxRegistries,
    grype_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    auto_update: str,
) -> None:
    """An empty DB directory; with auto-update on, grype also tries its download server, unreachable here."""
    monkeypatch.setenv("ROLLBOOK_GRYPE", grype_env["ROLLBOOK_GRYPE"])
    monkeypatch.setenv("GRYPE_DB_CACHE_DIR", str(tmp_path / "no-db"))
    monkeypatch.setenv("GRYPE_DB_AUTO_UPDATE", auto_update)
    image = registries.scan_image("1.0.0")
    for policy in ("warn", "fail"):
        result = check_vulnerabilities.fn([image], "grype", "critical", policy)
        assert result.status == Status(policy), result.reason
        assert result.reason.startswith("scan not possible: grype vulnerability database not available"), result.reason
        assert result.evidence["scanned"] == []


def test_a_database_past_its_maximum_age_is_unavailable(
    registries: SandboxRegistries, sandbox_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grype refuses a database built longer ago than db.max-allowed-built-age (5 days by default; 1s here)."""
    monkeypatch.setenv("GRYPE_DB_MAX_ALLOWED_BUILT_AGE", "1s")
    result = check_vulnerabilities.fn([registries.scan_image("1.0.0")], "grype", "critical", "fail")
    assert result.status == Status.FAIL
    assert result.reason.startswith("scan not possible: grype vulnerability database not available")
    assert "max allowed age is 1 second" in result.reason


@flow(name="checklist-gate-test")
def gated_deploy(request: ChecklistRequest) -> dict[str, Any]:
    """What a deploy flow does with the checklist: run it as a subflow and stop on ChecklistFailed."""
    try:
        verdict = predeploy_checklist(request)
    except ChecklistFailed as failed:
        return {"went_ahead": False, "summary": str(failed), "verdict": failed.verdict}
    return {"went_ahead": True, "summary": verdict.summary, "verdict": verdict}


@pytest.fixture
def migrated(sandbox: Sandbox) -> Iterator[tuple[str, str]]:
    """A schema holding golang-migrate's table at version 3 on the sandbox's PostgreSQL: (dsn, table)."""
    dsn = datastores.database_url(sandbox.cfg)
    schema = "gate_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)")
        conn.execute(f"INSERT INTO {schema}.schema_migrations VALUES (3, false)")
    yield dsn, f"{schema}.schema_migrations"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_healthy_release_with_the_real_grype_is_ready_and_the_gate_lets_it_through(
    sandbox: Sandbox,
    registries: SandboxRegistries,
    demo_chart: Path,
    namespace: str,
    sandbox_db: str,
    migrated: tuple[str, str],
) -> None:
    """Every check runs for real: a live healthy release, the clean signed scan-demo 2.0.0 image (cosign and
    grype against the sandbox registry and vulnerability DB), the chart's dry run, capacity and the database at
    the declared version; called as a subflow, the verdict comes back. The same gate with a database behind the
    version the release declares stops, with the verdict on the exception."""
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    dsn, table = migrated
    image = registries.scan_image("2.0.0")
    repository, tag = image.rsplit(":", 1)
    req = ChecklistRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        namespace=namespace,
        release=RELEASE,
        chart=str(demo_chart),
        values={"image": {"repository": repository, "tag": tag}},
        cosign_public_key=str(registries.public_key),
        helm_executable=str(sandbox.bins / "helm"),
        severity_threshold="negligible",
        migration=MigrationCheck(kind="golang-migrate", expected_version="3", dsn=SecretStr(dsn), table=table),
    )
    through = gated_deploy(req)
    # image-details only informs: the scan-demo image exposes no port and has no entrypoint (kwok never runs it)
    assert through["went_ahead"] and through["summary"] == "READY to deploy (warnings: image-details)", through[
        "summary"
    ]
    verdict = through["verdict"]
    expected = {name: ("pass", "ok") for name in CHECKS} | {"image-details": ("warn", "warning")}
    assert {r.check: (r.status, r.outcome) for r in verdict.rows} == expected, [
        (r.check, r.reason) for r in verdict.rows
    ]
    results = {r.check: r for r in verdict.results}
    assert results["image-signature"].evidence["verified"] == [image]
    assert results["vulnerabilities"].evidence["counts"] == {image: {}}
    sbom = results["vulnerabilities"].evidence["sbom"][image]  # written by the same grype scan
    assert {"name": SCAN_DEMO_PACKAGE, "version": "2.0.0", "type": "python"} in sbom["packages"]
    details = results["image-details"].evidence
    assert details["images"][image]["digest"] == registries.digest(image) and details["unreadable"] == {}
    assert any("declares containerPort 8080/tcp" in m for m in details["mismatches"]), details["mismatches"]
    assert results["db-migration"].reason == "golang-migrate: at version 3, clean"

    newer = MigrationCheck(kind="golang-migrate", expected_version="4", dsn=SecretStr(dsn), table=table)
    behind = req.model_copy(update={"migration": newer})
    stopped = gated_deploy(behind)
    assert not stopped["went_ahead"]
    assert stopped["summary"] == "NOT READY: required check(s) failed: db-migration"
    row = next(r for r in stopped["verdict"].rows if r.check == "db-migration")
    assert row.outcome == "blocking" and "database behind: at version 3, the release expects 4" in row.reason
