"""grype (anchore/grype) as a `Scanner`: runs the binary on a registry image and parses its JSON report.

grype's JSON report (`grype IMAGE -o json`), the fields read here (see tests/data/grype/ for samples):
- `matches[]`: one per (vulnerability, package) pair:
  - `vulnerability`: `id` (CVE-/GHSA-...), `severity` (Negligible, Low, Medium, High, Critical, Unknown),
    `fix.state` (fixed, not-fixed, wont-fix, unknown) and `fix.versions[]`;
  - `artifact`: the package, `name`, `version`, `type` (deb, apk, python, go-module...);
- `source.target.userInput`: what was scanned; `descriptor.name`/`version`: grype itself;
  `descriptor.db`: the vulnerability database the scan used (its build time, schema; `descriptor.db.status` since
  schema v6).
grype refuses to scan with a database older than its `db.max-allowed-built-age` (5 days by default), and cannot
download one offline; both come back as exit 1 with an ERROR log line naming the database ("failed to load
vulnerability db: database does not exist"). `--quiet` would silence that line too, so it is not used.

What was learned from the real grype (0.121.2): the database location and update policy come from grype's own
environment (GRYPE_DB_CACHE_DIR, GRYPE_DB_AUTO_UPDATE; `rollbook sandbox env` prints the sandbox's), which the
scan inherits; a registry on a loopback address (127.0.0.1:PORT) is reached over plain HTTP without
GRYPE_REGISTRY_INSECURE_USE_HTTP (go-containerregistry treats loopback as insecure); exit 2 means a
`fail-on-severity` from a grype config file was crossed, and the report is still on stdout. One scan writes
several reports: `-o json -o cyclonedx-json=FILE` prints the JSON report and writes the image's SBOM (CycloneDX
1.7, grype's own syft catalogue of the packages, with the vulnerabilities) to FILE; grype creates FILE empty
before it loads its database, so a scan that fails (no database) leaves an empty file, not an SBOM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tasks.scanners.base import Finding, ScannerUnavailable, ScanReport

SCAN_TIMEOUT_SECONDS = 600
# grype's own words when it cannot load a database (cmd/grype/cli/commands/root.go, validateDBLoad)
GRYPE_DB_ERROR = re.compile(r"vulnerability db|db could not be loaded", re.IGNORECASE)
GRYPE_ERROR_LINE = re.compile(r"^\[\d+\]\s+ERROR\s+(.*)$")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
GRYPE_EXIT_ABOVE_FAIL_ON = 2


def parse_grype(report: dict[str, Any], image: str = "") -> ScanReport:
    """A grype JSON report as a ScanReport; duplicate (id, package, version) matches are counted once."""
    if not isinstance(report, dict) or not isinstance(report.get("matches"), list):
        raise ValueError("not a grype JSON report: no 'matches' list")
    seen: set[tuple[str, str, str]] = set()
    findings: list[Finding] = []
    for match in report["matches"]:
        vuln = match.get("vulnerability") or {}
        artifact = match.get("artifact") or {}
        key = (str(vuln.get("id", "?")), str(artifact.get("name", "?")), str(artifact.get("version", "")))
        if key in seen:
            continue
        seen.add(key)
        fix = vuln.get("fix") or {}
        findings.append(
            Finding(
                id=key[0],
                severity=str(vuln.get("severity") or "Unknown"),
                package=key[1],
                version=key[2],
                fixed_in=[str(v) for v in fix.get("versions") or []],
            )
        )
    target = ((report.get("source") or {}).get("target") or {}) if isinstance(report.get("source"), dict) else {}
    descriptor = report.get("descriptor") or {}
    return ScanReport(
        image=image or str(target.get("userInput") or ""),
        scanner=f"{descriptor.get('name', 'grype')} {descriptor.get('version', '')}".strip(),
        findings=findings,
        database=descriptor.get("db") or {},
    )


class GrypeScanner:
    """Runs the grype binary (the given one, else $ROLLBOOK_GRYPE, which `rollbook sandbox env --scanner` exports,
    else grype on PATH) and parses its JSON report. Its database is never chosen here: grype's own
    settings decide, so the sandbox's made-up advisories are used only where its GRYPE_DB_* are exported."""

    name = "grype"

    def __init__(self, executable: str | None = None, timeout_seconds: int = SCAN_TIMEOUT_SECONDS) -> None:
        self.executable = executable or os.environ.get("ROLLBOOK_GRYPE") or "grype"
        self.timeout_seconds = timeout_seconds

    def scan(self, image: str, sbom: Path | None = None) -> ScanReport:
        binary = shutil.which(self.executable)
        if binary is None:
            raise ScannerUnavailable(
                f"grype not found ({self.executable!r}): install it or set ROLLBOOK_GRYPE "
                '(the sandbox\'s: eval "$(rollbook sandbox env --scanner)")'
            )
        # registry: scans the image from the registry without a container runtime
        argv = [binary, f"registry:{image}", "-o", "json"]
        if sbom is not None:  # the same scan writes the SBOM too: no second pass over the image
            argv += ["-o", f"cyclonedx-json={sbom}"]
        # a checklist must not phone home for a newer grype; any GRYPE_* the caller set wins
        env = {"GRYPE_CHECK_FOR_APP_UPDATE": "false", **os.environ}
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout_seconds, stdin=subprocess.DEVNULL, env=env
            )
        except subprocess.TimeoutExpired:
            raise ScannerUnavailable(f"grype did not finish scanning {image} in {self.timeout_seconds}s") from None
        if proc.returncode not in (0, GRYPE_EXIT_ABOVE_FAIL_ON) or not proc.stdout.strip():
            err = grype_error(proc.stderr) or f"exit {proc.returncode} and no error message"
            if GRYPE_DB_ERROR.search(err):
                raise ScannerUnavailable(f"grype vulnerability database not available: {err}")
            raise ScannerUnavailable(f"grype could not scan {image}: {err}")
        try:
            return parse_grype(json.loads(proc.stdout), image)
        except (json.JSONDecodeError, ValueError) as exc:
            raise ScannerUnavailable(f"grype answered with an unreadable report: {exc}") from None


def grype_error(stderr: str) -> str:
    """grype's ERROR log entries (with their indented detail lines), without colours or timestamps; when there is
    none, the end of what it printed."""
    entries: list[list[str]] = []  # a log entry starts with "[0003]"; detail lines follow it
    for line in (ANSI_ESCAPE.sub("", raw).strip() for raw in stderr.splitlines()):
        if line.startswith("[") or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    errors = [" ".join([m[1], *rest]) for first, *rest in entries if (m := GRYPE_ERROR_LINE.match(first))]
    text = "; ".join(errors) if errors else " ".join(line for entry in entries for line in entry)
    return " ".join(text.split())[-400:]
