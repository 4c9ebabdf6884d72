"""velero-backup and velero-restore on the test Prefect server, with Velero faked at the task boundary: a store of
Backups and Restores that a fake server completes (or fails) at once. Plan, approval, re-runs, refusals, failures."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from flows.velero_backup import VeleroBackupRequest, VeleroFailed, backup_spec, velero_backup
from flows.velero_restore import VeleroRestoreRequest, velero_restore
from rollbook.change import ChangeControls
from rollbook.velero import VeleroRefused

backup_module = importlib.import_module("flows.velero_backup")
restore_module = importlib.import_module("flows.velero_restore")
CONTROLS = ChangeControls(reason="nightly backup", requested_by="pytest")
LISTING = {"apps/v1/Deployment": ["shop/web"], "v1/ConfigMap": ["shop/settings"], "v1/Secret": ["shop/creds"]}


class FakeVelero:
    """Velero's objects by plural and name; `final` is the phase the fake server gives what is created."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"backups": {}, "restores": {}}
        self.locations = {"default": "Available"}
        self.namespaces: set[str] = {"shop"}
        self.final = "Completed"
        self.created: list[tuple[str, str, dict[str, str]]] = []
        self.missing: list[str] = []

    def add_backup(self, name: str, phase: str, done: str, namespaces: list[str]) -> None:
        self.objects["backups"][name] = {
            "metadata": {"name": name}, "spec": {"includedNamespaces": namespaces},
            "status": {"phase": phase, "completionTimestamp": done},
        }  # fmt: skip

    def storage_location(self, _cluster: object, _ns: str, name: str) -> dict[str, Any]:
        if name not in self.locations:
            raise VeleroRefused(f"backup storage location {name!r} not found")
        return {"status": {"phase": self.locations[name]}}

    def read(self, _cluster: object, _ns: str, plural: str, name: str) -> dict[str, Any] | None:
        return self.objects[plural].get(name)

    def create(self, _c: object, _ns: str, kind: str, name: str, spec: dict[str, Any], ann: dict[str, str]) -> Any:
        plural = kind.lower() + "s"
        if name in self.objects[plural]:
            return self.objects[plural][name], False
        self.created.append((kind, name, ann))
        status = {"phase": self.final, "errors": 0 if self.final == "Completed" else 3, "warnings": 1}
        if self.final != "Completed":
            status["failureReason"] = "bucket unreachable"
        self.objects[plural][name] = {"metadata": {"name": name}, "spec": spec, "status": status}
        return self.objects[plural][name], True

    def wait(self, _c: object, _ns: str, plural: str, name: str, _timeout: float) -> dict[str, Any]:
        return self.objects[plural][name]

    def list_backups(self, _c: object, _ns: str) -> list[dict[str, Any]]:
        return list(self.objects["backups"].values())

    def existing(self, _c: object, names: list[str]) -> list[str]:
        return [n for n in names if n in self.namespaces]

    def verify(self, _c: object, expected: list[tuple[str, str, str]], _t: float) -> tuple[list[str], list[str]]:
        return list(self.missing), []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeVelero:
    velero = FakeVelero()
    for module in (backup_module, restore_module):
        monkeypatch.setattr(module, "resolve_cluster", lambda *_a: object())
        monkeypatch.setattr(module, "create_velero_object", velero.create)
        monkeypatch.setattr(module, "wait_for_phase", velero.wait)
    monkeypatch.setattr(backup_module, "storage_location", velero.storage_location)
    monkeypatch.setattr(backup_module, "read_velero_object", velero.read)
    monkeypatch.setattr(restore_module, "list_backups", velero.list_backups)
    monkeypatch.setattr(restore_module, "existing_namespaces", velero.existing)
    monkeypatch.setattr(restore_module, "backup_resource_list", lambda *_a: LISTING)
    monkeypatch.setattr(restore_module, "verify_restored", velero.verify)
    return velero


def _backup(**kw: Any) -> VeleroBackupRequest:
    return VeleroBackupRequest.model_validate({"backup_name": "nightly", "included_namespaces": ["shop"], **kw})


def test_backup_spec_carries_every_choice() -> None:
    spec = backup_spec(
        _backup(excluded_namespaces=["tmp"], label_selector={"app": "web"}, included_resources=["deployments"],
                excluded_resources=["secrets"], ttl_hours=48, storage_location="offsite")
    )  # fmt: skip
    assert spec == {
        "includedNamespaces": ["shop"], "excludedNamespaces": ["tmp"], "labelSelector": {"matchLabels": {"app": "web"}},
        "includedResources": ["deployments"], "excludedResources": ["secrets"], "ttl": "48h0m0s",
        "storageLocation": "offsite", "snapshotVolumes": False, "defaultVolumesToFsBackup": False,
    }  # fmt: skip
    assert backup_spec(VeleroBackupRequest())["includedNamespaces"] == ["*"]


