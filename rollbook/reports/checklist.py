"""The pre-deploy checklist's report: a table artifact's rows, the markdown summary and the log lines.

Pure functions of the verdict, so what a reader sees is unit-tested without a flow run.
"""

from __future__ import annotations

from rollbook.checklist import Verdict

ICONS = {"ok": "✅", "warning": "⚠️", "blocking": "❌", "waived": "🟡", "skipped": "⏭️"}


def table_rows(verdict: Verdict) -> list[dict[str, str]]:
    return [
        {
            "check": r.check,
            "result": r.status,
            "policy": r.level,
            "outcome": r.outcome,
            "reason": r.reason,
            "waiver": r.waiver,
        }
        for r in verdict.rows
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(verdict: Verdict, title: str) -> str:
    lines = [f"## Pre-deploy checklist: {title}", "", f"**{verdict.summary}**", ""]
    lines += ["| | check | result | policy | reason | seconds |", "|---|---|---|---|---|---|"]
    for r in verdict.rows:
        lines.append(
            f"| {ICONS[r.outcome]} | {r.check} | {r.status} ({r.outcome}) | {r.level} "
            f"| {_cell(r.reason)} | {r.seconds} |"
        )
    if verdict.waivers:
        lines += ["", "### Waivers", ""]
        for w in verdict.waivers:
            state = "active" if w["active"] else "**expired (ignored)**"
            by = f", approved by {w['approved_by']}" if w.get("approved_by") else ""
            lines.append(f"- `{w['check']}` {state} until {w['expires']}{by}: {_cell(w['reason'])}")
    return "\n".join(lines) + "\n"


def log_lines(verdict: Verdict) -> list[str]:
    """One line per check and the verdict last, as the flow logs them."""
    lines = [f"{r.check}: {r.status} ({r.outcome}) {r.reason}" for r in verdict.rows]
    return [*lines, f"verdict: {verdict.summary}"]
