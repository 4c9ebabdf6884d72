"""Markdown for the Helm runbooks (helm-rollback, helm-atomic-upgrade, helm-history): pure functions of the
flows' typed results and plain history rows, so every report is unit-tested without a cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from rollbook.helm_recovery import StuckRelease
from rollbook.helm_releases import ImageChange, RevisionInfo, ValueChange
from rollbook.helm_results import AtomicUpgradeResult, HelmHistoryResult, HelmRollbackResult, RehearsalResult


def _cell(text: str, limit: int = 120) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:limit]


def history_table(history: Iterable[RevisionInfo], *, deployed: int | None = None) -> str:
    """A release history as `helm history` prints it, oldest first; `deployed` marks the live revision."""
    rows = [
        "| revision | status | chart | app version | updated | description |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(history, key=lambda r: r.revision):
        updated = r.updated.strftime("%Y-%m-%d %H:%M:%S") if r.updated else ""
        mark = " ← deployed" if deployed == r.revision else ""
        rows.append(
            f"| {r.revision}{mark} | {r.status} | {r.chart} | {r.app_version} | {updated} | {_cell(r.description)} |"
        )
    return "\n".join(rows)


def changes_markdown(values: list[ValueChange], images: list[ImageChange], manifest: list[str] | None = None) -> str:
    """The 'what would change' part of plans and approval forms."""
    parts = []
    if images:
        parts.append("**Images**\n")
        parts.extend(f"- `{c.workload}`: {', '.join(c.before) or '-'} → {', '.join(c.after) or '-'}" for c in images)
    else:
        parts.append("**Images**: unchanged")
    if values:
        parts.append("\n**Values**\n")
        parts.extend(f"- `{c.path}` ({c.change}): `{c.before!r}` → `{c.after!r}`" for c in values)
    else:
        parts.append("\n**Values**: unchanged")
    if manifest:
        parts.append("\n**Manifest diff**\n\n```diff\n" + "\n".join(manifest) + "\n```")
    return "\n".join(parts)


def titled(title: str, body: str, comment: str | None = None) -> str:
    """`# title`, an optional quoted comment (an approver's), then the body: the shape of every artifact."""
    note = f"_{comment}_\n\n" if comment else ""
    return f"# {title}\n\n{note}{body}"


def stuck_markdown(stuck: StuckRelease, now: dt.datetime, *, then: str) -> str:
    """The evidence of a release stuck pending, and what happens (or can happen) about it."""
    return "\n".join(["### Release stuck in a pending state", "", f"- {stuck.evidence(now)}", f"- {then}"])


def rollback_plan(
    result: HelmRollbackResult,
    history: list[RevisionInfo],
    *,
    how: str,
    timeout_seconds: int,
    requested_by: str,
    reason: str,
    stuck_note: str = "",
) -> str:
    """The plan and approval form of helm-rollback."""
    lines = [
        f"## Roll back `{result.release}` in `{result.namespace}`",
        "",
        f"- from live revision **{result.from_revision}** (chart `{result.from_chart}`)",
        f"- to revision **{result.to_revision}** (chart `{result.to_chart}`), {how}",
        f"- helm rollback with `--wait`, timeout {timeout_seconds}s",
        f"- requested by **{requested_by}**: {reason}",
    ]
    if result.schema_guard:
        lines.append(f"- schema guard: {result.schema_guard}")
    if stuck_note:
        lines += ["", stuck_note]
    lines += ["", changes_markdown(result.value_changes, result.image_changes), "", "### History", ""]
    return "\n".join([*lines, history_table(history)])


def rollback_summary(result: HelmRollbackResult, annotations: dict[str, str]) -> str:
    healthy = result.outcome in ("changed", "unchanged") and bool(result.pods_ready) and result.status == "deployed"
    verb = {"changed": "Rollback succeeded", "unchanged": "Rollback already applied"}.get(result.outcome, "Rollback")
    problems = f" ({'; '.join(result.pod_problems)})" if result.pod_problems else ""
    lines = [
        f"# {verb if healthy else 'Rollback NOT HEALTHY'}: `{result.release}` in `{result.namespace}`",
        "",
        result.summary,
        "",
        f"- revision {result.from_revision} → {result.to_revision} (new revision {result.new_revision}, "
        f"status **{result.status}**)",
        f"- pods Ready: **{result.pods_ready}**{problems}",
        f"- annotated Deployments: {', '.join(result.annotated_deployments) or 'none'}",
    ]
    if result.recovered:
        lines.append(f"- recovered: revision {result.recovered.revision} ({result.recovered.status}) marked failed")
    lines += ["", "| annotation | value |", "|---|---|", *(f"| `{k}` | {v} |" for k, v in sorted(annotations.items()))]
    return "\n".join(lines)


def upgrade_plan(
    result: AtomicUpgradeResult,
    history: list[RevisionInfo],
    *,
    live: RevisionInfo | None,
    chart_source: str,
    app_version: str,
    timeout_seconds: int,
    requested_by: str,
    reason: str,
    manifest_diff: list[str],
    interrupted: StuckRelease | None = None,
    interrupted_wait: float = 0.0,
    now: dt.datetime | None = None,
) -> str:
    """The plan and approval form of helm-atomic-upgrade; an interrupted first install found (`interrupted`,
    its helm possibly at work for `interrupted_wait` more seconds) is said with its evidence and what is done."""
    start = f"revision **{live.revision}** ({live.status}, chart `{live.chart}`)" if live else "not installed"
    lines = [
        f"## Upgrade `{result.release}` in `{result.namespace}`",
        "",
        f"- from: {start}",
        f"- to: chart `{result.to_chart}` (app version {app_version or '-'}) from `{chart_source}`",
        f"- `--rollback-on-failure --wait --timeout {timeout_seconds}s`",
        f"- requested by **{requested_by}**: {reason}",
    ]
    if result.checklist:
        lines.append(f"- pre-deploy checklist: {result.checklist}")
    if interrupted is not None:
        when = (
            f"in about {interrupted_wait:.0f}s, once its helm (`--timeout {timeout_seconds}s`) has certainly given up"
            if interrupted_wait > 0
            else "now (its helm has certainly given up)"
        )
        evidence = interrupted.evidence(now or dt.datetime.now(dt.UTC))
        lines += [
            "",
            "### Interrupted first install",
            "",
            f"The first install of `{result.release}` never finished: {evidence}. It holds this request's chart and "
            f"values and serves nothing, so it is removed (`helm uninstall --wait`) {when}, then installed anew.",
        ]
    lines += ["", changes_markdown(result.value_changes, result.image_changes, manifest_diff)]
    if history:
        lines += ["", "### History", "", history_table(history)]
    return "\n".join(lines)


def upgrade_report(result: AtomicUpgradeResult) -> str:
    ok = bool(result.succeeded)
    title = (
        "Nothing to upgrade"
        if result.already_live
        else "Upgrade succeeded"
        if ok
        else "Upgrade FAILED and was rolled back"
    )
    lines = [
        f"# {title}: `{result.release}` in `{result.namespace}`",
        "",
        result.summary,
        "",
        f"- live revision: **{result.live_revision}** ({result.live_status})",
        f"- attempted revision: {result.attempted_revision}, took {result.seconds}s",
    ]
    if not ok:
        lines.append(f"- why: {', '.join(result.failure_reasons) or 'no pod waiting reason observed'}")
        lines += ["", "| pod | container | image | reason | message |", "|---|---|---|---|---|"]
        lines += [
            f"| {p.pod} | {p.container} | {p.image} | {p.reason} | {_cell(p.message, 300)} |"
            for p in result.pod_problems
        ]
        lines += ["", "helm error:", "", "```", result.helm_error, "```"]
    elif result.pod_report_problems:
        lines.append(f"- pods not Ready: {'; '.join(result.pod_report_problems)}")
    return "\n".join(lines)


def history_report(result: HelmHistoryResult) -> str:
    """helm-history's artifact: the table, which revision is deployed, and the evidence of a stuck release."""
    deployed = f"revision **{result.deployed}** is deployed" if result.deployed else "**no revision is deployed**"
    lines = [
        f"# History of `{result.release}` in `{result.namespace}`",
        "",
        f"{deployed}; {len(result.revisions)} stored",
    ]
    if result.stuck:
        then = f"`helm-rollback` with `request.recover_pending=true` clears it (Secret `{result.stuck.secret}`)"
        lines += ["", stuck_markdown(result.stuck, result.read_at, then=then)]
    return "\n".join([*lines, "", history_table(result.revisions, deployed=result.deployed)])


def rehearsal_plan(steps: list[str], result: RehearsalResult, *, requested_by: str, reason: str) -> str:
    """The rehearsal's plan and approval form: the steps it will run, in order."""
    lines = [
        f"## Rehearse a rollback of `{result.release}` in scratch namespace `{result.namespace}`: "
        f"{result.from_tag} → {result.to_tag} → rollback",
        "",
        f"- requested by **{requested_by}**: {reason}",
        "",
        *(f"{i}. {step}" for i, step in enumerate(steps, start=1)),
    ]
    return "\n".join(lines)


def rehearsal_report(result: RehearsalResult) -> str:
    lines = [
        f"# Rollback rehearsal {'PASSED' if result.passed else 'FAILED'}",
        "",
        f"`{result.release}` in scratch namespace `{result.namespace}`: {result.from_tag} → {result.to_tag} → "
        f"rollback, {result.total_seconds}s in total ({sum(s.seconds for s in result.steps):.3f}s in the steps)",
        "",
        "| step | result | seconds | detail |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.step} | {'ok' if s.ok else 'FAILED'} | {s.seconds} | {_cell(s.detail, 300)} |" for s in result.steps
    ]
    return "\n".join(lines)
