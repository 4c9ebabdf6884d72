"""Shared helpers for the Helm runbook tests (not fixtures: the lead owns conftest.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import DEMO_REPOSITORY

RELEASE = "demo"
DEPLOYMENT = "demo-demo-app"
CONTROLS = ChangeControls(reason="integration test of the helm runbooks", requested_by="pytest")
CRASH_SET = f"podLabels.{FAULT_LABEL.replace('.', chr(92) + '.')}=CrashLoopBackOff"


def repo(sandbox: Sandbox) -> str:
    return f"{sandbox.cfg.registry_host()}/{DEMO_REPOSITORY}"


def target_fields(sandbox: Sandbox, namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "release": RELEASE,
        "helm_executable": str(sandbox.bins / "helm"),
        **extra,
    }


def helm_deploy(sandbox: Sandbox, chart: Path, namespace: str, tag: str, *extra: str, wait: str = "60s") -> bool:
    """helm upgrade --install without rollback-on-failure; True if it succeeded."""
    proc = sandbox.helm(
        "upgrade", RELEASE, str(chart), "--install", "-n", namespace,
        "--set", f"image.repository={repo(sandbox)}", "--set", f"image.tag={tag}",
        "--wait", f"--timeout={wait}", *extra,
        check=False,
    )  # fmt: skip
    return proc.returncode == 0


def history(sandbox: Sandbox, namespace: str) -> list[tuple[int, str]]:
    rows = json.loads(sandbox.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout)
    return [(r["revision"], r["status"]) for r in rows]


def image(apps: client.AppsV1Api, namespace: str) -> str:
    return str(apps.read_namespaced_deployment(DEPLOYMENT, namespace).spec.template.spec.containers[0].image)


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def wait_paused(timeout: float = 60) -> Any:
    """The one paused flow run of this test session's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            runs = prefect.read_flow_runs(flow_run_filter=paused)
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise TimeoutError("no paused flow run appeared")


def resume(run_id: Any, run_input: dict[str, Any]) -> None:
    """resume_flow_run, retrying the documented race where the input schema is saved just after pausing."""
    from prefect.flow_runs import resume_flow_run

    for _ in range(20):
        try:
            resume_flow_run(run_id, run_input=run_input)
            return
        except RuntimeError as exc:
            if "schema not found" not in str(exc).lower():
                raise
            time.sleep(0.5)
    raise TimeoutError("could not resume the paused run")
