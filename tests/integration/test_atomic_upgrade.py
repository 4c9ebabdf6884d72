"""The helm-atomic-upgrade runbook on the sandbox: success, a crash-looping upgrade rolled back, plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helm_helpers import CONTROLS, RELEASE, helm_deploy, history, image, repo, target_fields
from kubernetes import client

from flows.atomic_upgrade import AtomicUpgradeRequest, UpgradeRolledBack, atomic_upgrade
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL


def _request(sandbox: Sandbox, namespace: str, chart: Path, **extra: object) -> AtomicUpgradeRequest:
    return AtomicUpgradeRequest(**target_fields(sandbox, namespace, chart=str(chart), **extra))


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
