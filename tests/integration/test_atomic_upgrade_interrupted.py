"""helm-atomic-upgrade after its first install was interrupted (issue 16), on the sandbox.

A worker killed mid-install (its helm with it) or an API server gone while helm installs leaves the release's
only revision `pending-install`; every later helm command refuses, and helm-rollback has nothing to roll back to.
A re-run of the same request must clear it by itself: it shows the evidence in its plan, waits until the
interrupted helm has certainly given up, removes the install under the rollout lock and installs anew. A pending
install of other values is refused with the command that clears it, and nothing changes.

The unit tests of the same rules, with helm faked, are tests/unit/test_interrupted_install_faked.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fault_scenarios import CHART, CONTROLS, _HelmTrial
from faults import Fault, FaultKind, FlowProcess, TrialRecord, run_trial
from helm_helpers import RELEASE, history, image, repo, target_fields
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from rollbook.change import ChangeControls
from rollbook.rollout_lock import lease_name
from sandbox.cluster import Sandbox

TIMEOUT = 30  # helm's --timeout: a re-run waits this (and the cleanup margin) out from when the install began


def first_install(sandbox: Sandbox, namespace: str, **extra: Any) -> dict[str, Any]:
    """A first install of demo 1.1.0 (nothing installed yet), without the checklist."""
    fields = target_fields(sandbox, namespace, chart=str(CHART), install=True, image_tag="1.1.0",
                           set_values={"image.repository": repo(sandbox)}, timeout_seconds=TIMEOUT,
                           run_checklist=False)  # fmt: skip
    fields["set_values"] = {**fields["set_values"], **extra}
    return fields


def interrupt_first_install(sandbox: Sandbox, namespace: str, request: dict[str, Any], env: dict[str, str],
                            log_dir: Path) -> None:  # fmt: skip
    """Run the flow in its own process while the demo image cannot be pulled (so helm waits on pods that never
    start), and SIGKILL it, helm included, once helm has stored revision 1 pending-install: a lost worker."""
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    run = FlowProcess("helm-atomic-upgrade", {"request": request, "controls": CONTROLS}, env, log_dir)
    try:
        deadline = time.monotonic() + 90
        while _history(sandbox, namespace) != [(1, "pending-install")]:
            assert time.monotonic() < deadline and run.running(), "the flow's helm never went pending-install"
            time.sleep(0.2)
        time.sleep(2)  # helm has created the objects and waits for pods that cannot start
        assert run.running(), "the install finished before it could be interrupted"
    finally:
        run.kill()
        sandbox.set_unreachable_registries([])
    client.CoreV1Api(sandbox.api_client()).delete_collection_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}"
    )


def _history(sandbox: Sandbox, namespace: str) -> list[tuple[int, str]]:
    proc = sandbox.helm("history", RELEASE, "-n", namespace, "-o", "json", check=False)
    return history(sandbox, namespace) if proc.returncode == 0 else []


def lock_free(sandbox: Sandbox, namespace: str) -> bool:
    try:
        client.CoordinationV1Api(sandbox.api_client()).read_namespaced_lease(lease_name(RELEASE), namespace)
    except ApiException as exc:
        return exc.status == 404
    return False


def test_rerun_clears_its_own_interrupted_first_install_and_installs_anew(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, child_env: dict[str, str], tmp_path: Path
) -> None:
    fields = first_install(sandbox, namespace)
    interrupt_first_install(sandbox, namespace, fields, child_env, tmp_path)
    assert _history(sandbox, namespace) == [(1, "pending-install")]
    began = time.monotonic()

    # other values than the interrupted install's: someone else's, refused with the command; nothing changes
    other = AtomicUpgradeRequest(**first_install(sandbox, namespace, replicas=3))
    with pytest.raises(ValueError, match=rf"other values than this request's.*`helm uninstall {RELEASE} -n "):
        atomic_upgrade(other, CONTROLS_OBJ)
    assert _history(sandbox, namespace) == [(1, "pending-install")]

    # the plan names what was found and what will be done; nothing changes
    plan = atomic_upgrade(AtomicUpgradeRequest(**fields), CONTROLS_OBJ.model_copy(update={"plan": True}))
    assert plan.outcome == "planned" and "stuck in pending-install at revision 1" in plan.interrupted_install
    assert _history(sandbox, namespace) == [(1, "pending-install")]

    # the same request again: waits out the killed helm's --timeout, removes the install, installs anew
    result = atomic_upgrade(AtomicUpgradeRequest(**fields), CONTROLS_OBJ)
    assert (result.outcome, result.succeeded, result.live_revision) == ("changed", True, 1), result.summary
    assert result.interrupted_install and result.pods_ready
    assert _history(sandbox, namespace) == [(1, "deployed")]  # installed once, nothing pending left
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
    assert apps.read_namespaced_deployment("demo-demo-app", namespace).spec.replicas == 2  # the chart's, not 3
    assert lock_free(sandbox, namespace)
    assert time.monotonic() - began < TIMEOUT + 30 + 120  # bounded: the wait, one uninstall, one install


CONTROLS_OBJ = ChangeControls(**CONTROLS)


class FirstInstallTrial(_HelmTrial):
    """No release yet; the first install of demo 1.1.0 must end deployed on 1.1.0, installed once, nothing
    pending, the lock free (the re-run after a failed or killed first run clears the interrupted install)."""

    flow = "helm-atomic-upgrade"

    def params(self) -> dict[str, Any]:
        return {"request": first_install(self.sandbox, self.namespace), "controls": CONTROLS}

    def written(self) -> bool:  # helm has stored revision 1 (pending-install)
        return len(self.helm_history(RELEASE)) >= 1

    def check(self, record: TrialRecord) -> list[str]:
        found = self.check_release(record, tag="1.1.0", last="rollbook helm-atomic-upgrade")
        if [r["revision"] for r in self.helm_history(RELEASE)] != [1]:
            found.append(f"history {self.helm_history(RELEASE)} is not one installed revision")
        if not lock_free(self.sandbox, self.namespace):
            found.append("the rollout lock is still held")
        return found


@pytest.mark.parametrize("kind", ["flow-kill", "apiserver-restart"])
def test_first_install_converges_after_fault(
    sandbox: Sandbox, child_env: dict[str, str], tmp_path: Path, kind: FaultKind
) -> None:
    fault = Fault(kind, "after-write", 5.0)
    scenario = FirstInstallTrial(sandbox)
    try:
        record = run_trial(sandbox, scenario, fault=fault, env=child_env, log_dir=tmp_path)
        runs = [(r.ok, r.killed, (r.result or {}).get("outcome"), r.reason[:300]) for r in record.runs]
        detail = f"{fault.describe()} at {record.injected_at}s; runs {runs}; logs in {tmp_path}"
        assert record.injected_at is not None, detail
        assert record.violations == [] and record.final.ok, f"{record.violations}; {detail}"
    finally:
        scenario.cleanup()
