"""The pure parts of the etcd backup: names, manifests, inventories and the checks a restore makes first."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

from rollbook.etcd_backup import (
    ClusterIdentity,
    Encryption,
    Manifest,
    ManifestError,
    ObjectChecksum,
    SnapshotStatus,
    composite_sha256,
    inventory_diff,
    inventory_from_listing,
    manifest_name,
    missing_after_restore,
    parse_manifest,
    parse_snapshot_name,
    parse_snapshot_status,
    same_s3_checksum,
    snapshot_name,
    verification_problems,
)
from rollbook.reports.etcd import RestoreResult, restore_evidence_markdown, restore_result_markdown

TAKEN = dt.datetime(2026, 12, 3, 8, 30, 5, tzinfo=dt.UTC)
STATUS = SnapshotStatus.model_validate({"hash": 123, "revision": 4567, "totalKey": 890, "totalSize": 2048})
INVENTORY = inventory_from_listing(
    {
        "deployments.apps": [("shop", "web"), ("shop", "api")],
        "secrets": [("shop", "db-password")],
        "namespaces": [("", "shop"), ("", "kube-system")],
    }
)


def manifest(**changes: object) -> Manifest:
    base = Manifest(
        name=snapshot_name(TAKEN, 4567),
        cluster=ClusterIdentity(name="prod", kube_system_uid="uid-1", etcd_cluster_id="abc"),
        taken_at=TAKEN,
        etcd=STATUS,
        object=ObjectChecksum(size=2048, sha256="a" * 64, s3_checksum_sha256="x-1", part_size=5 << 20, parts=1),
        tools={"etcdctl": "3.6.16", "etcdutl": "3.6.16"},
        inventory=INVENTORY,
    )
    return base.model_copy(update=changes)


def test_snapshot_names_sort_by_time_and_parse_back() -> None:
    name = snapshot_name(TAKEN, 4567)
    assert name == "etcd-20261203T083005Z-r4567.db"
    assert manifest_name(name) == "etcd-20261203T083005Z-r4567.manifest.json"
    assert parse_snapshot_name(name) == (TAKEN, 4567)
    assert snapshot_name(TAKEN, 9) < snapshot_name(TAKEN + dt.timedelta(seconds=1), 1)
    assert parse_snapshot_name("notes.txt") is None and parse_snapshot_name(manifest_name(name)) is None


def test_snapshot_status_parses_etcdutl_json_and_refuses_anything_else() -> None:
    text = '{"hash":3590394394,"revision":812,"totalKey":1092,"totalSize":2433024,"version":"3.6.0"}'
    status = parse_snapshot_status(text)
    assert (status.hash, status.revision, status.total_keys, status.total_size) == (3590394394, 812, 1092, 2433024)
    with pytest.raises(ValueError, match="not its status"):
        parse_snapshot_status("Error: snapshot file corrupt")


def test_composite_checksum_is_s3s_sha256_of_the_part_digests() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = base64.b64encode(hashlib.sha256(digests[0] + digests[1]).digest()).decode() + "-2"
    assert composite_sha256(digests) == expected
    assert same_s3_checksum(expected, expected) and same_s3_checksum(expected, expected[:-2])  # moto drops '-2'
    assert not same_s3_checksum(expected, None) and not same_s3_checksum(expected, "other-2")


def test_manifest_round_trips_and_names_what_is_unreadable() -> None:
    original = manifest()
    assert parse_manifest(original.to_json(), where="k") == original
    with pytest.raises(ManifestError, match="unreadable"):
        parse_manifest(b"{not json", where="k")
    with pytest.raises(ManifestError, match=r"etcd"):
        parse_manifest(original.to_json().replace(b'"revision"', b'"rev"'), where="k")
    with pytest.raises(ManifestError, match="format 2"):
        parse_manifest(original.model_copy(update={"format": 2}).to_json(), where="k")


def test_inventory_counts_and_diff_name_what_comes_back_and_what_disappears() -> None:
    assert INVENTORY.counts() == {"deployments.apps": 2, "namespaces": 2, "secrets": 1} and INVENTORY.total == 5
    live = inventory_from_listing(
        {"deployments.apps": [("shop", "web"), ("shop", "new")], "namespaces": [("", "shop"), ("", "kube-system")]}
    )
    diff = inventory_diff(INVENTORY, live)
    assert diff.come_back == ["deployments.apps shop/api", "secrets shop/db-password"]
    assert diff.disappear == ["deployments.apps shop/new"]
    assert missing_after_restore(INVENTORY, INVENTORY) == []
    events = inventory_from_listing({"events": [("shop", "e1")]})
    assert inventory_diff(events, inventory_from_listing({})).empty  # events come and go on their own


GOOD = {
    "expected_name": snapshot_name(TAKEN, 4567),
    "cluster_name": "prod",
    "live_kube_system_uid": "uid-1",
    "size": 2048,
    "sha256": "a" * 64,
    "status": STATUS,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"size": 1000}, "truncated"),
        ({"sha256": "b" * 64}, "SHA-256"),
        ({"cluster_name": "staging"}, "cluster 'prod', not 'staging'"),
        ({"live_kube_system_uid": "uid-2"}, "another cluster"),
        ({"expected_name": "etcd-other.db"}, "describes"),
        ({"status": STATUS.model_copy(update={"hash": 1})}, "etcdutl reads hash 1"),
    ],
)
def test_verification_names_every_reason_to_refuse(change: dict[str, object], reason: str) -> None:
    assert verification_problems(manifest(), **GOOD) == []
    problems = verification_problems(manifest(), **{**GOOD, **change})  # type: ignore[arg-type]
    assert len(problems) == 1 and reason in problems[0]


def test_an_unreadable_live_cluster_is_no_reason_to_refuse() -> None:
    assert verification_problems(manifest(), **{**GOOD, "live_kube_system_uid": None}) == []  # type: ignore[arg-type]


def test_encryption_arguments() -> None:
    assert Encryption().s3_args() == {}
    assert Encryption(mode="AES256").s3_args() == {"ServerSideEncryption": "AES256"}
    kms = Encryption(mode="aws:kms", kms_key_id="k1").s3_args()
    assert kms == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"}


def test_restore_reports_show_the_evidence() -> None:
    diff = inventory_diff(INVENTORY, inventory_from_listing({"namespaces": [("", "shop"), ("", "kube-system")]}))
    text = restore_evidence_markdown(manifest(), diff, driver="commands")
    assert "revision **4567**" in text and "`deployments.apps shop/api`" in text and "Disappears (0)" in text
    refused = RestoreResult(
        outcome="unchanged", summary="refused", snapshot="s", revision=1, taken_at="t", refused=["truncated"]
    )
    assert "nothing was touched" in restore_result_markdown(refused)
