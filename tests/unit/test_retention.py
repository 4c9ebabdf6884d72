"""Retention rules as a pure function: tables for the rules, and randomized timelines for the guarantees.

hypothesis is not among the dev dependencies, so the property checks draw their timelines from a seeded
`random.Random` (3,000 timelines, reproducible: a failure prints its seed)."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pydantic import ValidationError

from rollbook.retention import RetentionRules, SnapshotRecord, plan_retention

T0 = dt.datetime(2026, 11, 30, 0, 0, tzinfo=dt.UTC)  # a Monday


def snap(hours: float, *, problem: str | None = None) -> SnapshotRecord:
    return SnapshotRecord(name=f"s{hours:07.2f}", taken_at=T0 + dt.timedelta(hours=hours), problem=problem)


def rules(**kwargs: int) -> RetentionRules:
    return RetentionRules.model_validate({"keep_last": 0, "hourly": 0, "daily": 0, "weekly": 0, **kwargs})


@pytest.mark.parametrize(
    ("hours", "given", "kept"),
    [
        # keep_last: the N newest
        ([0, 1, 2, 3], {"keep_last": 2}, {3, 2}),
        # hourly: the newest of each of the last N hours that have one (two in hour 5: the later one)
        ([0, 1, 5, 5.5, 6], {"hourly": 2}, {6, 5.5}),
        # daily: newest per day; days without snapshots do not count as slots
        ([1, 23, 25, 49, 200], {"daily": 3}, {200, 49, 25}),
        # weekly (ISO weeks, Monday first): newest per week
        ([0, 100, 170, 200, 400], {"weekly": 2}, {400, 200}),
        # all zeros still keeps the newest verified
        ([0, 1, 2], {}, {2}),
        # rules combine: a snapshot kept by any rule stays
        ([0, 1, 2, 26, 27], {"keep_last": 1, "daily": 2}, {27, 2}),
    ],
)
def test_rules_keep_the_newest_of_each_slot(hours: list[float], given: dict[str, int], kept: set[float]) -> None:
    plan = plan_retention([snap(h) for h in hours], rules(**given))
    assert set(plan.keep) == {snap(h).name for h in kept}
    assert set(plan.delete) == {snap(h).name for h in hours} - set(plan.keep)


def test_unverified_snapshots_are_kept_with_their_problem_and_fill_no_slot() -> None:
    snaps = [snap(0), snap(1), snap(2, problem="manifest missing"), snap(3, problem="manifest unreadable (etcd)")]
    plan = plan_retention(snaps, rules(keep_last=1))
    assert plan.keep == {snap(1).name: ["newest verified", "last 1"]}
    assert plan.delete == [snap(0).name]
    assert plan.unverified == {snap(3).name: "manifest unreadable (etcd)", snap(2).name: "manifest missing"}


def test_nothing_verified_deletes_nothing() -> None:
    plan = plan_retention([snap(0, problem="manifest missing")], rules(keep_last=5))
    assert plan.keep == {} and plan.delete == [] and list(plan.unverified) == [snap(0).name]


def test_time_zones_are_compared_in_utc() -> None:
    east = dt.timezone(dt.timedelta(hours=5))
    early = SnapshotRecord(name="a", taken_at=dt.datetime(2026, 12, 1, 4, 0, tzinfo=east))  # 23:00 UTC Nov 30
    late = SnapshotRecord(name="b", taken_at=dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC))
    plan = plan_retention([early, late], rules(daily=1))
    assert list(plan.keep) == ["a"] and plan.delete == ["b"]


@pytest.mark.parametrize("bad", [{"keep_last": -1}, {"daily": True}, {"weekly": "3"}, {"monthly": 2}])
def test_rules_refuse_bad_numbers(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetentionRules.model_validate(bad)


def _timeline(rng: random.Random) -> list[SnapshotRecord]:
    count = rng.randint(0, 60)
    spread = rng.choice([3, 48, 24 * 14, 24 * 90])
    snaps = []
    for index in range(count):
        problem = rng.choice([None] * 6 + ["manifest missing", "manifest unreadable"])
        moment = T0 + dt.timedelta(hours=rng.uniform(0, spread))
        snaps.append(SnapshotRecord(name=f"n{index:03d}", taken_at=moment, problem=problem))
    return snaps


def _rules(rng: random.Random) -> RetentionRules:
    return rules(**{k: rng.choice([0, 0, 1, 2, 3, 7, 24]) for k in ("keep_last", "hourly", "daily", "weekly")})


def test_random_timelines_never_lose_the_newest_verified_or_an_unverified_snapshot() -> None:
    for seed in range(3000):
        _check_timeline(seed)


def _check_timeline(seed: int) -> None:
    rng = random.Random(seed)
    snaps, given = _timeline(rng), _rules(rng)
    plan = plan_retention(snaps, given)
    verified = [s for s in snaps if s.verified]
    names = {s.name for s in snaps}
    # every snapshot gets exactly one fate
    assert set(plan.keep) | set(plan.delete) | set(plan.unverified) == names
    assert not (set(plan.keep) & set(plan.delete)) and not (set(plan.delete) & set(plan.unverified))
    if verified:
        newest = max(verified, key=lambda s: (s.taken_at, s.name))
        assert newest.name in plan.keep, f"seed {seed}: newest verified {newest.name} not kept"
    assert all(s.verified for s in snaps if s.name in plan.delete)
    assert len(plan.keep) <= 1 + given.keep_last + given.hourly + given.daily + given.weekly
    # applying the plan and planning again deletes nothing more
    survivors = [s for s in snaps if s.name not in plan.delete]
    assert plan_retention(survivors, given).delete == [], f"seed {seed}: a second pass deletes more"
