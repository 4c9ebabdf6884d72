"""The helm-atomic-upgrade runbook on the sandbox: success, a crash-looping upgrade rolled back, plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helm_helpers import (
    CONTROLS,
    RELEASE,
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

from flows.atomic_upgrade import AtomicUpgradeRequest, UpgradeRolledBack, atomic_upgrade
from flows.predeploy_checklist import ChecklistFailed
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import SandboxRegistries


def _request(sandbox: Sandbox, namespace: str, chart: Path, **extra: object) -> AtomicUpgradeRequest:
    """The upgrade without the checklist gate (tested on its own below)."""
    fields: dict[str, object] = {"run_checklist": False, **extra}
    return AtomicUpgradeRequest(**target_fields(sandbox, namespace, chart=str(chart), **fields))


def _checked(sandbox: Sandbox, namespace: str, chart: Path, **extra: object) -> AtomicUpgradeRequest:
    """The upgrade behind the pre-deploy checklist, with the sandbox's signing key (no grype: a warning)."""
    checklist = {
        "cosign_public_key": str(SandboxRegistries(sandbox.cfg, sandbox.bins).public_key),
        "scanner_executable": "/nonexistent/grype",
    }
    return AtomicUpgradeRequest(
        **target_fields(sandbox, namespace, chart=str(chart), run_checklist=True, checklist=checklist, **extra)
    )


def test_upgrade_succeeds_and_keeps_other_values(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    result = atomic_upgrade(_request(sandbox, namespace, demo_chart, image_tag="1.1.0", timeout_seconds=60), CONTROLS)

    assert result.outcome == "changed" and result.succeeded
    assert result.live_revision == 2 and result.live_status == "deployed"
    assert result.pods_ready and not result.rolled_back
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"  # repository kept from the live values
    rows = json.loads(sandbox.helm("history", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert rows[-1]["description"].startswith("rollbook helm-atomic-upgrade")
    annotations = apps.read_namespaced_deployment("demo-demo-app", namespace).metadata.annotations
    assert annotations["rollbook.dev/upgrade-result"] == "succeeded"

    # the same upgrade again (a re-run after a lost first run, by anyone): nothing to do, no revision added,
    # no approval asked, the record still names the run that made the change
    again = atomic_upgrade(
        _request(sandbox, namespace, demo_chart, image_tag="1.1.0", timeout_seconds=60),
        CONTROLS.model_copy(update={"require_approval": True, "requested_by": "oncall-2"}),
    )
    assert again.outcome == "unchanged" and again.already_live and again.succeeded, again.summary
    assert "already is chart" in again.summary and "made by: rollbook helm-atomic-upgrade" in again.summary
    assert [r for r, _ in history(sandbox, namespace)] == [1, 2]
    after = apps.read_namespaced_deployment("demo-demo-app", namespace).metadata.annotations
    assert after["rollbook.dev/requested-by"] == "pytest" and after == annotations


def test_crashing_upgrade_is_rolled_back_with_reason(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    request = _request(
        sandbox,
        namespace,
        demo_chart,
        image_tag="1.2.0",
        values={"podLabels": {FAULT_LABEL: "CrashLoopBackOff"}},
        timeout_seconds=10,
    )
    with pytest.raises(UpgradeRolledBack, match="live revision is 3 .*rolled back.*CrashLoopBackOff") as caught:
        atomic_upgrade(request, CONTROLS)

    report = caught.value.result
    assert report is not None and report.outcome == "reverted"
    assert (report.attempted_revision, report.live_revision, report.rolled_back) == (2, 3, True)
    assert "CrashLoopBackOff" in report.failure_reasons
    assert any(p.image.endswith(":1.2.0") for p in report.pod_problems)
    assert "rollback-on-failure" in report.helm_error or "rolled back" in report.helm_error
    assert history(sandbox, namespace) == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"


def test_plan_shows_diff_and_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    controls = CONTROLS.model_copy(update={"plan": True})
    result = atomic_upgrade(
        _request(sandbox, namespace, demo_chart, image_tag="1.1.0", set_values={"replicas": 3}), controls
    )

    assert result.outcome == "planned" and not result.changed
    changed = {c.path: (c.before, c.after) for c in result.value_changes}
    assert changed == {"image.tag": ("1.0.0", "1.1.0"), "replicas": (None, 3)}
    assert result.image_changes[0].after == [f"{repo(sandbox)}:1.1.0"]
    assert history(sandbox, namespace) == [(1, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"


def test_upgrade_of_unknown_release_is_refused(sandbox: Sandbox, namespace: str, demo_chart: Path) -> None:
    from tasks.helm_errors import ReleaseNotFound

    with pytest.raises(ReleaseNotFound, match="release 'demo' in namespace"):
        atomic_upgrade(_request(sandbox, namespace, demo_chart, image_tag="1.1.0"), CONTROLS)
    assert sandbox.helm("history", RELEASE, "-n", namespace, check=False).returncode != 0


def test_failing_checklist_stops_the_upgrade_before_anything_changes(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    unsigned = SandboxRegistries(sandbox.cfg, sandbox.bins).push("unsigned-upgrade", "not signed\n")
    request = _checked(sandbox, namespace, demo_chart, image_tag=unsigned.rsplit(":", 1)[1], timeout_seconds=60)
    with pytest.raises(ChecklistFailed, match="stopped before any change.*image-signature"):
        atomic_upgrade(request, CONTROLS)
    assert history(sandbox, namespace) == [(1, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"
    annotations = apps.read_namespaced_deployment("demo-demo-app", namespace).metadata.annotations or {}
    assert not any(k.startswith("rollbook.dev/") for k in annotations)


def test_checklist_passes_then_plan_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    result = atomic_upgrade(
        _checked(sandbox, namespace, demo_chart, image_tag="1.1.0"), CONTROLS.model_copy(update={"plan": True})
    )
    assert result.outcome == "planned" and result.checklist and "warnings" in result.checklist
    assert [c.path for c in result.value_changes] == ["image.tag"]
    assert history(sandbox, namespace) == [(1, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"


def test_checklist_then_approval_then_upgrade(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    request = _checked(sandbox, namespace, demo_chart, image_tag="1.1.0", timeout_seconds=60)
    thread, out = run_in_thread(lambda: atomic_upgrade(request, controls))
    run = wait_paused()
    assert history(sandbox, namespace) == [(1, "deployed")]  # checked and waiting: nothing changed yet
    resume(run.id, {"approved": True, "approver": "pytest", "comment": "checklist is green"})
    thread.join(180)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert result.outcome == "changed" and result.approval == "checklist is green" and result.checklist
    assert history(sandbox, namespace) == [(1, "superseded"), (2, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.1.0"


def test_rejected_upgrade_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, demo_chart: Path
) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    request = _request(sandbox, namespace, demo_chart, image_tag="1.1.0")
    thread, out = run_in_thread(lambda: atomic_upgrade(request, controls))
    resume(wait_paused().id, {"approved": False, "approver": "pytest", "comment": "no"})
    thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].outcome == "not-approved"
    assert history(sandbox, namespace) == [(1, "deployed")]
    assert image(apps, namespace) == f"{repo(sandbox)}:1.0.0"
