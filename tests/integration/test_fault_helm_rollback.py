"""helm-rollback under faults on the sandbox (issue 16): the flow's process SIGKILLed, or the API server
restarted, right after it recorded its intent and handed over to helm, or at a seeded random moment.

Each trial (tests/integration/faults.py, fault_scenarios.HelmRollbackTrial) runs the flow in its own process and
runs the same request again when the first run failed. If the interrupted helm left the release pending, the
re-run must refuse naming `recover_pending`; one more run with it (the operator's answer) must converge. What
the cluster ends up as is checked every time: the good version live and deployed, one successful rollback in
the history, no revision left pending.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fault_scenarios import HelmRollbackTrial
from faults import Fault, FaultKind, random_fault, run_trial

from sandbox.cluster import Sandbox

DOWN_SECONDS = 5.0
SEED = 16


@pytest.mark.parametrize(
    ("kind", "at"),
    [("flow-kill", "after-write"), ("flow-kill", "random"), ("apiserver-restart", "after-write"),
     ("apiserver-restart", "random")],
)  # fmt: skip
def test_helm_rollback_converges_after_fault(
    sandbox: Sandbox, child_env: dict[str, str], tmp_path: Path, kind: FaultKind, at: str
) -> None:
    when = "after-write" if at == "after-write" else random_fault(kind, random.Random(f"{SEED}-{kind}")).at
    fault = Fault(kind, when, DOWN_SECONDS)
    scenario = HelmRollbackTrial(sandbox)
    try:
        record = run_trial(sandbox, scenario, fault=fault, env=child_env, log_dir=tmp_path)
        runs = [(r.ok, r.killed, (r.result or {}).get("outcome"), r.reason[:300]) for r in record.runs]
        detail = f"{fault.describe()} at {record.injected_at}s; runs {runs}; logs in {tmp_path}"
        if at == "after-write":
            assert record.injected_at is not None, detail
        assert record.violations == [] and record.final.ok, f"{record.violations}; {detail}"
    finally:
        scenario.cleanup()
