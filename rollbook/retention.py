"""Which snapshots to keep: keep-last, hourly, daily and weekly rules over a timeline of snapshots (pure).

Rules, as restic and borg apply them: `keep_last` keeps the N newest; `hourly`/`daily`/`weekly` keep the newest
snapshot of each of the N most recent hours/days/ISO weeks that have one. Only *verified* snapshots (a readable
manifest matching the object) fill these slots. Two guarantees hold whatever the rules say:

- the newest verified snapshot is always kept (a rule set of all zeros still keeps it);
- a snapshot whose manifest is missing or unreadable is never deleted: it is kept and listed with its problem,
  for a person to look at (it may be the only copy of something).

Applying the plan and planning again deletes nothing more (each kept snapshot is still the newest of its slot).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class RetentionRules(BaseModel):
    """How many snapshots each rule keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    keep_last: int = Field(default=3, ge=0, le=10_000, description="Keep the N newest verified snapshots.")
    hourly: int = Field(default=24, ge=0, le=10_000, description="Newest snapshot of each of the last N hours.")
    daily: int = Field(default=7, ge=0, le=10_000, description="Newest snapshot of each of the last N days (UTC).")
    weekly: int = Field(default=4, ge=0, le=10_000, description="Newest snapshot of each of the last N ISO weeks.")

    def describe(self) -> str:
        return f"keep last {self.keep_last}, hourly {self.hourly}, daily {self.daily}, weekly {self.weekly}"


class SnapshotRecord(BaseModel):
    """One snapshot as retention sees it: its name, when it was taken, and whether its manifest checks out."""

    model_config = ConfigDict(frozen=True)

    name: str
    taken_at: dt.datetime
    problem: str | None = Field(default=None, description="Why it is not verified (missing manifest...).")

    @property
    def verified(self) -> bool:
        return self.problem is None


class RetentionPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    rules: RetentionRules
    keep: dict[str, list[str]] = Field(description="Snapshot -> the reasons it is kept, newest first.")
    delete: list[str] = Field(description="Verified snapshots no rule keeps, newest first.")
    unverified: dict[str, str] = Field(description="Kept because they cannot be checked, with the problem.")


def _hour(t: dt.datetime) -> tuple[int, ...]:
    return (t.year, t.month, t.day, t.hour)


def _day(t: dt.datetime) -> tuple[int, ...]:
    return (t.year, t.month, t.day)


def _week(t: dt.datetime) -> tuple[int, ...]:
    year, week, _ = t.isocalendar()
    return (year, week)


_PERIODS: tuple[tuple[str, Callable[[dt.datetime], tuple[int, ...]]], ...] = (
    ("hourly", _hour),
    ("daily", _day),
    ("weekly", _week),
)


def plan_retention(snapshots: list[SnapshotRecord], rules: RetentionRules) -> RetentionPlan:
    """Decide for every snapshot: kept (with why), deleted, or kept because it cannot be verified."""
    ordered = sorted(snapshots, key=lambda s: (s.taken_at.astimezone(dt.UTC), s.name), reverse=True)
    verified = [s for s in ordered if s.verified]
    reasons: dict[str, list[str]] = {}
    if verified:
        reasons.setdefault(verified[0].name, []).append("newest verified")
    for index, snap in enumerate(verified[: rules.keep_last]):
        reasons.setdefault(snap.name, []).append(f"last {index + 1}")
    for rule, period_of in _PERIODS:
        limit = getattr(rules, rule)
        seen: list[tuple[int, ...]] = []
        for snap in verified:
            period = period_of(snap.taken_at.astimezone(dt.UTC))
            if period in seen:
                continue
            if len(seen) == limit:
                break
            seen.append(period)
            reasons.setdefault(snap.name, []).append(f"{rule} {len(seen)}")
    keep = {s.name: reasons[s.name] for s in verified if s.name in reasons}
    return RetentionPlan(
        rules=rules,
        keep=keep,
        delete=[s.name for s in verified if s.name not in keep],
        unverified={s.name: str(s.problem) for s in ordered if not s.verified},
    )
