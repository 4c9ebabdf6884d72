"""expand-contract's typed result and its markdown: the phase before and after, each step with its evidence
(the SQL it ran or would run, rows copied, what the observe window saw, the approval)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult
from rollbook.expand_contract import Phase, Step

StepStatus = Literal["done", "skipped", "planned", "stopped", "refused", "failed"]


class StepRecord(BaseModel):
    step: Step
    status: StepStatus
    detail: str = ""
    sql: str = Field(default="", description="The SQL this step ran or, in a plan, would run.")
    seconds: float = 0.0


class ExpandContractResult(ChangeResult):
    database: str = Field(description="host:port/database (never the password).")
    script_location: str
    phase_before: Phase
    phase_after: Phase
    phase_detail: str = ""
    heads_before: list[str] = []
    heads_after: list[str] = []
    steps: list[StepRecord] = []
    backfill_batches: int = 0
    backfilled_rows: int = 0
    remaining: int | None = None
    deploy: dict[str, Any] | None = None
    finished: bool = Field(default=False, description="Contract is applied: nothing is left to do.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def result_markdown(result: ExpandContractResult, title: str = "expand-contract") -> str:
    lines = [
        f"# {title}: {result.outcome}",
        "",
        result.summary,
        "",
        "| | |",
        "|---|---|",
        f"| database | {_cell(result.database)} |",
        f"| scripts | {_cell(result.script_location)} |",
        f"| phase | {result.phase_before} → {result.phase_after} |",
        f"| heads | {', '.join(result.heads_before) or 'none'} → {', '.join(result.heads_after) or 'none'} |",
        f"| backfill | {result.backfilled_rows} row(s) in {result.backfill_batches} batch(es), "
        f"{'?' if result.remaining is None else result.remaining} left |",
    ]
    if result.approval:
        lines.append(f"| approval | {_cell(result.approval)} |")
    lines += ["", "## Steps", "", "| step | status | evidence | seconds |", "|---|---|---|---|"]
    lines += [f"| {s.step} | {s.status} | {_cell(s.detail)} | {s.seconds:.2f} |" for s in result.steps]
    for record in result.steps:
        if record.sql:
            verb = "would run" if record.status == "planned" else "ran"
            lines += ["", f"### {record.step}: SQL it {verb}", "", "```sql", record.sql, "```"]
    return "\n".join(lines)
