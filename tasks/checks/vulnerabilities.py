"""Vulnerabilities: every image scanned by the configured scanner; findings at or above the threshold fail."""

from __future__ import annotations

import time

from prefect import task

from rollbook.checklist import CheckResult, Status, one_line
from tasks.checks.common import NAMES_SHOWN
from tasks.policies import CHECK_SCAN
from tasks.scanners import ScannerKind, ScannerUnavailable, make_scanner


@task(**CHECK_SCAN)
def check_vulnerabilities(
    images: list[str],
    scanner: ScannerKind,
    threshold: str,
    unavailable_status: Status,
    executable: str | None = None,
) -> CheckResult:
    """Scan every image; fail when a finding is at or above `threshold`. A scan that cannot run answers
    `unavailable_status` (the policy's choice: warn or fail) and says why."""
    started = time.monotonic()
    tool = make_scanner(scanner, executable=executable)
    above: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for image in images:
        try:
            report = tool.scan(image)
        except ScannerUnavailable as exc:
            return CheckResult(
                check="vulnerabilities",
                status=Status(unavailable_status),
                reason=one_line(f"scan not possible: {exc}"),
                evidence={"scanner": scanner, "unavailable": str(exc), "scanned": list(counts)},
                seconds=time.monotonic() - started,
            )
        counts[image] = report.counts()
        hits = report.at_or_above(threshold)
        if hits:
            above[image] = [f"{f.id} {f.severity} {f.package}@{f.version}" for f in hits][:NAMES_SHOWN]
    return vulnerability_result(above, counts, threshold, time.monotonic() - started)


def vulnerability_result(
    above: dict[str, list[str]], counts: dict[str, dict[str, int]], threshold: str, seconds: float = 0.0
) -> CheckResult:
    evidence = {"threshold": threshold, "counts": counts, "at_or_above_threshold": above}
    if above:
        image, hits = next(iter(above.items()))
        n = sum(len(v) for v in above.values())
        reason = f"{n} finding(s) at or above {threshold} in {len(above)} image(s); {image}: {', '.join(hits[:3])}"
        return CheckResult(
            check="vulnerabilities", status=Status.FAIL, reason=one_line(reason), evidence=evidence, seconds=seconds
        )
    reason = f"no finding at or above {threshold} in {len(counts)} image(s)"
    return CheckResult(check="vulnerabilities", status=Status.PASS, reason=reason, evidence=evidence, seconds=seconds)
