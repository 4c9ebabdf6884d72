"""Judging a measured value against a check's range: pure, so every rule is unit-tested without a metrics server.

No data (None: an empty answer; NaN: e.g. a ratio with no requests in the window) is a failed check, never a
pass: a canary that received no traffic has proven nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NO_DATA = "no data (no traffic reached the version in the window?)"


@dataclass(frozen=True)
class Judgement:
    passed: bool
    detail: str


def judge(value: float | None, *, minimum: float | None, maximum: float | None) -> Judgement:
    """Pass when `value` is a number within [minimum, maximum] (either bound may be absent)."""
    if value is None or math.isnan(value):
        return Judgement(False, NO_DATA)
    if minimum is not None and value < minimum:
        return Judgement(False, f"{value:.3f} is below min {minimum}")
    if maximum is not None and value > maximum:
        return Judgement(False, f"{value:.3f} is above max {maximum}")
    return Judgement(True, f"{value:.3f} within range")
