"""The rollback-rehearsal drill on the sandbox: passes, cleans up, and never touches a foreign namespace."""

from __future__ import annotations

import uuid

import pytest
from helm_helpers import repo
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.rollback_rehearsal import RehearsalFailed, RollbackRehearsalRequest, rollback_rehearsal
from sandbox.cluster import Sandbox


def _request(sandbox: Sandbox, namespace: str, **extra: object) -> RollbackRehearsalRequest:
    return RollbackRehearsalRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        namespace=namespace,
        image_repository=repo(sandbox),
        timeout_seconds=60,
        helm_executable=str(sandbox.bins / "helm"),
        **extra,
    )


def test_rehearsal_passes_and_deletes_its_namespace(sandbox: Sandbox, core: client.CoreV1Api) -> None:
    scratch = f"rehearsal-{uuid.uuid4().hex[:6]}"
    report = rollback_rehearsal(_request(sandbox, scratch))

    assert report["passed"], report
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["verify 1.0.0 live again"]["ok"] and "Ready on" in steps["verify 1.0.0 live again"]["detail"]
    assert steps["roll back (helm-rollback runbook)"]["detail"].startswith("revision 2 -> 1")
    assert all(s["seconds"] >= 0 for s in report["steps"])
    try:
        phase = core.read_namespace(scratch).status.phase
    except ApiException as exc:
        assert exc.status == 404
    else:
        assert phase == "Terminating"


def test_rehearsal_refuses_a_namespace_it_did_not_create(
    sandbox: Sandbox, core: client.CoreV1Api, namespace: str
) -> None:
    with pytest.raises(RehearsalFailed, match="create scratch namespace.*not a rollback-rehearsal scratch namespace"):
        rollback_rehearsal(_request(sandbox, namespace))
    assert core.read_namespace(namespace).status.phase == "Active"  # the foreign namespace is untouched
