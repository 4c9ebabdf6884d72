"""The helm-rollback runbook on the sandbox: previous *good* revision, refusals, plan, approval, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from helm_helpers import (
    CONTROLS,
    CRASH_SET,
    DEPLOYMENT,
    helm_deploy,
    history,
    image,
    repo,
    resume,
    run_in_thread,
    target_fields,
    wait_paused,
)
from kubernetes import client
from pydantic import ValidationError

from blocks import KubernetesCluster
from flows.helm_rollback import HelmRollbackRequest, helm_rollback
from rollbook.helm_releases import RollbackRefused
from sandbox.cluster import Sandbox
from tasks.helm_changes import rollback_release
from tasks.helm_errors import HelmOperationFailed, ReleaseChanged, ReleaseNotFound


@pytest.fixture
def with_failed_revision(sandbox: Sandbox, namespace: str, demo_chart: Path) -> list[tuple[int, str]]:
    """1 (1.0.0), 2 (1.1.0), 3 failed (crash-looping 1.2.0, no rollback), 4 (1.2.0) live."""
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    assert not helm_deploy(sandbox, demo_chart, namespace, "1.2.0", "--set", CRASH_SET, wait="8s")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.2.0")
    before = history(sandbox, namespace)
    assert before == [(1, "superseded"), (2, "superseded"), (3, "failed"), (4, "deployed")]
    return before


def test_rollback_skips_failed_revision_and_audits(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    result = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60)), CONTROLS)

    assert (result.from_revision, result.to_revision, result.new_revision) == (4, 2, 5)
    assert result.outcome == "changed" and result.status == "deployed" and result.pods_ready
    assert history(sandbox, namespace)[-1] == (5, "deployed")
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
    deployment = apps.read_namespaced_deployment(DEPLOYMENT, namespace)
    annotations = deployment.metadata.annotations
    assert annotations["rollbook.dev/action"] == "helm-rollback"
    assert annotations["rollbook.dev/rolled-back-to-revision"] == "2"
    assert annotations["rollbook.dev/release"] == "demo"
    assert annotations["rollbook.dev/requested-by"] == "pytest"
    assert not any(k.startswith("rollbook.dev/") for k in deployment.spec.template.metadata.annotations or {})
    assert result.annotated_deployments == [DEPLOYMENT]


def test_bad_input_is_refused_and_changes_nothing(
    sandbox: Sandbox, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    def run(**extra: object) -> None:
        fields = target_fields(sandbox, namespace)
        fields.update(extra)
        helm_rollback(HelmRollbackRequest(**fields), CONTROLS)

    with pytest.raises(ReleaseNotFound, match="release 'nope' in namespace .*release not found"):
        run(release="nope")
    with pytest.raises(ReleaseNotFound, match="namespace 'no-such-ns-x1'.*namespace does not exist"):
        run(namespace="no-such-ns-x1")
    with pytest.raises(RollbackRefused, match="revision 99 is not in the release history.*nothing was changed"):
        run(revision=99)
    with pytest.raises(RollbackRefused, match="revision 4 is the live revision"):
        run(revision=4)
    with pytest.raises(RollbackRefused, match="revision 3 is failed"):
        run(revision=3)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        HelmRollbackRequest(**target_fields(sandbox, namespace, revision=-1))
    with pytest.raises(Exception, match="revision"):  # Prefect validates a raw dict parameter the same way
        helm_rollback(target_fields(sandbox, namespace, revision=-1), CONTROLS)  # type: ignore[arg-type]
    assert history(sandbox, namespace) == with_failed_revision


def test_plan_reports_and_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    controls = CONTROLS.model_copy(update={"plan": True})
    result = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace)), controls)

    assert result.outcome == "planned" and not result.changed
    assert (result.from_revision, result.to_revision) == (4, 2)
    assert result.from_chart == result.to_chart == "demo-app-0.1.0"
    tag = next(c for c in result.value_changes if c.path == "image.tag")
    assert (tag.before, tag.after) == ("1.2.0", "1.1.0")
    assert result.image_changes[0].after == [f"{repo(sandbox)}:1.1.0"]
    assert history(sandbox, namespace) == with_failed_revision
    assert image(apps, namespace) == f"{repo(sandbox)}:1.2.0"


def test_rejected_approval_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    request = HelmRollbackRequest(**target_fields(sandbox, namespace))
    thread, out = run_in_thread(lambda: helm_rollback(request, controls))
    run = wait_paused()
    assert history(sandbox, namespace) == with_failed_revision  # nothing happens while it waits
    resume(run.id, {"approved": False, "comment": "not now"})
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].outcome == "not-approved" and out["result"].approval == "not now"
    assert history(sandbox, namespace) == with_failed_revision
    assert image(apps, namespace) == f"{repo(sandbox)}:1.2.0"


def test_approval_timeout_changes_nothing(
    sandbox: Sandbox, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    controls = CONTROLS.model_copy(
        update={"require_approval": True, "approval_poll_seconds": 1, "approval_timeout_seconds": 10}
    )
    result = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace)), controls)
    assert result.outcome == "not-approved" and "timed out" in (result.approval or "")
    assert history(sandbox, namespace) == with_failed_revision


def test_rollback_task_is_safe_to_repeat(
    sandbox: Sandbox, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    """A retried attempt finds its own earlier rollback and stops; a stale plan is refused."""
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    helm = str(sandbox.bins / "helm")
    first = rollback_release(cluster, namespace, "demo", 2, 4, timeout_seconds=60, helm=helm)
    again = rollback_release(cluster, namespace, "demo", 2, 4, timeout_seconds=60, helm=helm)
    assert first.revision == again.revision == 5 and again.status == "deployed"
    with pytest.raises(ReleaseChanged, match="live revision is 5 .*expected 4"):
        rollback_release(cluster, namespace, "demo", 1, 4, timeout_seconds=60, helm=helm)
    assert len(history(sandbox, namespace)) == 5


def test_rollback_whose_wait_fails_is_reported_and_audited(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    """Revision 1 was 'deployed' without --wait although its pods crash; rolling back to it must fail loudly."""
    sandbox.helm(
        "install", "demo", str(demo_chart), "-n", namespace, "--set", f"image.repository={repo(sandbox)}",
        "--set", "image.tag=1.0.0", "--set", CRASH_SET,
    )  # fmt: skip
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0", "--set", "podLabels=null")
    assert history(sandbox, namespace) == [(1, "superseded"), (2, "deployed")]

    with pytest.raises(HelmOperationFailed, match="release 'demo' in namespace .*revision 1.*rollback failed"):
        helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=10)), CONTROLS)

    assert history(sandbox, namespace)[-1] == (3, "failed")
    annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
    assert annotations["rollbook.dev/rollback-result"] == "failed"
    assert annotations["rollbook.dev/rolled-back-to-revision"] == "1"