def test_plan_creates_nothing_then_a_run_creates_an_annotated_backup_and_a_rerun_is_unchanged(
    fake: FakeVelero,
) -> None:
    planned = velero_backup(_backup(), CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and fake.created == [] and planned.would_back_up == ["shop"]
    done = velero_backup(_backup(), CONTROLS)
    assert done.outcome == "changed" and done.phase == "Completed" and done.warnings == 1
    kind, name, annotations = fake.created[0]
    assert (kind, name) == ("Backup", "nightly")
    assert (
        annotations["rollbook.dev/requested-by"] == "pytest" and annotations["rollbook.dev/action"] == "velero-backup"
    )
    again = velero_backup(_backup(), CONTROLS)
    assert again.outcome == "unchanged" and len(fake.created) == 1


def test_refused_approval_and_unknown_location_create_nothing(
    fake: FakeVelero, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rollbook.change import Decision

    monkeypatch.setattr(backup_module, "request_approval", lambda *_a: Decision(approved=False, comment="no"))
    refused = velero_backup(_backup(), CONTROLS.model_copy(update={"require_approval": True}))
    assert refused.outcome == "not-approved" and fake.created == []
    with pytest.raises(VeleroRefused, match="'offsite' not found"):
        velero_backup(_backup(storage_location="offsite"), CONTROLS)
    assert fake.created == []


@pytest.mark.parametrize("phase", ["PartiallyFailed", "Failed", "FailedValidation"])
def test_a_backup_that_did_not_complete_fails_the_run_with_velero_reasons(fake: FakeVelero, phase: str) -> None:
    fake.final = phase
    with pytest.raises(VeleroFailed, match=f"ended {phase}: failure: bucket unreachable; 3 error"):
        velero_backup(_backup(), CONTROLS)


def _restore(**kw: Any) -> VeleroRestoreRequest:
    return VeleroRestoreRequest.model_validate({"namespaces": ["shop"], "restore_name": "back", **kw})


def test_restore_takes_the_newest_completed_backup_and_checks_the_backups_objects(fake: FakeVelero) -> None:
    fake.add_backup("old", "Completed", "2026-12-01T00:00:00Z", ["shop"])
    fake.add_backup("new", "Completed", "2026-12-02T00:00:00Z", ["shop"])
    fake.add_backup("newest", "PartiallyFailed", "2026-12-03T00:00:00Z", ["shop"])
    planned = velero_restore(
        _restore(namespace_mapping={"shop": "shop-copy"}), CONTROLS.model_copy(update={"plan": True})
    )
    assert planned.outcome == "planned" and planned.backup == "new" and fake.created == []
    assert planned.expected == ["ConfigMap shop-copy/settings", "Deployment shop-copy/web", "Secret shop-copy/creds"]
    done = velero_restore(_restore(namespace_mapping={"shop": "shop-copy"}), CONTROLS)
    assert done.outcome == "changed" and not done.missing
    kind, _name, annotations = fake.created[0]
    assert kind == "Restore" and annotations["rollbook.dev/backup"] == "new"
    spec = fake.objects["restores"]["back"]["spec"]
    assert spec == {"backupName": "new", "includedNamespaces": ["shop"], "namespaceMapping": {"shop": "shop-copy"}}


def test_restore_refusals_change_nothing(fake: FakeVelero) -> None:
    fake.add_backup("nightly", "Completed", "2026-12-01T00:00:00Z", ["shop"])
    fake.add_backup("broken", "PartiallyFailed", "2026-12-02T00:00:00Z", ["shop"])
    fake.namespaces.add("prod")
    cases = [
        (_restore(backup_name="nope"), "backup 'nope' not found"),
        (_restore(backup_name="broken"), "is PartiallyFailed, not Completed"),
        (_restore(backup_name="nightly", namespaces=["db"]), r"does not include namespaces \['db'\]"),
        (_restore(namespace_mapping={"shop": "prod"}), "already exist"),
    ]
    for request, message in cases:
        with pytest.raises(VeleroRefused, match=message):
            velero_restore(request, CONTROLS)
    assert fake.created == []
    allowed = velero_restore(_restore(namespace_mapping={"shop": "prod"}, allow_existing_namespaces=True), CONTROLS)
    assert allowed.outcome == "changed"


def test_a_restore_with_missing_objects_or_a_failed_phase_fails_loudly(fake: FakeVelero) -> None:
    fake.add_backup("nightly", "Completed", "2026-12-01T00:00:00Z", ["shop"])
    fake.missing = ["Secret shop/creds"]
    with pytest.raises(VeleroFailed, match=r"missing \['Secret shop/creds'\]"):
        velero_restore(_restore(), CONTROLS)
    fake.final = "PartiallyFailed"
    with pytest.raises(VeleroFailed, match="ended PartiallyFailed"):
        velero_restore(_restore(restore_name="back-2"), CONTROLS)
