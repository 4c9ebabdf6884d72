"""Markdown for the progressive-delivery runbooks (canary-rollout, blue-green, blue-green-retire).

Pure functions of plain data: the flows gather facts and publish what these return, so a report can be read
and tested without a cluster. Rows are typed by Protocols (the flows pass their own pydantic models), which
keeps this package free of imports from `tasks/` and `flows/`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class CheckRow(Protocol):
    """One metric judged at one analysis (tasks' metric check result)."""

    @property
    def name(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def passed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


class HookRow(Protocol):
    """One webhook call and its answer."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


class HookConfig(Protocol):
    """A configured webhook: its name and the phase it is called at."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...


class StepRow(Protocol):
    """One analysis at one weight."""

    @property
    def weight(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def checks(self) -> Sequence[CheckRow]: ...
    @property
    def webhooks(self) -> Sequence[HookRow]: ...


class GateRow(Protocol):
    """A person's (or a timeout's) answer at a gate."""

    @property
    def gate(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def by(self) -> str: ...
    @property
    def reason(self) -> str: ...


class MetricRow(Protocol):
    """A metric check as configured."""

    @property
    def name(self) -> str: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def window(self) -> str: ...


def bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} … {high:g}"
    if low is not None:
        return f"≥ {low:g}"
    return f"≤ {high:g}" if high is not None else "any"


def _value(value: float | None) -> str:
    return "no data" if value is None or math.isnan(value) else f"{value:.2f}"


def analysis_table(steps: Sequence[StepRow]) -> str:
    """Every analysis: each metric's value against its range, and each step webhook's answer."""
    if not steps:
        return "_no analysis ran_"
    rows = ["| weight | analysis | metric | value | range | result |", "|---:|---:|---|---:|---|---|"]
    for step in steps:
        for c in step.checks:
            result = "pass" if c.passed else "FAIL: " + c.detail
            where = f"| {step.weight}% | {step.attempt} | {c.name} |"
            rows.append(f"{where} {_value(c.value)} | {bounds(c.min, c.max)} | {result} |")
        for w in step.webhooks:
            rows.append(
                f"| {step.weight}% | {step.attempt} | webhook {w.name} | | | {'pass' if w.passed else 'FAIL'} |"
            )
    return "\n".join(rows)


def gates_table(answers: Sequence[GateRow]) -> list[str]:
    if not answers:
        return []
    lines = ["", "## Approvals", "", "| gate | answer | by | reason |", "|---|---|---|---|"]
    return lines + [f"| {a.gate} | {a.action} | {a.by or '-'} | {a.reason or '-'} |" for a in answers]


def hooks_table(hooks: Sequence[HookRow]) -> list[str]:
    if not hooks:
        return []
    lines = ["", "## Webhooks", "", "| name | phase | result |", "|---|---|---|"]
    return lines + [f"| {w.name} | {w.type} | {'pass' if w.passed else 'FAIL: ' + w.detail} |" for w in hooks]


@dataclass(frozen=True)
class CanaryPlan:
    """What a canary run would do, as the flow found it (read-only) before changing anything."""

    namespace: str
    stable: str
    canary: str
    version: str
    router: str
    route_object: str
    current: int
    todo: Sequence[int]
    iterations: int
    interval_seconds: int
    threshold: int
    metrics: Sequence[MetricRow]
    webhooks: Sequence[HookConfig] = ()
    gates: Sequence[str] = ()
    on_approval_timeout: str = "revert"
    promote: bool = True
    checklist: str = "not run"
    reason: str = ""
    requested_by: str = ""
    schema_guard: str = ""  # the schema guard's verdict on the side a revert returns to, when configured


def canary_plan(plan: CanaryPlan) -> str:
    """The plan an approver reads and plan mode returns: every object the run would change, in order."""
    checks = ", ".join(f"{m.name} {bounds(m.min, m.max)} over {m.window}" for m in plan.metrics)
    weights = ", ".join(f"{w}%" for w in plan.todo)
    hooks = ", ".join(f"{h.name} ({h.type})" for h in plan.webhooks)
    route = (
        f"canary Ingress `{plan.route_object}` (nginx canary-weight annotation)"
        if plan.router == "nginx"
        else f"backend weights of HTTPRoute `{plan.route_object}`"
    )
    finish = (
        f"helm upgrade `{plan.stable}` to image {plan.version} with --wait; annotate its Deployments; "
        f"send all traffic back to `{plan.stable}` and remove the canary route; helm uninstall `{plan.canary}`"
        if plan.promote
        else f"leave `{plan.canary}` at the last weight (no promotion)"
    )
    return "\n".join(
        [
            f"## Canary `{plan.canary}` ({plan.version}) beside `{plan.stable}` in `{plan.namespace}`",
            "",
            f"- requested by **{plan.requested_by or '-'}**: {plan.reason or '-'}",
            f"- pre-deploy checklist: {plan.checklist}",
            *([f"- schema guard (the revert target): {plan.schema_guard}"] if plan.schema_guard else []),
            f"- traffic: {route}; weight served now: **{plan.current}%**; steps to run: **{weights or 'none'}**",
            f"- each step: {plan.iterations} passing analysis(es), every {plan.interval_seconds}s; "
            f"revert to `{plan.stable}` after {plan.threshold} failed analysis(es) in total",
            f"- checks: {checks}",
            f"- webhooks: {hooks or 'none'}",
            f"- gates: {', '.join(plan.gates) or 'none'}; no answer in time: {plan.on_approval_timeout}",
            f"- then: {finish}",
            "- every change is annotated `rollbook.dev/reason` and `rollbook.dev/requested-by`",
        ]
    )


def canary_report(
    title: str,
    *,
    steps: Sequence[StepRow],
    answers: Sequence[GateRow],
    hooks: Sequence[HookRow],
    plan: str,
) -> str:
    """The run's artifact, rewritten after every analysis: metrics per step, approvals, webhooks, the plan."""
    lines = [f"# {title}", "", "## Metrics per step", "", analysis_table(steps)]
    lines += gates_table(answers) + hooks_table(hooks)
    return "\n".join([*lines, "", "## Plan", "", plan])


@dataclass(frozen=True)
class BlueGreenPlan:
    """What a blue/green run would do, as the flow found it (read-only) before changing anything."""

    namespace: str
    blue: str
    blue_version: str
    green: str
    version: str
    chart: str
    install: bool
    router: str
    http_route: str | None
    blue_has_ingress: bool
    acceptance: Sequence[str]
    steps: Sequence[int]
    interval_seconds: int
    window_seconds: int
    threshold: int
    on_approval_timeout: str
    keep_blue_seconds: int
    green_values: Sequence[str] = field(default_factory=list)
    interrupted: str = ""  # evidence of an earlier run's unfinished green install, removed before installing
    checklist: str = "not run"
    reason: str = ""
    requested_by: str = ""
    schema_guard: str = ""  # the schema guard's verdict on the side a revert returns to, when configured


def blue_green_plan(plan: BlueGreenPlan) -> str:
    """Every object the run would change, in the order it changes them."""
    install = (
        f"helm install `{plan.green}` from `{plan.chart}` with --wait: blue's values, image tag {plan.version}, "
        "track=green, ingress.enabled=false" + (f", and {', '.join(plan.green_values)}" if plan.green_values else "")
        if plan.install
        else f"`{plan.green}` already runs {plan.version}: not installed again"
    )
    if plan.interrupted:
        install = (
            f"an earlier run's install of `{plan.green}` never finished ({plan.interrupted}): once its helm has "
            f"certainly given up, helm uninstall it (it serves no traffic), then {install}"
        )
    route = (
        f"HTTPRoute `{plan.http_route}` backend weights"
        if plan.router == "gateway-api"
        else f"canary Ingress `<{plan.blue} Ingress>-canary` (nginx canary-weight)"
    )
    moves = (
        [f"helm upgrade `{plan.green}` ingress.enabled=true, then `{plan.blue}` ingress.enabled=false"]
        if plan.blue_has_ingress
        else []
    )
    hand_over = "; ".join(
        [*moves, "the route sends to green only", f"label `{plan.green}` active and `{plan.blue}` retired"]
    )
    blue_end = (
        f"schedule a `blue-green-retire` run in {plan.keep_blue_seconds}s that uninstalls `{plan.blue}`"
        if plan.keep_blue_seconds
        else f"helm uninstall `{plan.blue}`"
    )
    return "\n".join(
        [
            f"## Blue/green `{plan.blue}` ({plan.blue_version}) → `{plan.green}` ({plan.version})"
            f" in `{plan.namespace}`",
            "",
            f"- requested by **{plan.requested_by or '-'}**: {plan.reason or '-'}",
            f"- pre-deploy checklist: {plan.checklist}",
            *([f"- schema guard (the revert target): {plan.schema_guard}"] if plan.schema_guard else []),
            f"1. {install}",
            f"2. green must have every pod Ready and pass: {', '.join(plan.acceptance) or 'no acceptance check'}",
            f"3. traffic by {route}: steps {list(plan.steps)}; checks every {plan.interval_seconds}s for "
            f"{plan.window_seconds}s per step; revert to blue after {plan.threshold} failed checks",
            f"4. approvals before 100% and before retiring blue; no answer in time: {plan.on_approval_timeout}",
            f"5. hand over: {hand_over}",
            f"6. blue: {blue_end}",
            "- every change is annotated `rollbook.dev/reason` and `rollbook.dev/requested-by`",
        ]
    )


def blue_green_report(title: str, *, blue: str, answers: Sequence[GateRow], plan: str) -> str:
    """The run's final artifact: what happened to blue, who approved, and the plan it followed."""
    lines = [f"# {title}", "", f"- blue: {blue}", *gates_table(answers)]
    return "\n".join([*lines, "", "## Plan", "", plan])


def retire_plan(*, namespace: str, release: str, objects: Sequence[str], reason: str, requested_by: str) -> str:
    """What `helm uninstall` of a retired blue release removes, object by object."""
    listed = [f"- `{o}`" for o in objects] or ["- (the release has no objects left)"]
    return "\n".join(
        [
            f"## Retire `{release}` in `{namespace}`",
            "",
            f"- requested by **{requested_by}**: {reason}",
            f"- helm uninstall `{release}` --wait removes {len(objects)} object(s):",
            "",
            *listed,
        ]
    )


def titled(title: str, body: str) -> str:
    """An artifact: a title over its body (a plan, a report)."""
    return f"# {title}\n\n{body}"


def not_approved(comment: str, plan: str) -> str:
    return titled("Not approved: nothing changed", f"_{comment or 'no comment'}_\n\n{plan}")


def gate_form(gate: str, *, serving: str, details: str) -> str:
    """What an approver reads at a traffic gate: what is served now and the evidence so far."""
    return f"## Gate: {gate}\n\n{serving}\n\n{details}"
