"""The rollout lock's rules (rollbook.rollout_lock); the Lease itself is exercised on the sandbox
(tests/integration/test_rollout_lock_sandbox.py)."""

from __future__ import annotations

import datetime as dt

from rollbook.rollout_lock import LEASE_SECONDS, Holding, busy_error, lease_name, micro_time

NOW = dt.datetime(2026, 12, 3, 9, 0, 0, tzinfo=dt.UTC)


def test_who_may_take_the_lock() -> None:
    fresh = Holding("run-a/1", NOW - dt.timedelta(seconds=10), LEASE_SECONDS)
    assert not fresh.free_for("run-b/2", NOW)  # held and renewed 10 s ago
    assert fresh.free_for("run-a/1", NOW)  # its own (a retried acquisition)
    assert fresh.free_for("run-b/2", NOW + dt.timedelta(seconds=50))  # the holder stopped renewing: expired
    assert not fresh.free_for("run-b/2", NOW + dt.timedelta(seconds=49))
    assert Holding("", None, LEASE_SECONDS).free_for("run-b/2", NOW)  # released holder
    assert Holding("run-a/1", None, LEASE_SECONDS).free_for("run-b/2", NOW)  # never renewed: not a holding
    naive = Holding("run-a/1", dt.datetime(2026, 12, 3, 8, 59, 50), LEASE_SECONDS)  # read as UTC
    assert not naive.free_for("run-b/2", NOW)


def test_the_refusal_names_the_holder_the_time_left_and_the_command() -> None:
    holding = Holding("brave-fox/abc", NOW - dt.timedelta(seconds=15), LEASE_SECONDS)
    message = str(busy_error("shop", "web", holding, NOW))
    assert "another progressive rollout of 'web' in 'shop'" in message
    assert "Lease 'rollbook-rollout-web', holder 'brave-fox/abc'" in message and "nothing was changed" in message
    assert "frees itself in 45s" in message
    assert "`kubectl delete lease rollbook-rollout-web -n shop`" in message


def test_names_and_times() -> None:
    assert lease_name("shop-blue") == "rollbook-rollout-shop-blue"
    assert len(lease_name("r" * 53)) <= 253
    assert micro_time(NOW) == "2026-12-03T09:00:00.000000Z"
    assert dt.datetime.fromisoformat(micro_time(NOW)) == NOW
