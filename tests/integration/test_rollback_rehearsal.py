"""The rollback-rehearsal drill on the sandbox: passes with honest timings, cleans up, honours plan and
approval, and never touches a foreign namespace."""

from __future__ import annotations

import time
import uuid

import pytest
from helm_helpers import repo, resume, run_in_thread, wait_paused
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.rollback_rehearsal import RehearsalFailed, RollbackRehearsalRequest, rollback_rehearsal
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox

CONTROLS = ChangeControls(reason="rehearsal test", requested_by="pytest-rehearsal")


def _request(sandbox: Sandbox, namespace: str, **extra: object) -> RollbackRehearsalRequest:
    return RollbackRehearsalRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        namespace=namespace,
        image_repository=repo(sandbox),
        timeout_seconds=60,
        helm_executable=str(sandbox.bins / "helm"),
        **extra,
    )


def _gone_or_terminating(core: client.CoreV1Api, name: str) -> bool:
    try:
        return bool(core.read_namespace(name).status.phase == "Terminating")
    except ApiException as exc:
        return exc.status == 404


def test_rehearsal_passes_with_real_timings_and_deletes_its_namespace(sandbox: Sandbox, core: client.CoreV1Api) -> None:
    scratch = f"rehearsal-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    report = rollback_rehearsal(_request(sandbox, scratch), CONTROLS)
    wall = time.monotonic() - started

    assert report.passed and report.outcome == "changed", report
    steps = {s.step: s for s in report.steps}
    assert list(steps) == [
        "create scratch namespace",
        "deploy 1.0.0",
        "verify 1.0.0 live",
        "upgrade to 1.1.0",
        "verify 1.1.0 live",
        "roll back (helm-rollback runbook)",
        "verify 1.0.0 live again",
        "delete scratch namespace",
    ]
    assert steps["verify 1.0.0 live again"].ok and "Ready on" in steps["verify 1.0.0 live again"].detail
    assert steps["roll back (helm-rollback runbook)"].detail.startswith("revision 2 -> 1")
    # the timed report against real bounds: every phase took time, the phases fit in the drill's total, and
    # the total fits in the wall time this test measured around the whole run
    assert all(s.seconds > 0 for s in report.steps), report.steps
    assert sum(s.seconds for s in report.steps) <= report.total_seconds + 0.001 * len(report.steps)
    assert report.total_seconds <= wall
    assert _gone_or_terminating(core, scratch)


def test_plan_lists_the_steps_and_creates_nothing(sandbox: Sandbox, core: client.CoreV1Api) -> None:
    scratch = f"rehearsal-plan-{uuid.uuid4().hex[:6]}"
    result = rollback_rehearsal(_request(sandbox, scratch), CONTROLS.model_copy(update={"plan": True}))
    assert result.outcome == "planned" and not result.steps and not result.passed
    assert scratch not in [ns.metadata.name for ns in core.list_namespace().items]


def test_rejected_approval_creates_nothing(sandbox: Sandbox, core: client.CoreV1Api) -> None:
    scratch = f"rehearsal-ask-{uuid.uuid4().hex[:6]}"
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: rollback_rehearsal(_request(sandbox, scratch), controls))
    run = wait_paused()
    assert scratch not in [ns.metadata.name for ns in core.list_namespace().items]
    resume(run.id, {"approved": False, "approver": "pytest", "comment": "not during the freeze"})
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].outcome == "not-approved" and out["result"].approval == "not during the freeze"
    assert scratch not in [ns.metadata.name for ns in core.list_namespace().items]


def test_approved_drill_records_who_asked_on_what_it_deploys(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    scratch = f"rehearsal-ok-{uuid.uuid4().hex[:6]}"
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: rollback_rehearsal(_request(sandbox, scratch, keep=True), controls))
    run = wait_paused()
    resume(run.id, {"approved": True, "approver": "pytest", "comment": "go"})
    thread.join(300)
    assert "error" not in out, out.get("error")
    assert out["result"].passed and out["result"].approval == "go"
    annotations = apps.read_namespaced_deployment("rehearsal-demo-app", scratch).metadata.annotations
    assert annotations["rollbook.dev/action"] == "helm-rollback"
    assert annotations["rollbook.dev/reason"] == "rehearsal test"
    assert annotations["rollbook.dev/requested-by"] == "pytest-rehearsal"
    core.delete_namespace(scratch)


def test_rehearsal_refuses_a_namespace_it_did_not_create(
    sandbox: Sandbox, core: client.CoreV1Api, namespace: str
) -> None:
    with pytest.raises(RehearsalFailed, match="create scratch namespace.*not a rollback-rehearsal scratch namespace"):
        rollback_rehearsal(_request(sandbox, namespace), CONTROLS)
    assert core.read_namespace(namespace).status.phase == "Active"  # the foreign namespace is untouched
