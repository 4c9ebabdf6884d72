"""The pre-deploy checklist's vocabulary: one structured result per check, a policy, waivers and the verdict.

Pure logic (no cluster, no Prefect), so every rule here is unit-tested directly (the report is rendered by
rollbook/reports/checklist.py):
- a check answers pass / warn / fail / error with a one-line reason and its evidence;
- every check blocks the deploy on a bad answer ("required") unless the policy explicitly downgrades it to a
  warning or skips it;
- a waiver (reason + expiry) turns one check's bad answer into an accepted one until it expires;
  an expired waiver is ignored and shown as expired, so it can never silently keep a gate open.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollbook.form_rules import form_rules_schema, rule

CheckName = Literal[
    "cluster-health",
    "current-release",
    "image-signature",
    "vulnerabilities",
    "image-details",
    "chart",
    "capacity",
    "db-migration",
]
CHECKS: tuple[CheckName, ...] = get_args(CheckName)


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"  # the check itself could not answer (tool missing, API unreachable...)


class CheckResult(BaseModel):
    """What one check found."""

    model_config = ConfigDict(frozen=True)

    check: str
    status: Status
    reason: str = Field(description="One line a human reads first.")
    evidence: dict[str, Any] = Field(default_factory=dict, description="What the reason is based on.")
    seconds: float = 0.0


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Waiver(BaseModel):
    """Accept a check's bad result for a while, with a reason everyone can read in the report."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    check: CheckName
    reason: str = Field(min_length=3, max_length=300)
    # not strict: from a form or JSON the time arrives as ISO 8601 text
    expires: dt.datetime = Field(strict=False, description="UTC time after which the waiver no longer applies.")
    approved_by: str = Field(default="", max_length=100)

    def active(self, now: dt.datetime) -> bool:
        expires = self.expires if self.expires.tzinfo else self.expires.replace(tzinfo=dt.UTC)
        return now < expires


class CheckPolicy(BaseModel):
    """Every check blocks the deploy when it fails or cannot answer; weakening that is an explicit choice.

    There is no list of required checks to choose from: a form that shows "required" as a selection would make
    choosing one check silently turn the others into warnings. Instead each weakening is named: `downgrade`
    (a bad answer only warns) and `skip` (not run), both empty by default, shown in the report; a temporary
    acceptance of one failure is a `Waiver` (reason and expiry).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        rule(
            f"{check} listed in both downgrade and skip; choose one",
            {
                "not": {
                    "required": ["downgrade", "skip"],
                    "properties": {"downgrade": {"contains": {"const": check}}, "skip": {"contains": {"const": check}}},
                }
            },
        )
        for check in CHECKS
    )

    downgrade: list[CheckName] = Field(
        default=[],
        description="Checks whose fail or error only warns. Every check not listed here (or skipped) blocks the "
        "deploy; a check that is not configured, like db-migration without a provider, answers warn, which "
        "never blocks.",
    )
    skip: list[CheckName] = Field(default=[], description="Checks not run at all (shown as skipped).")
    scanner_unavailable: Literal["warn", "fail"] = Field(
        default="warn", description="What a vulnerability scan that could not run (no scanner, no database) counts as."
    )

    @model_validator(mode="after")
    def _one_level_per_check(self) -> Self:
        both = sorted(set(self.downgrade) & set(self.skip))
        if both:
            raise ValueError(f"policy: {', '.join(both)} listed in both downgrade and skip; choose one")
        return self

    @property
    def required(self) -> list[str]:
        """The checks that block: all of them but the downgraded and skipped ones."""
        return [c for c in CHECKS if c not in self.downgrade and c not in self.skip]

    def level(self, check: str) -> Literal["required", "warn", "skip"]:
        if check in self.skip:
            return "skip"
        if check in self.downgrade:
            return "warn"
        return "required"


Outcome = Literal["ok", "warning", "blocking", "waived", "skipped"]


class Row(BaseModel):
    """A check's result as the report shows it: what the policy and waivers make of it."""

    check: str
    status: str
    level: str
    outcome: Outcome
    reason: str
    waiver: str = ""
    seconds: float = 0.0


class Verdict(BaseModel):
    ready: bool
    summary: str
    rows: list[Row]
    results: list[CheckResult]
    waivers: list[dict[str, Any]]


def _waiver_text(waiver: Waiver, active: bool) -> str:
    who = f" by {waiver.approved_by}" if waiver.approved_by else ""
    state = "until" if active else "EXPIRED at"
    return f"waived{who} {state} {waiver.expires.isoformat()}: {waiver.reason}"


def _outcome(status: Status, level: str, *, waived: bool) -> Outcome:
    """What the policy and an active waiver make of one check's status."""
    bad = status in (Status.FAIL, Status.ERROR)
    if level == "skip":
        return "skipped"
    if not bad:
        return "warning" if status == Status.WARN else "ok"
    if waived:
        return "waived"
    return "blocking" if level == "required" else "warning"


def _summary(rows: list[Row], cause: str) -> str:
    blocking = [r.check for r in rows if r.outcome == "blocking"]
    if blocking:
        lead = f"NOT READY: {cause}; " if cause else "NOT READY: "
        return f"{lead}required check(s) failed: {', '.join(blocking)}"
    warnings = [r.check for r in rows if r.outcome == "warning"]
    waived = [r.check for r in rows if r.outcome == "waived"]
    summary = "READY to deploy"
    if warnings:
        summary += f" (warnings: {', '.join(warnings)})"
    if waived:
        summary += f" (waived: {', '.join(waived)})"
    return summary


def decide(
    results: list[CheckResult],
    policy: CheckPolicy,
    waivers: list[Waiver],
    now: dt.datetime | None = None,
    *,
    cause: str = "",
) -> Verdict:
    """The overall verdict: ready unless a required check failed or errored without an active waiver.

    `cause` is one problem behind several answers (the API server cannot be reached): a blocked verdict names it
    first, so the reader does not have to find it in every row."""
    now = now or dt.datetime.now(dt.UTC)
    by_check = {w.check: w for w in waivers}
    rows: list[Row] = []
    for result in results:
        level = policy.level(result.check)
        waiver = by_check.get(result.check)  # type: ignore[call-overload]
        active = bool(waiver and waiver.active(now))
        rows.append(
            Row(
                check=result.check,
                status=result.status.value,
                level=level,
                outcome=_outcome(result.status, level, waived=active),
                reason=result.reason,
                waiver=_waiver_text(waiver, active) if waiver else "",
                seconds=round(result.seconds, 2),
            )
        )
    return Verdict(
        ready=not any(r.outcome == "blocking" for r in rows),
        summary=_summary(rows, cause),
        rows=rows,
        results=results,
        waivers=[{**w.model_dump(mode="json"), "active": w.active(now)} for w in waivers],
    )
