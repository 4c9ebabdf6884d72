"""Vulnerabilities: every image scanned by the configured scanner; findings at or above the threshold fail.

Given an `sbom_dir`, the same scan also writes each image's SBOM (CycloneDX JSON; grype writes both reports in
one run): its summary goes in the evidence (`sbom`), with the whole document when it is small, else the path of
the file it is kept in under `sbom_dir`. The flow makes the SBOM artifact of that evidence.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import task

from rollbook.checklist import CheckResult, Status, one_line
from rollbook.sbom import SMALL_SBOM_BYTES, NotAnSbom, summarise
from tasks.checks.common import NAMES_SHOWN
from tasks.policies import CHECK_SCAN
from tasks.registry import load_registry, pulled_copy
from tasks.scanners import ScannerKind, ScannerUnavailable, make_scanner


@task(**CHECK_SCAN)
def check_vulnerabilities(
    images: list[str],
    scanner: ScannerKind,
    threshold: str,
    unavailable_status: Status,
    executable: str | None = None,
    sbom_dir: str | None = None,
    registry_block: str | None = None,
) -> CheckResult:
    """Scan every image; fail when a finding is at or above `threshold`. A scan that cannot run answers
    `unavailable_status` (the policy's choice: warn or fail) and says why. With a registry block, each image is
    scanned on the copy a node using its mirrors would pull (`tasks.registry.pulled_copy`), named in the
    evidence (`served_by`)."""
    started = time.monotonic()
    tool = make_scanner(scanner, executable=executable)
    registry = load_registry(registry_block) if registry_block else None
    sources = {image: pulled_copy(registry, image) for image in images}
    served_by = {image: source for image, source in sources.items() if source != image}
    above: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    sboms: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rollbook-sbom-") as tmp:
        for image in images:
            written = Path(tmp) / sbom_file_name(image) if sbom_dir else None
            try:
                report = tool.scan(sources[image], written) if written else tool.scan(sources[image])
            except ScannerUnavailable as exc:
                return CheckResult(
                    check="vulnerabilities",
                    status=Status(unavailable_status),
                    reason=one_line(f"scan not possible: {exc}"),
                    evidence={"scanner": scanner, "unavailable": str(exc), "scanned": list(counts), "sbom": sboms},
                    seconds=time.monotonic() - started,
                )
            counts[image] = report.counts()
            hits = report.at_or_above(threshold)
            if hits:
                above[image] = [f"{f.id} {f.severity} {f.package}@{f.version}" for f in hits][:NAMES_SHOWN]
            if written and sbom_dir:
                sboms[image] = keep_sbom(written, Path(sbom_dir))
    result = vulnerability_result(above, counts, threshold, time.monotonic() - started)
    extra = {"served_by": served_by, **({"sbom": sboms} if sbom_dir else {})}
    return result.model_copy(update={"evidence": {**result.evidence, **extra}})


def sbom_file_name(image: str) -> str:
    """A file name for an image's SBOM: its reference with every character a path may not hold replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", image).strip("_")[:180] + ".cdx.json"


def keep_sbom(written: Path, directory: Path) -> dict[str, Any]:
    """The summary of the SBOM the scan wrote; the document itself when small, else moved into `directory` and
    named by its path. A scanner that wrote nothing (or something unreadable) is said so, not raised."""
    size = written.stat().st_size if written.exists() else 0
    if not size:
        return {"error": "the scanner wrote no SBOM"}
    try:
        doc = json.loads(written.read_text())
        summary = summarise(doc)
    except (UnicodeDecodeError, json.JSONDecodeError, NotAnSbom) as exc:
        return {"error": f"unreadable SBOM: {one_line(str(exc))}"}
    summary["bytes"] = size
    if size <= SMALL_SBOM_BYTES:
        return {**summary, "document": doc}
    directory.mkdir(parents=True, exist_ok=True)
    kept = directory / written.name
    shutil.move(written, kept)
    return {**summary, "path": str(kept)}


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
