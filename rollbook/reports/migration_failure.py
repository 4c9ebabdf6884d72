"""migration-failure's typed result and its markdown: each of the runbook's steps with its status and evidence,
and the database evidence (version table, locks held and waited for, aborted sessions, the pods' errors)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult

Step = Literal["pause", "rollback", "downgrade"]
StepStatus = Literal["done", "already", "planned", "skipped", "refused"]


class StepRecord(BaseModel):
    step: Step
    status: StepStatus
    detail: str = ""
    sql: str = Field(default="", description="The downgrade SQL run or, in a plan, that would run.")


class MigrationFailureResult(ChangeResult):
    namespace: str
    deployment: str
    database: str = Field(description="host:port/database (never the password).")
    heads_before: list[str] = []
    heads_after: list[str] = []
    rollback_to_revision: int | None = None
    downgrade_to: str = ""
    steps: list[StepRecord] = []
    undo: dict[str, Any] | None = Field(default=None, description="The deployment-undo sub-flow's result.")
    evidence: dict[str, Any] = Field(default={}, description="The database as found, before any change.")
    evidence_after: dict[str, Any] | None = None
    pod_errors: dict[str, list[str]] = {}
    candidates: list[dict[str, Any]] = []


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _evidence(title: str, evidence: dict[str, Any]) -> list[str]:
    lines = [f"## {title}", "", f"- database: {_cell(evidence.get('where', '?'))}"]
    lines.append(f"- version table: {', '.join(evidence.get('versions') or []) or 'no rows'}")
    lines += [f"- {_cell(note)}" for note in evidence.get("notes") or []]
    locks = evidence.get("locks") or []
    lines += ["", f"### Locks held and waited for ({len(locks)})", ""]
    if locks:
        lines += ["| pid | lock | mode | granted | relation | state | waits on | xact s | query |", "|" + "---|" * 9]
        for lock in locks:
            waits = ":".join(x for x in (lock.get("wait_event_type"), lock.get("wait_event")) if x)
            lines.append(
                f"| {lock.get('pid')} | {lock.get('locktype')} | {lock.get('mode')} | {lock.get('granted')} | "
                f"{_cell(lock.get('relation', ''))} | {_cell(lock.get('state', ''))} | {_cell(waits)} | "
                f"{lock.get('xact_seconds', '')} | {_cell(lock.get('query', ''))} |"
            )
    aborted = evidence.get("aborted") or []
    lines += ["", f"### Sessions in an aborted transaction ({len(aborted)})", ""]
    lines += [
        f"- pid {a.get('pid')} ({_cell(a.get('application_name', ''))}): {_cell(a.get('query', ''))}" for a in aborted
    ]
    return [*lines, ""]


def result_markdown(result: MigrationFailureResult) -> str:
    lines = [
        f"# migration-failure: {result.outcome}",
        "",
        result.summary,
        "",
        "| | |",
        "|---|---|",
        f"| deployment | {_cell(result.namespace)}/{_cell(result.deployment)} |",
        f"| database | {_cell(result.database)} |",
        f"| heads | {', '.join(result.heads_before) or 'none'} → {', '.join(result.heads_after) or 'none'} |",
        f"| rollback to | {result.rollback_to_revision if result.rollback_to_revision is not None else '-'} |",
        f"| downgrade to | {_cell(result.downgrade_to or '-')} |",
    ]
    if result.approval:
        lines.append(f"| approval | {_cell(result.approval)} |")
    lines += ["", "## Steps", "", "| step | status | detail |", "|---|---|---|"]
    lines += [f"| {s.step} | {s.status} | {_cell(s.detail)} |" for s in result.steps]
    for step in result.steps:
        if step.sql:
            lines += ["", f"### {step.step} SQL", "", "```sql", step.sql, "```"]
    if result.candidates:
        lines += ["", "## Revisions considered", "", "| revision | evidence | schema | chosen |", "|---|---|---|---|"]
        for row in result.candidates:
            lines.append(
                f"| {row.get('revision')} | {_cell(row.get('evidence', ''))} | {_cell(row.get('schema', ''))} | "
                f"{'yes' if row.get('chosen') else ''} |"
            )
    lines += ["", "## Recent errors (the Deployment's pods)", ""]
    lines += [f"- {_cell(pod)}: {_cell('; '.join(why))}" for pod, why in result.pod_errors.items()] or [
        "- none reported"
    ]
    lines += ["", *_evidence("Database evidence at the start", result.evidence)]
    if result.evidence_after is not None:
        lines += _evidence("Database evidence at the end", result.evidence_after)
    return "\n".join(lines)
