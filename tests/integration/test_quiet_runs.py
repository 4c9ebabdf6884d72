"""Quiet, honest runs: a first install behind the pre-deploy checklist logs no ERROR, has no failed task, and no
check warns that its timeout cannot interrupt it (the checks run concurrently, bounded by their calls' own
timeouts: tasks.policies.bounded_by_calls)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from helm_helpers import CONTROLS, repo, target_fields
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterLevel,
    LogFilterTimestamp,
)
from prefect.client.schemas.objects import StateType

from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries

WORKER_THREAD_WARNING = "Timeouts in worker threads cannot interrupt"


def test_first_install_behind_the_checklist_is_quiet(sandbox: Sandbox, namespace: str, demo_chart: Path) -> None:
    started = dt.datetime.now(dt.UTC)
    checklist = {
        "cosign_public_key": str(SandboxRegistries(sandbox.cfg, sandbox.bins).public_key),
        "policy": {"downgrade": ["vulnerabilities"]},  # no scanner database here: the scan may only warn
    }
    request = AtomicUpgradeRequest(
        **target_fields(
            sandbox,
            namespace,
            chart=str(demo_chart),
            install=True,
            image_tag="1.0.0",
            values={"image": {"repository": repo(sandbox)}},
            run_checklist=True,
            checklist=checklist,
            timeout_seconds=60,
        )
    )
    result = atomic_upgrade(request, CONTROLS)
    assert result.outcome == "changed" and result.succeeded

    with get_client(sync_client=True) as client:
        since = LogFilterTimestamp(after_=started)
        noisy = client.read_logs(log_filter=LogFilter(level=LogFilterLevel(ge_=30), timestamp=since))
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)))
        assert {r.name for r in runs} and len(runs) >= 2, "the upgrade and its checklist subflow"
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [r.id for r in runs]}))
    errors = [log.message for log in noisy if log.level >= 40]
    assert errors == []
    assert [log.message for log in noisy if WORKER_THREAD_WARNING in log.message] == []
    failed = [t.name for t in tasks if t.state_type in (StateType.FAILED, StateType.CRASHED)]
    assert failed == []
    assert any(t.name.startswith("release_history") and t.state_type == StateType.COMPLETED for t in tasks)
