"""Judging a measured value against a check's range (rollbook.judging): no data is never a pass."""

from __future__ import annotations

import math

from rollbook.judging import NO_DATA, judge


def test_within_range_passes_and_bounds_are_inclusive() -> None:
    assert judge(99.5, minimum=99, maximum=None).passed
    assert judge(99.0, minimum=99, maximum=None).passed
    assert judge(500.0, minimum=None, maximum=500).passed
    assert judge(5.0, minimum=1, maximum=10).detail == "5.000 within range"


def test_outside_range_fails_with_the_bound_it_crossed() -> None:
    low = judge(97.5, minimum=99, maximum=None)
    assert not low.passed and low.detail == "97.500 is below min 99"
    high = judge(1400.0, minimum=None, maximum=500)
    assert not high.passed and high.detail == "1400.000 is above max 500"
    assert not judge(11.0, minimum=1, maximum=10).passed and not judge(0.5, minimum=1, maximum=10).passed


def test_no_data_and_nan_fail() -> None:
    for value in (None, math.nan):
        verdict = judge(value, minimum=99, maximum=None)
        assert not verdict.passed and verdict.detail == NO_DATA
    assert not judge(math.nan, minimum=None, maximum=500).passed
