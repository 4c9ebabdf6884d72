"""Parsing what the real grype 0.121.2 printed (samples captured from the sandbox's build, tests/data/grype/grype-*)."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.scanners.grype import GRYPE_DB_ERROR, grype_error, parse_grype

GRYPE = Path(__file__).resolve().parents[1] / "data" / "grype"


def test_real_v6_report_is_parsed() -> None:
    report = parse_grype(json.loads((GRYPE / "grype-0.121.2-sandbox-scan-demo-1.0.0.json").read_text()))
    assert report.scanner == "grype 0.121.2"
    assert report.image.endswith("/rollbook/scan-demo:1.0.0")
    found = {f.id: (f.severity, f.package, f.version, f.fixed_in) for f in report.findings}
    assert found == {
        "SANDBOX-2026-0001": ("Critical", "rollbook-scan-demo", "1.0.0", ["1.1.0"]),
        "SANDBOX-2026-0002": ("Medium", "rollbook-scan-demo", "1.0.0", ["2.0.0"]),
    }
    assert [f.id for f in report.at_or_above("high")] == ["SANDBOX-2026-0001"]
    # schema v6 reports nest the database description under descriptor.db.status
    assert report.database["status"]["schemaVersion"] == "v6.1.10" and report.database["status"]["valid"] is True


def test_real_error_output_is_reduced_to_grypes_error() -> None:
    no_db = grype_error((GRYPE / "grype-0.121.2-no-db.stderr").read_text())
    assert no_db == "failed to load vulnerability db: database does not exist"  # colours and WARN lines dropped
    assert GRYPE_DB_ERROR.search(no_db)
    unknown = grype_error((GRYPE / "grype-0.121.2-unknown-image.stderr").read_text())
    assert unknown.startswith("failed to catalog: errors occurred attempting to resolve")
    assert "NAME_UNKNOWN" in unknown  # the indented detail lines are kept
    assert not GRYPE_DB_ERROR.search(unknown)
    assert grype_error("") == ""
