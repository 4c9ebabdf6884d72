"""Take an etcd snapshot, prove it reads, record what the cluster held, and ship both to the backup bucket.

The runbook's "regular etcd snapshots", done so a restore can trust them:
1. the bucket is checked first (missing bucket or refused credentials fail before anything is taken);
2. `etcdctl snapshot save` over mutual TLS from the first endpoint that answers;
3. `etcdutl snapshot status`: a file etcd cannot read is never uploaded;
4. the inventory (every object's resource, namespace and name; Secrets by name only) is read from the API
   server *at the snapshot's etcd revision*, so it lists exactly what the snapshot holds;
5. multipart upload with parallel parts and S3-verified SHA-256 checksums, then the manifest beside it
   (cluster identity, revision, hash, size, checksums, tool versions, inventory, time). If the manifest cannot
   be written, the snapshot object is deleted again: a snapshot without a manifest is never left behind.
The flow writes to the bucket only; it changes nothing in the cluster, so it takes no change controls.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows._cluster_source import ClusterSource
from rollbook.artifacts import artifact_key
from rollbook.etcd_backup import ClusterIdentity, Encryption, Manifest, manifest_name, snapshot_name
from rollbook.reports.etcd import SnapshotResult, snapshot_markdown
from rollbook.types import BlockName, DnsLabel, FormOptional, LocalPath
from tasks.backup_store import check_bucket, delete_objects, load_bucket, put_manifest, upload_snapshot
from tasks.cluster import resolve_cluster
from tasks.etcd import endpoint_status, load_endpoint, save_snapshot, snapshot_status, tool_versions
from tasks.inventory import cluster_inventory, kube_system_uid

MIB = 1024 * 1024


class EtcdToolchain(ClusterSource):
    """etcd's own tools on the runner, shared by the snapshot and restore requests."""

    etcdctl_executable: LocalPath = Field(default="etcdctl", description="etcdctl (a path or a name on PATH).")
    etcdutl_executable: LocalPath = Field(default="etcdutl", description="etcdutl (a path or a name on PATH).")


class EtcdSnapshotRequest(EtcdToolchain):
    """Which etcd, which bucket, and how to upload."""

    endpoint_block: BlockName = Field(description="Saved 'Rollbook Etcd Endpoint' block (endpoints, CA, cert, key).")
    bucket_block: BlockName = Field(description="Saved 'Rollbook Backup Bucket' block the snapshots go to.")
    cluster_name: DnsLabel = Field(
        description="The cluster's name in the bucket (snapshots go under <prefix>/<cluster_name>/) and in the "
        "manifest; a restore refuses a snapshot of another name."
    )
    part_size_mib: int = Field(default=16, ge=5, le=5120, description="Multipart part size in MiB (S3: 5 to 5120).")
    upload_concurrency: int = Field(default=8, ge=1, le=32, description="Parts uploaded in parallel.")
    encryption: Encryption = Field(default=Encryption(), description="S3 server-side encryption of both objects.")
    work_dir: FormOptional[LocalPath] = Field(
        default=None, description="Directory for the temporary snapshot file; default: the system's temp dir."
    )


@flow(name="etcd-snapshot")
def etcd_snapshot(request: EtcdSnapshotRequest) -> SnapshotResult:
    """Snapshot, verify, inventory, upload, manifest; a failure at any step leaves nothing in the bucket."""
    log, seconds = get_run_logger(), {}
    endpoint, bucket = load_endpoint(request.endpoint_block), load_bucket(request.bucket_block)
    check_bucket(bucket)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    identity_uid = kube_system_uid(cluster)
    member = endpoint_status(endpoint, request.etcdctl_executable)
    tools = tool_versions(request.etcdctl_executable, request.etcdutl_executable)
    with tempfile.TemporaryDirectory(prefix="rollbook-etcd-snapshot-", dir=request.work_dir) as tmp:
        started = time.monotonic()
        taken_at = dt.datetime.now(dt.UTC)
        path = save_snapshot(endpoint, request.etcdctl_executable, member["endpoint"], Path(tmp) / "snapshot.db")
        seconds["snapshot"] = time.monotonic() - started
        started = time.monotonic()
        status = snapshot_status(path, request.etcdutl_executable)
        seconds["verify"] = time.monotonic() - started
        started = time.monotonic()
        inventory = cluster_inventory(cluster, str(status.revision))
        seconds["inventory"] = time.monotonic() - started
        name = f"{request.cluster_name}/{snapshot_name(taken_at, status.revision)}"
        started = time.monotonic()
        checksum = upload_snapshot(
            bucket, path, name, part_size=request.part_size_mib * MIB,
            concurrency=request.upload_concurrency, encryption=request.encryption,
        )  # fmt: skip
    manifest = Manifest(
        name=name.rsplit("/", 1)[-1],
        cluster=ClusterIdentity(
            name=request.cluster_name, kube_system_uid=identity_uid, etcd_cluster_id=member["cluster_id"]
        ),
        taken_at=taken_at,
        etcd=status,
        object=checksum,
        tools={**tools, "etcd-server": member["version"]},
        inventory=inventory,
        encryption=request.encryption,
    )
    try:
        manifest_key = put_manifest(bucket, manifest_name(name), manifest.to_json(), encryption=request.encryption)
    except Exception:
        delete_objects(bucket, [name])  # never leave a snapshot no restore would trust
        raise
    seconds["upload"] = time.monotonic() - started
    result = SnapshotResult(
        name=manifest.name,
        snapshot_key=name,
        manifest_key=manifest_key,
        cluster=request.cluster_name,
        revision=status.revision,
        etcd_hash=status.hash,
        total_keys=status.total_keys,
        size=checksum.size,
        sha256=checksum.sha256,
        s3_checksum_sha256=checksum.s3_checksum_sha256,
        parts=checksum.parts,
        objects=inventory.total,
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )
    create_markdown_artifact(
        snapshot_markdown(result, manifest),
        key=artifact_key("etcd-snapshot", request.cluster_name),
        description=f"etcd snapshot of {request.cluster_name}",
    )
    log.info("stored %s (revision %d, %d bytes, %d objects)", name, status.revision, checksum.size, inventory.total)
    return result
