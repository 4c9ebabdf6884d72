"""Vulnerability scanners, in the plug-in shape: the `Scanner` Protocol (base.py), the `ScannerKind` Literal a
request's `scanner` field uses, and the registry of implementations, one module each (grype.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from rollbook.plugins import lookup, registry
from tasks.scanners.base import (
    SEVERITIES,
    Finding,
    Scanner,
    ScannerUnavailable,
    ScanReport,
    severity_ok,
    severity_rank,
)
from tasks.scanners.grype import GrypeScanner

ScannerKind = Literal["grype"]


def _grype(executable: str | None) -> Scanner:
    return GrypeScanner(executable)


SCANNERS: dict[str, Callable[[str | None], Scanner]] = registry(ScannerKind, {"grype": _grype})


def make_scanner(kind: str, *, executable: str | None = None) -> Scanner:
    """The scanner of `kind`, running `executable` (default: the implementation's own way of finding it)."""
    return lookup(SCANNERS, kind, concern="vulnerability scanner")(executable)


__all__ = [
    "SCANNERS",
    "SEVERITIES",
    "Finding",
    "GrypeScanner",
    "ScanReport",
    "Scanner",
    "ScannerKind",
    "ScannerUnavailable",
    "make_scanner",
    "severity_ok",
    "severity_rank",
]
