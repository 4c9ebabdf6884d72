"""What every vulnerability scanner answers: a `ScanReport` of findings, or `ScannerUnavailable` with why.

The checklist's policy, not the scanner, decides what an unavailable scan counts as (no binary, no or stale
vulnerability database, image unreachable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

SEVERITIES = ("negligible", "low", "medium", "high", "critical")


class ScannerUnavailable(RuntimeError):
    """The scanner could not produce a report (binary, database or image not available)."""


class Finding(BaseModel):
    id: str
    severity: str
    package: str
    version: str
    fixed_in: list[str] = Field(default_factory=list)


class ScanReport(BaseModel):
    image: str
    scanner: str
    findings: list[Finding]
    database: dict[str, Any] = Field(default_factory=dict)

    def at_or_above(self, threshold: str) -> list[Finding]:
        """Findings whose severity is `threshold` or worse; Unknown severities are never counted as above."""
        floor = severity_rank(threshold)
        return [f for f in self.findings if severity_rank(f.severity) >= floor]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            key = f.severity.lower()
            out[key] = out.get(key, 0) + 1
        return out


def severity_rank(severity: str) -> int:
    """0 (negligible) .. 4 (critical); -1 for Unknown or anything unrecognised."""
    try:
        return SEVERITIES.index(severity.strip().lower())
    except ValueError:
        return -1


class Scanner(Protocol):
    """Scans one image reference (pulled from its registry, no container runtime needed); with `sbom`, the same
    scan also writes the image's SBOM (CycloneDX JSON) to that path (a scanner that cannot leaves it absent)."""

    name: str

    def scan(self, image: str, sbom: Path | None = None) -> ScanReport: ...


def severity_ok(value: str) -> str:
    """A severity threshold as the checklist request takes it (validated, lower-case)."""
    if severity_rank(value) < 0:
        raise ValueError("severity threshold must be one of negligible, low, medium, high, critical")
    return value.lower()
