"""The migration-failure runbook's rules (pure): what the database is to go back to, and whether it may.

The run records what it found on the Deployment (`RECORD_ANNOTATION`: the heads at failure and the downgrade
target) when it pauses, so a re-run after a crash reuses them instead of computing "the previous head" again
from a database it already downgraded (which would walk one more migration back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollbook.change import ANNOTATION_PREFIX
from rollbook.schema_compat import SchemaState, SchemaVerdict, judge

RECORD_ANNOTATION = ANNOTATION_PREFIX + "migration-failure"


@dataclass(frozen=True)
class FailureRecord:
    """The schema at failure and where it goes back to ('' when no downgrade was chosen)."""

    failed_heads: tuple[str, ...]
    downgrade_to: str

    def dumps(self) -> str:
        return json.dumps({"failed_heads": list(self.failed_heads), "downgrade_to": self.downgrade_to})


def read_record(annotations: Mapping[str, str], heads_now: tuple[str, ...]) -> FailureRecord | None:
    """The record a previous run left, if it still describes this database: its heads are the failed ones or the
    downgrade target (anything else is an older incident's, ignored). Malformed: None."""
    raw = annotations.get(RECORD_ANNOTATION)
    if not raw:
        return None
    try:
        data: Any = json.loads(raw)
        record = FailureRecord(
            failed_heads=tuple(str(h) for h in data["failed_heads"]), downgrade_to=str(data["downgrade_to"])
        )
    except (ValueError, KeyError, TypeError):
        return None
    if set(heads_now) == set(record.failed_heads) or (record.downgrade_to and heads_now == (record.downgrade_to,)):
        return record
    return None


@dataclass(frozen=True)
class DowngradePlan:
    """What step 3 does: `todo` (SQL to run), `done` (already there), `refused` or `skipped` (reason)."""

    status: str
    reason: str
    start: str = ""
    target: str = ""


def plan_downgrade(
    *,
    wanted: bool,
    heads_now: tuple[str, ...],
    failed_heads: tuple[str, ...],
    target: tuple[str, ...],
    app_verdict: SchemaVerdict | None,
) -> DowngradePlan:
    """Decide step 3 before any SQL is written. The app the rollback restores must declare the target schema
    (a downgrade under code that cannot read it only moves the outage); one head at a time."""
    if not wanted:
        return DowngradePlan("skipped", "downgrade=false: the schema stays at " + (", ".join(heads_now) or "none"))
    if len(target) == 1 and heads_now == target:
        return DowngradePlan("done", f"the database is at {target[0]} already", target=target[0])
    if not failed_heads:
        return DowngradePlan("refused", "the database records no Alembic revision: there is nothing to reverse")
    if len(heads_now) != 1:
        return DowngradePlan(
            "refused", f"the database has {len(heads_now)} heads ({', '.join(heads_now)}): downgrade one at a time"
        )
    if len(target) != 1:
        shown = ", ".join(target) or "base"
        return DowngradePlan(
            "refused", f"the previous schema is not one revision ({shown}): give downgrade_to explicitly"
        )
    if app_verdict is not None and app_verdict.verdict != "compatible":
        return DowngradePlan(
            "refused",
            f"the revision rolled back to does not declare schema {target[0]} ({app_verdict.line()}): "
            "downgrading would break the code now running",
        )
    return DowngradePlan(
        "todo", f"alembic downgrade {heads_now[0]} -> {target[0]}", start=heads_now[0], target=target[0]
    )


def judge_target(declared: str | None, target: str, parents: Mapping[str, tuple[str, ...]] | None) -> SchemaVerdict:
    """Whether code declaring `declared` reads the schema at `target` (the guard's own rules)."""
    return judge(declared, SchemaState(kind="alembic", current=(target,), parents=parents))
