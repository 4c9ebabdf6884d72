"""The Helm runbooks' markdown (rollbook/reports/helm.py), rendered from typed results without a cluster."""

from __future__ import annotations

import datetime as dt

from rollbook.helm_recovery import stuck_release
from rollbook.helm_releases import ImageChange, RevisionInfo, ValueChange
from rollbook.helm_results import (
    AtomicUpgradeResult,
    HelmHistoryResult,
    HelmRollbackResult,
    PodProblem,
    RehearsalResult,
    StepResult,
)
from rollbook.reports.helm import (
    history_report,
    history_table,
    rehearsal_plan,
    rehearsal_report,
    rollback_plan,
    rollback_summary,
    upgrade_report,
)

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
HISTORY = [
    RevisionInfo(revision=1, status="superseded", chart="demo-app-0.1.0", app_version="1.0.0", updated=NOW),
    RevisionInfo(revision=2, status="deployed", chart="demo-app-0.1.0", description="a | b\nc", updated=NOW),
]


def test_history_table_escapes_cells_and_marks_deployed() -> None:
    table = history_table(HISTORY, deployed=2)
    assert table.splitlines()[2].startswith("| 1 | superseded | demo-app-0.1.0 | 1.0.0 | 2026-11-29 12:00:00 |")
    assert "| 2 ← deployed | deployed |" in table and "a \\| b c" in table


def _rollback(**extra: object) -> HelmRollbackResult:
    fields: dict[str, object] = {
        "outcome": "changed",
        "summary": "rolled back web",
        "release": "web",
        "namespace": "prod",
        "from_revision": 2,
        "to_revision": 1,
        "value_changes": [ValueChange(path="image.tag", before="2", after="1", change="changed")],
        "image_changes": [ImageChange(workload="Deployment/web", before=["r:2"], after=["r:1"])],
    }
    return HelmRollbackResult.model_validate({**fields, **extra})


def test_rollback_plan_and_summary() -> None:
    plan = rollback_plan(_rollback(), HISTORY, how="requested", timeout_seconds=60, requested_by="ann", reason="bad")
    assert "- from live revision **2**" in plan and "- to revision **1**" in plan
    assert "`image.tag` (changed): `'2'` → `'1'`" in plan and "`Deployment/web`: r:2 → r:1" in plan
    assert "requested by **ann**: bad" in plan and "### History" in plan
    done = _rollback(new_revision=3, status="deployed", pods_ready=True, annotated_deployments=["web"])
    summary = rollback_summary(done, {"rollbook.dev/action": "helm-rollback"})
    assert summary.startswith("# Rollback succeeded: `web` in `prod`")
    assert "new revision 3" in summary and "| `rollbook.dev/action` | helm-rollback |" in summary
    unhealthy = rollback_summary(done.model_copy(update={"pods_ready": False, "pod_problems": ["x"]}), {})
    assert unhealthy.startswith("# Rollback NOT HEALTHY") and "(x)" in unhealthy


def test_upgrade_report_names_pod_reasons_when_rolled_back() -> None:
    result = AtomicUpgradeResult(
        outcome="reverted",
        summary="failed",
        release="web",
        namespace="prod",
        from_revision=1,
        succeeded=False,
        live_revision=3,
        live_status="deployed",
        attempted_revision=2,
        failure_reasons=["CrashLoopBackOff"],
        pod_problems=[PodProblem(pod="web-1", container="app", image="r:2", reason="CrashLoopBackOff", message="a|b")],
        helm_error="UPGRADE FAILED",
    )
    text = upgrade_report(result)
    assert text.startswith("# Upgrade FAILED and was rolled back")
    assert "- why: CrashLoopBackOff" in text and "| web-1 | app | r:2 | CrashLoopBackOff | a\\|b |" in text
    ok = upgrade_report(result.model_copy(update={"succeeded": True, "pod_report_problems": ["pod x not Ready"]}))
    assert ok.startswith("# Upgrade succeeded") and "pods not Ready: pod x not Ready" in ok


def test_history_report_shows_a_stuck_release() -> None:
    history = [*HISTORY, RevisionInfo(revision=3, status="pending-rollback", description="Rollback to 1", updated=NOW)]
    stuck = stuck_release(history, release="web", namespace="prod")
    result = HelmHistoryResult(release="web", namespace="prod", revisions=history, deployed=2, stuck=stuck, read_at=NOW)
    text = history_report(result)
    assert "revision **2** is deployed; 3 stored" in text
    assert "stuck in pending-rollback at revision 3" in text and "request.recover_pending=true" in text
    assert "| 2 ← deployed |" in text


def test_rehearsal_plan_and_report() -> None:
    base = RehearsalResult(outcome="planned", summary="s", namespace="drill", release="r", from_tag="1", to_tag="2")
    plan = rehearsal_plan(["create", "deploy 1"], base, requested_by="ci", reason="weekly drill")
    assert "`r` in scratch namespace `drill`: 1 → 2 → rollback" in plan and "1. create\n2. deploy 1" in plan
    done = base.model_copy(
        update={
            "outcome": "changed",
            "passed": True,
            "total_seconds": 3.5,
            "steps": [StepResult(step="create", ok=True, seconds=1.25, detail="a|b")],
        }
    )
    text = rehearsal_report(done)
    assert text.startswith("# Rollback rehearsal PASSED") and "3.5s in total (1.250s in the steps)" in text
    assert "| create | ok | 1.25 | a\\|b |" in text
