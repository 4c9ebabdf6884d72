"""etcd-snapshot on the session sandbox: the real TLS etcd, the real S3 API of moto, the real Prefect server."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from etcd_helpers import (
    backup_bucket,
    etcd_endpoint,
    keys,
    pending_uploads,
    s3_client,
    save_blocks,
    snapshot_request,
)
from kubernetes import client

from blocks import BackupBucket
from flows.etcd_snapshot import EtcdSnapshotRequest, etcd_snapshot
from rollbook.etcd_backup import composite_sha256, manifest_name, parse_manifest, same_s3_checksum
from sandbox.cluster import Sandbox
from tasks import backup_store
from tasks.backup_store import BackupStoreError, upload_snapshot
from tasks.etcd import EtcdError

SECRET_VALUE = "s3cr3t-value-that-must-not-leave-the-cluster"


@pytest.fixture(scope="module")
def blocks(sandbox: Sandbox) -> tuple[str, str, str]:
    return save_blocks(sandbox, "snap")


def _workload(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "db-creds"}, "stringData": {"pw": SECRET_VALUE}})
    labels = {"app": "web"}
    container = {"name": "web", "image": "127.0.0.1/rollbook/demo-app:1.0.0"}
    spec = {"replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [container]}}}  # fmt: skip
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": "web"}, "spec": spec})


def test_snapshot_is_verified_inventoried_and_stored_with_its_manifest(
    sandbox: Sandbox, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, blocks: tuple[str, str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    endpoint, bucket_block, bucket = blocks
    _workload(core, apps, namespace)
    result = etcd_snapshot(EtcdSnapshotRequest.model_validate(snapshot_request(sandbox, endpoint, bucket_block)))

    snapshot_key, manifest_key = f"etcd/{result.snapshot_key}", f"etcd/{manifest_name(result.snapshot_key)}"
    assert keys(sandbox, bucket) == sorted([snapshot_key, manifest_key]) and pending_uploads(sandbox, bucket) == []
    s3 = s3_client(sandbox)
    raw = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    manifest = parse_manifest(raw, where=manifest_key)
    assert SECRET_VALUE.encode() not in raw and base64.b64encode(SECRET_VALUE.encode()) not in raw
    resources = manifest.inventory.resources
    assert resources["deployments.apps"][namespace] == ["web"] and resources["secrets"][namespace] == ["db-creds"]
    assert namespace in resources["namespaces"][""]
    assert manifest.cluster.name == "sandbox" and manifest.cluster.kube_system_uid
    assert manifest.etcd.revision == result.revision and manifest.tools["etcdutl"] == manifest.tools["etcdctl"]

    # the object is the file etcd wrote: its SHA-256, S3's composite checksum and etcdutl's status agree
    local = tmp_path / "snapshot.db"
    s3.download_file(bucket, snapshot_key, str(local))
    data = local.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest.object.sha256 == result.sha256
    part = 5 * 1024 * 1024
    assert manifest.object.parts == max(1, math.ceil(len(data) / part))
    digests = [hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part)]
    assert manifest.object.s3_checksum_sha256 == composite_sha256(digests)
    head = s3.head_object(Bucket=bucket, Key=snapshot_key, ChecksumMode="ENABLED")
    assert same_s3_checksum(composite_sha256(digests), head.get("ChecksumSHA256"))
    status = subprocess.run(
        [str(sandbox.bins / "etcdutl"), "snapshot", "status", str(local), "--write-out=json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f'"hash":{manifest.etcd.hash}' in status.stdout.replace(" ", "")


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("unknown bucket", BackupStoreError, "does not exist"),
        ("unreachable etcd", EtcdError, "no etcd endpoint answered"),
        ("no client certificate", EtcdError, "certificate"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_nothing_in_the_bucket(
    sandbox: Sandbox, blocks: tuple[str, str, str], case: str, error: type[Exception], message: str
) -> None:
    endpoint, bucket_block, bucket = blocks
    before = keys(sandbox, bucket)
    if case == "unknown bucket":
        backup_bucket(sandbox, "rollbook-no-such-bucket").save("snap-missing-bucket", overwrite=True)
        bucket_block = "snap-missing-bucket"
    elif case == "unreachable etcd":
        etcd_endpoint(sandbox, port=sandbox.cfg.port("alert-webhook")).save("snap-down-etcd", overwrite=True)
        endpoint = "snap-down-etcd"
    else:
        etcd_endpoint(sandbox, client_cert=False).save("snap-no-cert", overwrite=True)
        endpoint = "snap-no-cert"
    request = EtcdSnapshotRequest.model_validate(snapshot_request(sandbox, endpoint, bucket_block))
    with pytest.raises(error, match=message):
        etcd_snapshot(request)
    assert keys(sandbox, bucket) == before and pending_uploads(sandbox, bucket) == []


def test_a_failed_part_aborts_the_multipart_upload(
    sandbox: Sandbox, blocks: tuple[str, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, bucket = blocks
    before = keys(sandbox, bucket)
    big = tmp_path / "big.db"
    big.write_bytes(os.urandom(12 * 1024 * 1024))  # three 5 MiB parts
    real = backup_store._upload_part

    def flaky(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if kwargs["number"] == 2:
            raise ConnectionError("simulated network failure on part 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(backup_store, "_upload_part", flaky)
    target: BackupBucket = backup_bucket(sandbox, bucket)
    with pytest.raises(ConnectionError, match="part 2"):
        upload_snapshot.fn(target, big, "sandbox/etcd-aborted.db", part_size=5 * 1024 * 1024)
    assert keys(sandbox, bucket) == before and pending_uploads(sandbox, bucket) == []
