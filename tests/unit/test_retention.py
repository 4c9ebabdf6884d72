"""Retention rules as a pure function: tables for the rules, and property-based timelines for the guarantees.

The properties are the promises of rollbook/retention.py, checked with hypothesis on generated timelines
(snapshot times in several time zones, some with a missing or unreadable manifest, rules including zeros): the
newest verified snapshot is never deleted; an unverified snapshot is never deleted and is listed with its
problem; what is kept is exactly what the rules ask for; the plan does not depend on input order, and applying
it then planning again deletes nothing more. hypothesis shrinks a failure to a small timeline and prints it."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rollbook.retention import RetentionPlan, RetentionRules, SnapshotRecord, plan_retention

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


# A few hundred timelines per property keeps the file at a few seconds; no deadline (CI machines are busy).
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ZONES = [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
PROBLEMS = ["manifest missing", "manifest unreadable (not JSON)", "manifest unreadable (other cluster)"]


@st.composite
def timelines(draw: st.DrawFn) -> list[SnapshotRecord]:
    """Up to 40 snapshots over 3 hours to 120 days (a dense burst or months of dailies), some at the same
    instant, each stored with a time zone of its own; about one in four has a manifest problem."""
    span_minutes = draw(st.sampled_from([180, 2 * 24 * 60, 14 * 24 * 60, 120 * 24 * 60]))
    count = draw(st.integers(min_value=0, max_value=40))
    snaps = []
    for index in range(count):
        minute = draw(st.integers(min_value=0, max_value=span_minutes))
        zone = draw(st.sampled_from(ZONES))
        problem = draw(st.one_of(st.none(), st.none(), st.none(), st.sampled_from(PROBLEMS)))
        moment = (T0 + dt.timedelta(minutes=minute)).astimezone(zone)
        snaps.append(SnapshotRecord(name=f"n{index:03d}", taken_at=moment, problem=problem))
    return snaps


def _count() -> st.SearchStrategy[int]:
    return st.one_of(st.just(0), st.integers(min_value=0, max_value=30))


retention_rules = st.builds(RetentionRules, keep_last=_count(), hourly=_count(), daily=_count(), weekly=_count())


def _utc(snap: SnapshotRecord) -> dt.datetime:
    return snap.taken_at.astimezone(dt.UTC)


def _newest_first(snaps: list[SnapshotRecord]) -> list[SnapshotRecord]:
    """Newest first; snapshots taken at the same instant in name order (reversed), as retention orders them."""
    return sorted(snaps, key=lambda s: (_utc(s), s.name), reverse=True)


PERIODS: dict[str, Callable[[dt.datetime], object]] = {
    "hourly": lambda t: (t.date(), t.hour),
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
}


def _required(snaps: list[SnapshotRecord], given_rules: RetentionRules) -> set[str]:
    """What the rules ask to keep, computed independently: the newest verified, the keep_last newest, and for
    each period rule the newest snapshot of each of the N most recent periods that have a verified one."""
    verified = _newest_first([s for s in snaps if s.verified])
    required = {s.name for s in verified[: max(1, given_rules.keep_last)]}
    for rule, period_of in PERIODS.items():
        newest_of: dict[object, SnapshotRecord] = {}
        for snap in verified:
            newest_of.setdefault(period_of(_utc(snap)), snap)
        recent = sorted(newest_of, key=lambda p: _utc(newest_of[p]), reverse=True)[: getattr(given_rules, rule)]
        required |= {newest_of[p].name for p in recent}
    return required


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules)
def test_every_snapshot_gets_exactly_one_fate(snaps: list[SnapshotRecord], given_rules: RetentionRules) -> None:
    plan = plan_retention(snaps, given_rules)
    fates = [*plan.keep, *plan.delete, *plan.unverified]
    assert sorted(fates) == sorted(s.name for s in snaps)


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules)
def test_the_newest_verified_snapshot_is_never_deleted(
    snaps: list[SnapshotRecord], given_rules: RetentionRules
) -> None:
    plan = plan_retention(snaps, given_rules)
    verified = [s for s in snaps if s.verified]
    if not verified:
        assert plan.keep == {} and plan.delete == []
        return
    newest = max(_utc(s) for s in verified)
    kept_newest = [s.name for s in verified if _utc(s) == newest and s.name in plan.keep]
    assert kept_newest, f"no snapshot of the newest verified instant {newest} is kept: {plan.delete}"
    assert "newest verified" in plan.keep[_newest_first(verified)[0].name]


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules)
def test_an_unverified_snapshot_is_never_deleted_and_is_listed_with_its_problem(
    snaps: list[SnapshotRecord], given_rules: RetentionRules
) -> None:
    plan = plan_retention(snaps, given_rules)
    unverified = {s.name: s.problem for s in snaps if not s.verified}
    assert plan.unverified == unverified  # every one listed, with the problem it has, and nothing else
    assert not set(unverified) & set(plan.delete)
    assert not set(unverified) & set(plan.keep)  # kept for a person, never counted as filling a rule's slot


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules)
def test_what_is_kept_is_exactly_what_the_rules_ask_for(
    snaps: list[SnapshotRecord], given_rules: RetentionRules
) -> None:
    plan = plan_retention(snaps, given_rules)
    verified = [s for s in snaps if s.verified]
    if verified:
        assert set(plan.keep) == _required(snaps, given_rules)
    # each rule keeps as many as it asks for, or every period there is when there are fewer
    for rule, period_of in PERIODS.items():
        periods = {period_of(_utc(s)) for s in verified}
        slots = [r for reasons in plan.keep.values() for r in reasons if r.split()[0] == rule]
        assert len(slots) == min(getattr(given_rules, rule), len(periods))
        kept_periods = {
            period_of(_utc(s)) for s in verified if any(r.split()[0] == rule for r in plan.keep.get(s.name, []))
        }
        assert len(kept_periods) == len(slots)  # one per period, never two of the same hour/day/week
    lasts = [r for reasons in plan.keep.values() for r in reasons if r.startswith("last ")]
    assert len(lasts) == min(given_rules.keep_last, len(verified))


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules, order=st.randoms(use_true_random=False))
def test_the_plan_is_deterministic_whatever_the_listing_order(
    snaps: list[SnapshotRecord], given_rules: RetentionRules, order: random.Random
) -> None:
    before = list(snaps)
    plan = plan_retention(snaps, given_rules)
    assert snaps == before  # the listing it was given is not reordered or changed
    shuffled = list(snaps)
    order.shuffle(shuffled)
    assert plan_retention(shuffled, given_rules) == plan == plan_retention(snaps, given_rules)


@PROPERTY
@given(snaps=timelines(), given_rules=retention_rules)
def test_applying_the_plan_then_planning_again_deletes_nothing_more(
    snaps: list[SnapshotRecord], given_rules: RetentionRules
) -> None:
    plan = plan_retention(snaps, given_rules)
    survivors = [s for s in snaps if s.name not in plan.delete]
    again: RetentionPlan = plan_retention(survivors, given_rules)
    assert again.delete == []
    assert again.keep == plan.keep and again.unverified == plan.unverified  # same slots, same reasons
