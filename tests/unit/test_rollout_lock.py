"""The per-application rollout lock against the session's real Prefect server (no sandbox needed)."""

from __future__ import annotations

import threading
import uuid

import pytest

from rollbook.rollout_lock import RolloutBusy, lock_free, lock_name, rollout_lock


def test_lock_is_exclusive_across_runs_and_reentrant_within_one() -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    name = lock_name(ns, "shop")
    outcome: list[str] = []

    def other_run() -> None:  # a new thread starts with a fresh context, as another flow run would
        try:
            with rollout_lock(ns, "shop"):
                outcome.append("acquired")
        except RolloutBusy as exc:
            outcome.append(str(exc))

    with rollout_lock(ns, "shop") as held:
        assert held == name and not lock_free(name)
        with rollout_lock(ns, "shop"):  # a subflow of the holder passes through, taking no second slot
            assert not lock_free(name)
        assert not lock_free(name)  # leaving the nested block did not release the parent's slot
        thread = threading.Thread(target=other_run)
        thread.start()
        thread.join(60)
        with rollout_lock(ns, "cart"):  # another application is independent
            pass
    assert outcome and "another progressive rollout of 'shop'" in outcome[0] and "active-slots 0" in outcome[0]
    assert lock_free(name)  # released at the end of the outer block
    with rollout_lock(ns, "shop"):
        pass


def test_lock_is_released_when_the_block_fails() -> None:
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RuntimeError, match="boom"):
        with rollout_lock(ns, "shop"):
            raise RuntimeError("boom")
    assert lock_free(lock_name(ns, "shop"))
