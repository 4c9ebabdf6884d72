"""backup-retention against the real S3 API of moto: a timeline of snapshots with manifests (and some without)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from etcd_helpers import backup_bucket, keys, s3_client

from flows.backup_retention import RetentionRequest, backup_retention
from rollbook.change import ChangeControls
from rollbook.etcd_backup import (
    ClusterIdentity,
    Inventory,
    Manifest,
    SnapshotStatus,
    manifest_name,
    snapshot_name,
)
from sandbox.cluster import Sandbox
from tasks.backup_store import put_manifest, upload_snapshot

NOW = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC)
CONTROLS = ChangeControls(reason="prune old etcd snapshots", requested_by="pytest")
STATUS = SnapshotStatus.model_validate({"hash": 1, "revision": 1, "totalKey": 1, "totalSize": 1})


def _store(sandbox: Sandbox, bucket: str, file: Path, hours_ago: float, *, manifest: str = "good") -> str:
    target = backup_bucket(sandbox, bucket)
    taken = NOW - dt.timedelta(hours=hours_ago)
    name = f"sandbox/{snapshot_name(taken, int(1000 - hours_ago))}"
    checksum = upload_snapshot.fn(target, file, name, part_size=5 * 1024 * 1024)
    if manifest == "good":
        body = Manifest(
            name=name.rsplit("/", 1)[1], cluster=ClusterIdentity(name="sandbox"), taken_at=taken, etcd=STATUS,
            object=checksum, tools={}, inventory=Inventory(),
        ).to_json()  # fmt: skip
        put_manifest.fn(target, manifest_name(name), body)
    elif manifest == "unreadable":
        put_manifest.fn(target, manifest_name(name), b"{truncated")
    return f"etcd/{name}"


@pytest.fixture
def timeline(sandbox: Sandbox, tmp_path: Path) -> tuple[str, dict[float, str]]:
    """Snapshots 0.5 h to 9 days old, plus one without a manifest and one with an unreadable manifest."""
    bucket = f"rollbook-retention-{tmp_path.name[-6:].lower().replace('_', '-')}"
    s3_client(sandbox).create_bucket(Bucket=bucket)
    backup_bucket(sandbox, bucket).save("retention-bucket", overwrite=True)
    file = tmp_path / "snap.db"
    file.write_bytes(b"not really a snapshot, retention never reads it")
    stored = {h: _store(sandbox, bucket, file, h) for h in (0.5, 1.5, 2.5, 26, 27, 50, 24 * 9)}
    stored[3.5] = _store(sandbox, bucket, file, 3.5, manifest="missing")
    stored[4.5] = _store(sandbox, bucket, file, 4.5, manifest="unreadable")
    return bucket, stored


def test_plan_lists_what_would_go_and_deletes_nothing_then_a_run_deletes_exactly_that(
    sandbox: Sandbox, timeline: tuple[str, dict[float, str]]
) -> None:
    bucket, stored = timeline
    request = RetentionRequest.model_validate(
        {"bucket_block": "retention-bucket", "cluster_name": "sandbox",
         "rules": {"keep_last": 2, "hourly": 0, "daily": 2, "weekly": 0}}
    )  # fmt: skip
    before = keys(sandbox, bucket)
    planned = backup_retention(request, CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and keys(sandbox, bucket) == before
    # keep last 2 (0.5 h, 1.5 h), daily 2 (newest of today: 0.5 h; of yesterday: 26 h); the unverified two stay
    expected_delete = {stored[h].removeprefix("etcd/") for h in (2.5, 27, 50, 24 * 9)}
    assert set(planned.delete) == expected_delete
    assert set(planned.unverified) == {stored[h].removeprefix("etcd/") for h in (3.5, 4.5)}
    assert planned.unverified[stored[3.5].removeprefix("etcd/")] == "manifest missing"

    done = backup_retention(request, CONTROLS)
    assert done.outcome == "changed" and set(done.delete) == expected_delete
    after = keys(sandbox, bucket)
    for hours, key in stored.items():
        gone = key.removeprefix("etcd/") in expected_delete
        assert (key in after) is not gone, (hours, key)
        if gone:
            assert f"etcd/{manifest_name(key.removeprefix('etcd/'))}" not in after
    again = backup_retention(request, CONTROLS)
    assert again.outcome == "unchanged" and again.delete == [] and keys(sandbox, bucket) == after
