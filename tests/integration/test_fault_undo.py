"""deployment-undo under faults on the sandbox: the API server restarting mid-run, the flow's process killed.

Each trial runs the flow in its own process (tests/integration/faults.py), injects one fault, runs the same
request again if the first run did not succeed, and checks what the cluster ends up as: rolled back exactly
once, onto the good version, rolled out; a re-run finishes the job instead of undoing it.
benchmarks/fault_campaign.py runs many more trials of the same kinds.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fault_scenarios import UndoTrial
from faults import Fault, FaultKind, random_fault, run_trial

from sandbox.cluster import Sandbox

SEED = 16


# Shorter than the campaign's 8 s outage, to keep the suite quick; benchmarks/fault_campaign.py also runs the
# etcd-restart fault and many more random moments.
DOWN_SECONDS = 5.0


def _fault(kind: FaultKind, at: str) -> Fault:
    if at == "after-write":
        return Fault(kind, "after-write", DOWN_SECONDS)
    return Fault(kind, random_fault(kind, random.Random(f"{SEED}-{kind}")).at, DOWN_SECONDS)


@pytest.mark.parametrize(
    ("kind", "at"),
    [
        ("apiserver-restart", "after-write"),
        ("apiserver-restart", "random"),
        ("flow-kill", "after-write"),
        ("flow-kill", "random"),
    ],
)
def test_undo_converges_after_fault(
    sandbox: Sandbox, child_env: dict[str, str], tmp_path: Path, kind: FaultKind, at: str
) -> None:
    fault = _fault(kind, at)
    scenario = UndoTrial(sandbox)
    record = run_trial(sandbox, scenario, fault=fault, env=child_env, log_dir=tmp_path)
    try:
        runs = [(r.ok, r.killed, (r.result or {}).get("outcome"), r.reason[:300]) for r in record.runs]
        detail = f"{fault.describe()} injected at {record.injected_at}s; runs {runs}; logs in {tmp_path}"
        assert record.violations == [], detail
        assert record.final.ok, detail
        if kind == "flow-kill" and record.injected_at is not None and at == "after-write":
            # killed after its write: the re-run must find the rollback applied and only finish the wait
            assert len(record.runs) == 2 and record.final.result is not None, detail
            assert record.final.result["outcome"] == "unchanged", detail
            assert "already applied by run" in record.final.result["summary"], detail
        if kind != "flow-kill" and at == "after-write" and record.injected_at is not None:
            # the outage hits the rollout wait, which rides it out within its deadline: no re-run needed
            assert len(record.runs) == 1 and record.final.result is not None, detail
            assert record.final.result["outcome"] == "changed", detail
    finally:
        scenario.cleanup()
