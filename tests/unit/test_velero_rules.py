"""Velero's pure rules: phases, the newest Completed backup, namespace mappings, the objects to bring back."""

from __future__ import annotations

from typing import Any

import pytest

from rollbook import velero


def _backup(name: str, phase: str, done: str, namespaces: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"includedNamespaces": namespaces, **spec} if namespaces is not None else dict(spec)
    return {"metadata": {"name": name}, "spec": body, "status": {"phase": phase, "completionTimestamp": done}}


@pytest.mark.parametrize(
    ("phase", "outcome"),
    [("Completed", "succeeded"), ("PartiallyFailed", "partial"), ("Failed", "failed"),
     ("FailedValidation", "failed"), ("InProgress", "running"), ("New", "running"), (None, "running"),
     ("WaitingForPluginOperations", "running"), ("Finalizing", "running")],
)  # fmt: skip
def test_only_completed_succeeds_and_only_final_phases_end_a_wait(phase: str | None, outcome: str) -> None:
    assert velero.phase_outcome(phase) == outcome
    assert velero.is_final(phase) is (outcome != "running")


def test_newest_completed_skips_partial_and_failed_and_newer_running_ones() -> None:
    backups = [
        _backup("old", "Completed", "2026-12-01T00:00:00Z", ["shop"]),
        _backup("mid", "Completed", "2026-12-02T00:00:00Z", ["shop"]),
        _backup("partial", "PartiallyFailed", "2026-12-03T00:00:00Z", ["shop"]),
        _backup("failed", "Failed", "2026-12-03T01:00:00Z", ["shop"]),
        {"metadata": {"name": "running"}, "spec": {}, "status": {"phase": "InProgress"}},
    ]
    assert velero.newest_completed(backups)["metadata"]["name"] == "mid"


def test_newest_completed_must_cover_every_namespace_asked() -> None:
    backups = [
        _backup("all", "Completed", "2026-12-01T00:00:00Z"),
        _backup("shop-only", "Completed", "2026-12-03T00:00:00Z", ["shop"]),
        _backup("no-db", "Completed", "2026-12-04T00:00:00Z", ["*"], excludedNamespaces=["db"]),
    ]
    assert velero.newest_completed(backups, namespaces=["shop"])["metadata"]["name"] == "no-db"
    assert velero.newest_completed(backups, namespaces=["shop", "db"])["metadata"]["name"] == "all"
    with pytest.raises(velero.VeleroRefused, match=r"no Completed Velero backup including namespaces \['x'\]"):
        velero.newest_completed(backups[1:2], namespaces=["x"])
    with pytest.raises(velero.VeleroRefused, match="no Completed"):
        velero.newest_completed([])


def test_mapping_onto_an_existing_namespace_needs_consent() -> None:
    with pytest.raises(velero.VeleroRefused, match=r"\['prod'\] already exist.*allow_existing_namespaces"):
        velero.validate_mapping({"shop": "prod"}, restored=["shop"], existing=["prod"], allow_existing=False)
    velero.validate_mapping({"shop": "prod"}, restored=["shop"], existing=["prod"], allow_existing=True)
    velero.validate_mapping({"shop": "shop-copy"}, restored=["shop"], existing=["shop"], allow_existing=False)


@pytest.mark.parametrize(
    ("mapping", "restored", "message"),
    [
        ({"db": "x"}, ["shop"], "does not include"),
        ({"a": "x", "b": "x"}, ["a", "b"], "several namespaces onto"),
        ({"a": "b"}, ["a", "b"], "also restored under their own names"),
    ],
)
def test_bad_mappings_are_refused(mapping: dict[str, str], restored: list[str], message: str) -> None:
    with pytest.raises(velero.VeleroRefused, match=message):
        velero.validate_mapping(mapping, restored=restored, existing=[], allow_existing=True)


def test_expected_objects_come_from_the_resource_list_mapped_and_filtered() -> None:
    listing = {
        "apps/v1/Deployment": ["shop/web", "db/pg"],
        "v1/ConfigMap": ["shop/settings", "shop/kube-root-ca.crt"],
        "v1/Secret": ["shop/creds"],
        "v1/Service": ["shop/web"],
        "v1/Pod": ["shop/web-abc"],
        "v1/Namespace": ["shop"],
    }
    assert velero.expected_objects(listing, ["shop"], {"shop": "shop-copy"}) == [
        ("ConfigMap", "shop-copy", "settings"),
        ("Deployment", "shop-copy", "web"),
        ("Secret", "shop-copy", "creds"),
        ("Service", "shop-copy", "web"),
    ]
    assert ("Deployment", "db", "pg") in velero.expected_objects(listing, ["*"], {})


def test_problems_name_reasons_errors_and_warnings() -> None:
    status = {"failureReason": "bucket gone", "validationErrors": ["no such location"], "errors": 2, "warnings": 1}
    assert velero.backup_problems(status) == [
        "failure: bucket gone", "validation: no such location", "2 error(s)", "1 warning(s)",
    ]  # fmt: skip
    assert velero.backup_problems({"phase": "Completed"}) == []
