"""Moved: the checklist's vocabulary (CheckResult, CheckPolicy, Waiver, decide...) is pure logic and lives in
`rollbook.checklist`; the report in `rollbook.reports.checklist`. Kept so code written against the old path
still imports; new code imports from rollbook.checklist."""

from rollbook.checklist import (
    CHECKS,
    CheckName,
    CheckPolicy,
    CheckResult,
    Outcome,
    Row,
    Status,
    Verdict,
    Waiver,
    decide,
    one_line,
)

__all__ = [
    "CHECKS",
    "CheckName",
    "CheckPolicy",
    "CheckResult",
    "Outcome",
    "Row",
    "Status",
    "Verdict",
    "Waiver",
    "decide",
    "one_line",
]
