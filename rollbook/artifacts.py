"""Naming for Prefect artifacts, so every runbook's reports are found under predictable keys."""

from __future__ import annotations

import re


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    key = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)
    return key[:100].strip("-") or "rollbook"
