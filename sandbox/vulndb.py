"""The sandbox's own grype vulnerability database: made-up advisories for the scan-demo images, no network needed.

grype cannot reach its database download server from here, and a scan without a database is no scan. So the
sandbox writes a real schema-v6 database with grype's own writer (sandbox/grypedb, built by the toolchain at the
grype pin) holding only the advisories below, and installs it with `grype db import` into its work directory.
grype refuses a database built more than 5 days ago (`db.max-allowed-built-age`), so it is rewritten when it is
older than a day, instead of switching grype's age check off.

The advisories are invented and named SANDBOX-*; they affect `rollbook-scan-demo` (sandbox/registry.py):
1.0.0 has a Critical and a Medium one, 1.1.0 only the Medium one, 2.0.0 none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sandbox.registry import SCAN_DEMO_PACKAGE

PROVIDER = "rollbook-sandbox"
CRITICAL_ADVISORY = "SANDBOX-2026-0001"
MEDIUM_ADVISORY = "SANDBOX-2026-0002"
ADVISORIES: tuple[dict[str, str], ...] = (
    {
        "id": CRITICAL_ADVISORY,
        "severity": "critical",
        "description": "Made-up sandbox advisory: rollbook-scan-demo before 1.1.0 (not a real vulnerability).",
        "affected": "< 1.1.0",
        "fixed": "1.1.0",
    },
    {
        "id": MEDIUM_ADVISORY,
        "severity": "medium",
        "description": "Made-up sandbox advisory: rollbook-scan-demo before 2.0.0 (not a real vulnerability).",
        "affected": "< 2.0.0",
        "fixed": "2.0.0",
    },
)
REFRESH_AFTER_SECONDS = 24 * 3600  # well inside grype's 5-day maximum age
TOOL_TIMEOUT = 300  # a first `grype db import` also creates the indexes; seconds on an idle machine


class VulnDbError(RuntimeError):
    """Writing or importing the sandbox's database failed; the message names the command and its error output."""


def advisories_document() -> dict[str, object]:
    """The input of sandbox/grypedb: one affected Python package per advisory."""
    return {
        "provider": PROVIDER,
        "advisories": [
            {**a, "ecosystem": "python", "package": SCAN_DEMO_PACKAGE, "version_type": "python"} for a in ADVISORIES
        ],
    }


def grype_env(db_root: Path) -> dict[str, str]:
    """grype's own settings for an offline scan with this database: no download attempt, no update check."""
    return {
        "GRYPE_DB_CACHE_DIR": str(db_root),
        "GRYPE_DB_AUTO_UPDATE": "false",
        "GRYPE_CHECK_FOR_APP_UPDATE": "false",
    }


def ensure_db(db_root: Path, scanner_bins: Path) -> Path:
    """Write and import the database unless a fresh one with the same advisories is installed; returns db_root
    (grype's GRYPE_DB_CACHE_DIR: the database itself lands in db_root/6/)."""
    wanted = json.dumps(advisories_document(), indent=2, sort_keys=True)
    stamp = db_root / "advisories.json"
    if _fresh(db_root, stamp, wanted):
        return db_root
    db_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=db_root, prefix="write-") as tmp:
        source = Path(tmp) / "advisories.json"
        source.write_text(wanted)
        _run([str(scanner_bins / "grypedb"), "-advisories", str(source), "-out", tmp], {})
        _run([str(scanner_bins / "grype"), "db", "import", str(Path(tmp) / "vulnerability.db")], grype_env(db_root))
    stamp.write_text(wanted)  # written last: an interrupted refresh is redone next time
    return db_root


def _fresh(db_root: Path, stamp: Path, wanted: str) -> bool:
    if not stamp.exists() or not (db_root / "6" / "vulnerability.db").exists():
        return False
    return stamp.read_text() == wanted and time.time() - stamp.stat().st_mtime < REFRESH_AFTER_SECONDS


def _run(argv: list[str], env: dict[str, str]) -> None:
    name = Path(argv[0]).name
    if shutil.which(argv[0]) is None:
        raise VulnDbError(f"{name} not found at {argv[0]}: build it with `python -m sandbox.toolchain {name}`")
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise VulnDbError(f"{name} {' '.join(argv[1:3])} timed out after {TOOL_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise VulnDbError(f"{name} {' '.join(argv[1:3])} failed: {proc.stderr.strip()[-800:]}")
