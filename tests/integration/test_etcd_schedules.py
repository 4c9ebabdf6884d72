"""The scheduled backups as `rollbook serve` deploys them, read back through the Prefect API; runs started from
the etcd-snapshot deployment really snapshot the session sandbox, and an overlapping run is cancelled."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from etcd_helpers import keys, save_blocks, snapshot_request
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from sandbox.cluster import Sandbox

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"


def _deployment(name: str) -> object | None:
    with get_client(sync_client=True) as prefect:
        try:
            return prefect.read_deployment_by_name(f"{name}/{name}")
        except Exception:
            return None


def _wait_final(run_id: object, timeout: float = 180) -> StateType:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            state = prefect.read_flow_run(run_id).state  # type: ignore[arg-type]
            if state is not None and state.is_final():
                return state.type
            time.sleep(1)
    raise TimeoutError(f"flow run {run_id} did not finish")


def test_snapshot_and_retention_are_scheduled_exclusive_deployments_and_a_run_succeeds(
    sandbox: Sandbox, child_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint, bucket_block, bucket = save_blocks(sandbox, "sched")
    env = dict(child_env, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ROLLBOOK, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while not (_deployment("etcd-snapshot") and _deployment("backup-retention")):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        for name, cron in (("etcd-snapshot", "0 * * * *"), ("backup-retention", "30 3 * * *")):
            deployment = _deployment(name)
            schedules = [s.schedule.cron for s in deployment.schedules]  # type: ignore[attr-defined]
            assert schedules == [cron], (name, schedules)
            limit = deployment.global_concurrency_limit  # type: ignore[attr-defined]
            options = deployment.concurrency_options  # type: ignore[attr-defined]
            assert limit is not None and limit.limit == 1, (name, limit)
            assert options.collision_strategy == "CANCEL_NEW", (name, options)

        parameters = {"request": snapshot_request(sandbox, endpoint, bucket_block)}
        first = run_deployment("etcd-snapshot/etcd-snapshot", parameters=parameters, timeout=0)
        second = run_deployment("etcd-snapshot/etcd-snapshot", parameters=parameters, timeout=0)
        states = sorted([_wait_final(first.id), _wait_final(second.id)])
        assert states == sorted([StateType.COMPLETED, StateType.CANCELLED]), (states, log.read_text()[-3000:])
        assert len([k for k in keys(sandbox, bucket) if k.endswith(".db")]) == 1  # one run, not two
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
