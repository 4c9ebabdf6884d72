"""The helm-rollback runbook on the sandbox: previous *good* revision, refusals, plan, approval, audit."""

from __future__ import annotations

import subprocess
import threading
import time
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
from flows.helm_rollback import HelmRollbackRequest, ReleaseStuck, helm_rollback
from rollbook.helm_releases import HelmRollbackRefused
from sandbox.cluster import Sandbox
from tasks.helm_changes import rollback_release
from tasks.helm_errors import HelmOperationFailed, ReleaseBusy, ReleaseChanged, ReleaseNotFound
from tasks.release_workloads import annotate_release_deployments


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
    with pytest.raises(HelmRollbackRefused, match="revision 99 is not in the release history.*nothing was changed"):
        run(revision=99)
    with pytest.raises(HelmRollbackRefused, match="revision 4 is the live revision"):
        run(revision=4)
    with pytest.raises(HelmRollbackRefused, match="revision 3 is failed"):
        run(revision=3)
    with pytest.raises(ValidationError, match="revision must be at least 1"):
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
    resume(run.id, {"approved": False, "approver": "pytest", "comment": "not now"})
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


def _interrupt_rollback(sandbox: Sandbox, core: client.CoreV1Api, namespace: str, revision: int) -> None:
    """Leave the release as a killed helm does: `helm rollback --wait` SIGKILLed while its new pods cannot pull
    their image, so helm never writes the end of its rollback; then the registry heals and the stuck pods go."""
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    argv = [str(sandbox.bins / "helm"), f"--kubeconfig={sandbox.cfg.kubeconfig}", "rollback", "demo", str(revision),
            "-n", namespace, "--wait", "--timeout=120s"]  # fmt: skip
    helm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while history(sandbox, namespace)[-1][1] != "pending-rollback":
            assert time.monotonic() < deadline and helm.poll() is None, "helm never went pending-rollback"
            time.sleep(0.2)
        time.sleep(2)  # helm has applied the target's manifests and is waiting for pods that cannot start
        assert helm.poll() is None, "helm finished before it could be interrupted"
    finally:
        helm.kill()
        helm.wait(30)
        sandbox.set_unreachable_registries([])
    core.delete_collection_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=demo")


def test_interrupted_rollback_is_refused_then_recovered_with_approval(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    demo_chart: Path,
    with_failed_revision: list[tuple[int, str]],
) -> None:
    _interrupt_rollback(sandbox, core, namespace, 2)
    stuck = history(sandbox, namespace)
    assert stuck == [*with_failed_revision, (5, "pending-rollback")]
    # helm refuses every upgrade now (its rollback would leave revision 5 pending in the history for good)
    refused = sandbox.helm("upgrade", "demo", str(demo_chart), "-n", namespace, "--reuse-values", check=False)
    assert refused.returncode != 0 and "another operation" in refused.stderr

    # a retry of the interrupted rollback task itself names the way out instead of "the release changed"
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    with pytest.raises(ReleaseBusy, match="earlier attempt left revision 5 pending-rollback.*recover_pending=true"):
        rollback_release(cluster, namespace, "demo", 2, 4, timeout_seconds=60, helm=str(sandbox.bins / "helm"))

    request = HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60))
    with pytest.raises(ReleaseStuck) as refusal:
        helm_rollback(request, CONTROLS)
    message = str(refusal.value)
    assert "release 'demo' in namespace" in message and "stuck in pending-rollback at revision 5" in message
    assert "(Rollback to 2)" in message and "last deployed revision: revision 4" in message
    assert "--param request.recover_pending=true" in message
    assert "Secret sh.helm.release.v1.demo.v5 and rolls back to revision 2" in message
    assert history(sandbox, namespace) == stuck  # nothing changed

    recover = HelmRollbackRequest(
        **target_fields(sandbox, namespace, timeout_seconds=60, recover_pending=True, pending_grace_seconds=0)
    )
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    thread, out = run_in_thread(lambda: helm_rollback(recover, controls))
    run = wait_paused()
    assert history(sandbox, namespace) == stuck  # the evidence is shown before anything is touched
    resume(run.id, {"approved": True, "approver": "pytest", "comment": "helm was killed, clear it"})
    thread.join(180)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result.outcome == "changed" and result.approval == "helm was killed, clear it"
    assert result.recovered is not None and result.recovered.revision == 5
    assert (result.from_revision, result.to_revision, result.new_revision) == (5, 2, 6)
    assert result.pods_ready and result.status == "deployed"
    assert history(sandbox, namespace) == [*with_failed_revision[:3], (4, "superseded"), (5, "failed"), (6, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"  # the good version the interrupted rollback wanted
    secret = core.read_namespaced_secret("sh.helm.release.v1.demo.v5", namespace)
    assert secret.metadata.labels["status"] == "failed"
    annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
    assert annotations["rollbook.dev/rollback-from-revision"] == "5"
    assert annotations["rollbook.dev/rollback-result"] == "succeeded"

    # a re-run (say, after the worker died right here) recognises the rollback instead of undoing it
    again = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60)), CONTROLS)
    assert again.outcome == "unchanged" and again.to_revision == 2
    assert len(history(sandbox, namespace)) == 6
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"


