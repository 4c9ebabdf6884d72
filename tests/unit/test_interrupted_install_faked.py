"""helm-atomic-upgrade on a release whose first install never finished (issue 16), on the test Prefect server with
the helm and Kubernetes tasks faked at the task boundary: one release kept in memory, whose upgrade goes through
the real start checks of `upgrade_release` (a still-pending release is refused there, as helm would).

The sandbox drill that really interrupts an install is tests/integration/test_atomic_upgrade_interrupted.py.
"""

from __future__ import annotations

import datetime as dt
import importlib
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flows._interrupted_install import InterruptedInstallChanged
from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from rollbook.change import ChangeControls
from rollbook.helm_recovery import INSTALL_CLEANUP_SECONDS
from rollbook.helm_releases import RevisionInfo
from tasks.helm_changes import UpgradeOutcome, _check_upgrade_start
from tasks.helm_errors import ReleaseBusy
from tasks.helm_release import RenderedUpgrade, RevisionDetails
from tasks.release_workloads import PodsReport

flow_module = importlib.import_module("flows.atomic_upgrade")
steps_module = importlib.import_module("flows._interrupted_install")
CONTROLS = ChangeControls(reason="first install of web", requested_by="pytest")
CHART = "demo-app-0.1.0"
OURS = {"image": {"tag": "1.1.0"}}
TIMEOUT = 60


def _pending(*, seconds_ago: float) -> RevisionInfo:
    updated = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    return RevisionInfo(revision=1, status="pending-install", chart=CHART, description="Initial install underway",
                        updated=updated)  # fmt: skip


class FakeHelm:
    """One release in memory and every change made to it, in order."""

    def __init__(self, history: list[RevisionInfo], *, values: dict[str, Any] | None = None) -> None:
        self.history = history
        self.values = OURS if values is None else values
        self.changes: list[str] = []
        self.renders: list[bool] = []  # `anew` of each dry run
        self.sleeps: list[float] = []
        self.on_sleep: list[RevisionInfo] | None = None  # what the release becomes while the run waits

    def release_history(self, cluster: object, ns: str, name: str, helm: str, missing_ok: bool = False) -> Any:
        return list(self.history)

    def revision_details(self, cluster: object, ns: str, name: str, revision: int, helm: str) -> RevisionDetails:
        return RevisionDetails(revision=revision, chart=CHART, values=self.values, manifest=[])

    def render_upgrade(self, cluster: object, ns: str, name: str, chart: str, values: Any, **kw: Any) -> Any:
        self.renders.append(kw["anew"])
        if not kw["anew"] and self.history and self.history[-1].status.startswith("pending-"):
            raise ReleaseBusy("dry-run upgrade: another operation (install/upgrade/rollback) is in progress", name, ns)
        return RenderedUpgrade(chart=CHART, values=values, manifest=[])

    def upgrade_release(self, cluster: object, ns: str, name: str, chart: str, values: Any, description: str,
                        expected_live: int | None, **kw: Any) -> UpgradeOutcome:  # fmt: skip
        _check_upgrade_start(self.history, description=description, expected_live=expected_live,
                             install=kw["install"], where=(name, ns))  # fmt: skip
        self.changes.append("install" if not self.history else "upgrade")
        self.history = [RevisionInfo(revision=1, status="deployed", chart=CHART, description=description)]
        return UpgradeOutcome(release=name, namespace=ns, succeeded=True, previous_revision=None, live_revision=1,
                              live_status="deployed", attempted_revision=1)  # fmt: skip

    def uninstall_release(self, cluster: object, ns: str, name: str, helm: str, timeout: int) -> bool:
        self.changes.append("uninstall")
        self.history = []
        return True

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.history = self.on_sleep

    @contextmanager
    def rollout_lock(self, cluster: object, ns: str, app: str) -> Iterator[str]:
        self.changes.append(f"lock {app}")
        try:
            yield app
        finally:
            self.changes.append(f"unlock {app}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHelm]:
    helm = FakeHelm([])
    for module in (flow_module, steps_module):
        for name in ("release_history", "revision_details"):
            monkeypatch.setattr(module, name, getattr(helm, name))
    for name in ("render_upgrade", "upgrade_release", "rollout_lock"):
        monkeypatch.setattr(flow_module, name, getattr(helm, name))
    monkeypatch.setattr(steps_module, "uninstall_release", helm.uninstall_release)
    # the module's own `time`, not time.sleep itself: a process-wide fake sleep would also cut the Prefect
    # client's retry pauses, so a busy test server's 503 failed the test at once
    monkeypatch.setattr(steps_module, "time", types.SimpleNamespace(sleep=helm.sleep))
    monkeypatch.setattr(flow_module, "resolve_cluster", lambda *a: object())
    monkeypatch.setattr(flow_module, "annotate_release_deployments", lambda *a: ["demo-app"])
    ready = PodsReport(release="web", namespace="prod", all_ready=True, workloads=[], pods=[], problems=[])
    monkeypatch.setattr(flow_module, "release_pods_ready", lambda *a: ready)
    yield helm


def _request(**extra: Any) -> AtomicUpgradeRequest:
    fields = {"kubeconfig_path": "/dev/null", "namespace": "prod", "release": "web", "chart": "./charts/demo-app",
              "image_tag": "1.1.0", "install": True, "reuse_values": True, "run_checklist": False,
              "timeout_seconds": TIMEOUT, **extra}  # fmt: skip
    return AtomicUpgradeRequest.model_validate(fields)


def test_plan_names_the_interrupted_install_and_changes_nothing(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=20)]
    result = atomic_upgrade(_request(), CONTROLS.model_copy(update={"plan": True}))
    assert result.outcome == "planned" and result.from_revision is None
    assert "stuck in pending-install at revision 1" in result.interrupted_install
    assert fake.renders == [True]  # a fresh install's dry run: helm refuses to dry-run an upgrade of it
    assert fake.changes == [] and fake.sleeps == [] and fake.history[0].status == "pending-install"


