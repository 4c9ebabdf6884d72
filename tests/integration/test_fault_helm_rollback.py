"""helm-rollback under faults on the sandbox (issue 16): the flow's process SIGKILLed, or the API server
restarted, right after it recorded its intent and handed over to helm.

Each trial runs the flow in its own process (tests/integration/faults.py) and runs the same request again when
the first run failed. If the interrupted helm left the release pending, the re-run must refuse naming
`recover_pending`; one more run with it (the operator's answer) must converge. What the cluster ends up as is
checked every time: the good version live and deployed, one successful rollback in the history, no revision
left pending.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from faults import Fault, FaultKind, FlowProcess, TrialRecord, random_fault, run_trial
from helm_helpers import DEPLOYMENT, RELEASE, helm_deploy, image, repo, target_fields
from kubernetes import client

from rollbook.helm_releases import PENDING_STATUSES
from sandbox.cluster import Sandbox

DOWN_SECONDS = 5.0
SEED = 16
CONTROLS = {"reason": "fault trial of helm-rollback", "requested_by": "pytest-faults"}


def _history(sandbox: Sandbox, namespace: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(sandbox.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout)
    return rows


def _finish(sandbox: Sandbox, record: TrialRecord, params: dict[str, object], env: dict[str, str], logs: Path) -> None:
    """A re-run that refused a release left pending is answered the way its message says: recover_pending."""
    if record.final.ok or "recover_pending=true" not in record.final.reason:
        return
    request = {**params["request"], "recover_pending": True, "pending_grace_seconds": 0}  # type: ignore[dict-item]
    record.runs.append(FlowProcess("helm-rollback", {**params, "request": request}, env, logs).wait(300))


@pytest.mark.parametrize(
    ("kind", "at"),
    [("flow-kill", "after-write"), ("flow-kill", "random"), ("apiserver-restart", "after-write"),
     ("apiserver-restart", "random")],
)  # fmt: skip
def test_helm_rollback_converges_after_fault(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    namespace: str,
    demo_chart: Path,
    child_env: dict[str, str],
    tmp_path: Path,
    kind: FaultKind,
    at: str,
) -> None:

    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    params: dict[str, object] = {
        "request": target_fields(sandbox, namespace, timeout_seconds=60),
        "controls": CONTROLS,
    }

    def written() -> bool:  # the intent record, written right before helm runs
        annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations or {}
        return annotations.get("rollbook.dev/rollback-result") == "started"

    when = "after-write" if at == "after-write" else random_fault(kind, random.Random(f"{SEED}-{kind}")).at
    fault = Fault(kind, when, DOWN_SECONDS)
    record = run_trial(
        sandbox, flow="helm-rollback", params=params, fault=fault, env=child_env, log_dir=tmp_path, written=written
    )
    _finish(sandbox, record, params, child_env, tmp_path)

    rows = _history(sandbox, namespace)
    runs = [(r.ok, r.killed, (r.result or {}).get("outcome"), r.reason[:300]) for r in record.runs]
    detail = f"{fault.describe()} at {record.injected_at}s; runs {runs}; history {rows}; logs in {tmp_path}"
    if at == "after-write":
        assert record.injected_at is not None, detail
    assert record.final.ok, detail
    assert record.final.result is not None and record.final.result["outcome"] in ("changed", "unchanged"), detail
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0", detail
    assert rows[-1]["status"] == "deployed" and rows[-1]["description"] == "Rollback to 1", detail
    assert not [r for r in rows if r["status"] in PENDING_STATUSES], detail
    deployed_rollbacks = [r for r in rows if r["description"] == "Rollback to 1" and r["status"] != "failed"]
    assert len(deployed_rollbacks) == 1, detail  # rolled back once: never the undo of the undo
    annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
    assert annotations["rollbook.dev/rollback-result"] == "succeeded", detail
    print(
        f"TRIAL {fault.describe()} at {record.injected_at}s: {[(r.ok, r.killed, r.reason[:120]) for r in record.runs]}"
    )