def test_rerun_after_a_rollback_does_not_undo_it(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, with_failed_revision: list[tuple[int, str]]
) -> None:
    first = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60)), CONTROLS)
    assert first.outcome == "changed" and (first.to_revision, first.new_revision) == (2, 5)
    # "previous" right after would pick revision 4 (the bad 1.2.0): recognised as done instead
    again = helm_rollback(HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60)), CONTROLS)
    assert again.outcome == "unchanged" and again.new_revision == 5 and not again.annotated_deployments
    assert history(sandbox, namespace)[-1] == (5, "deployed") and len(history(sandbox, namespace)) == 5
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"
    # an explicit other revision is a new request and is carried out
    other = helm_rollback(
        HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=60, revision=1)), CONTROLS
    )
    assert other.outcome == "changed" and other.new_revision == 6
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"


def test_rerun_after_a_failed_wait_finishes_the_rollback(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    """helm marks a rollback whose --wait failed for a passing reason (here the controller-manager is away, so
    no ReplicaSet rolls out) as a failed "Rollback to 1"; "previous good" would then be revision 2, the bad
    version. The re-run must finish the rollback to 1 (found by the fault campaign with an API-server restart)."""
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    request = HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=10))
    assert sandbox.stop_service("kube-controller-manager")
    try:
        with pytest.raises(HelmOperationFailed, match="rollback failed"):
            helm_rollback(request, CONTROLS)
    finally:
        sandbox.start_service("kube-controller-manager")
    assert history(sandbox, namespace)[-1] == (3, "failed")

    again = helm_rollback(request.model_copy(update={"timeout_seconds": 60}), CONTROLS)

    assert again.outcome == "changed" and (again.from_revision, again.to_revision, again.new_revision) == (3, 1, 4)
    assert history(sandbox, namespace)[-1] == (4, "deployed")
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"
    annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
    assert annotations["rollbook.dev/rollback-result"] == "succeeded"


def test_cleanup_on_fail_deletes_what_a_failed_rollback_created(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, demo_chart: Path
) -> None:
    """Revision 1 (objects named demo-demo-app, with an Ingress) is rolled back to from revision 2 (renamed, no
    Ingress) while a quota forbids Ingresses: helm creates revision 1's Service and Deployment, fails on the
    Ingress, and with cleanup_on_fail deletes what it had just created (helm cleans up when applying fails)."""
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0", "--set", "ingress.enabled=true")
    assert helm_deploy(
        sandbox, demo_chart, namespace, "1.1.0", "--set", "ingress.enabled=false", "--set", "fullnameOverride=web2"
    )
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "no-ingress"}, "spec": {"hard": {"count/ingresses.networking.k8s.io": "0"}}}
    )
    request = HelmRollbackRequest(**target_fields(sandbox, namespace, timeout_seconds=30, cleanup_on_fail=True))
    with pytest.raises(HelmOperationFailed, match="rollback failed"):
        helm_rollback(request, CONTROLS)
    assert history(sandbox, namespace)[-1] == (3, "failed")
    assert [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items] == ["web2"]
    assert "demo-demo-app" not in [s.metadata.name for s in core.list_namespaced_service(namespace).items]


def test_audit_annotation_rides_out_an_api_server_restart(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    """The audit step of issue 16 failed on one connection refused; under KUBE_API it waits the restart out."""
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    assert sandbox.stop_service("kube-apiserver")
    restart = threading.Timer(6, lambda: sandbox.start_service("kube-apiserver"))
    restart.start()
    try:
        names = annotate_release_deployments(cluster, namespace, "demo", {"rollbook.dev/audit": "after-outage"})
    finally:
        restart.join()
    assert names == [DEPLOYMENT]
    annotations = apps.read_namespaced_deployment(DEPLOYMENT, namespace).metadata.annotations
    assert annotations["rollbook.dev/audit"] == "after-outage"