def test_rerun_removes_its_own_interrupted_install_under_the_lock_and_installs_anew(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=3600)]  # its helm (--timeout 60s) gave up long ago: no wait
    result = atomic_upgrade(_request(), CONTROLS)
    assert (result.outcome, result.succeeded, result.live_revision, result.live_status) == (
        "changed", True, 1, "deployed")  # fmt: skip
    assert fake.changes == ["lock web", "uninstall", "install", "unlock web"]
    assert fake.sleeps == [] and [r.status for r in fake.history] == ["deployed"]
    assert result.interrupted_install.startswith("release 'web' in namespace 'prod' is stuck in pending-install")


def test_a_young_interrupted_install_is_waited_out_before_it_is_removed(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=20)]
    result = atomic_upgrade(_request(), CONTROLS)
    assert result.outcome == "changed"
    [waited] = fake.sleeps  # its helm may still clean up: --timeout + the cleanup margin from when it began
    assert TIMEOUT + INSTALL_CLEANUP_SECONDS - 20 - 5 < waited <= TIMEOUT + INSTALL_CLEANUP_SECONDS - 20
    assert fake.changes == ["lock web", "uninstall", "install", "unlock web"]


def test_its_helm_finishing_the_install_while_waiting_is_reported_not_redone(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=20)]
    fake.on_sleep = [RevisionInfo(revision=1, status="deployed", chart=CHART, description="Install complete")]
    result = atomic_upgrade(_request(), CONTROLS)
    assert result.outcome == "unchanged" and result.succeeded and result.live_revision == 1
    assert "finished after all" in result.summary
    assert fake.changes == ["lock web", "unlock web"]  # nothing removed, nothing installed twice


def test_an_install_that_changed_while_waiting_is_left_alone(fake: FakeHelm) -> None:
    """Another run removed it and began its own install meanwhile: same revision, a new timestamp."""
    fake.history = [_pending(seconds_ago=20)]
    fake.on_sleep = [_pending(seconds_ago=0)]
    with pytest.raises(InterruptedInstallChanged, match="changed while waiting.*left as it is"):
        atomic_upgrade(_request(), CONTROLS)
    assert fake.changes == ["lock web", "unlock web"] and fake.history == fake.on_sleep


def test_someone_elses_pending_install_is_refused_with_the_command(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=3600)]
    fake.values = {"image": {"tag": "1.1.0"}, "replicas": 3}  # not what this request installs
    with pytest.raises(ValueError, match=r"other values than this request's.*`helm uninstall web -n prod`"):
        atomic_upgrade(_request(), CONTROLS)
    assert fake.changes == [] and fake.history[0].status == "pending-install"


def test_an_upgrade_without_install_is_refused_before_anything(fake: FakeHelm) -> None:
    fake.history = [_pending(seconds_ago=3600)]
    with pytest.raises(ValueError, match="nothing to upgrade.*request.install=true"):
        atomic_upgrade(_request(install=False), CONTROLS)
    assert fake.changes == [] and fake.renders == []


def test_a_pending_upgrade_is_not_treated_as_an_interrupted_install(fake: FakeHelm) -> None:
    """Only a revision-1-only pending-install is cleared here; a pending upgrade stays helm-rollback's case."""
    deployed = RevisionInfo(revision=1, status="deployed", chart=CHART, description="Install complete")
    fake.history = [deployed, RevisionInfo(revision=2, status="pending-upgrade", chart=CHART)]
    with pytest.raises(ReleaseBusy, match="in progress"):
        atomic_upgrade(_request(), CONTROLS)
    assert fake.changes == [] and fake.renders == [False] and fake.sleeps == []
