"""Blocks and S3 access for the etcd backup tests, on any sandbox (the session's or a restore test's own)."""

from __future__ import annotations

import uuid
from typing import Any

import boto3

from blocks import BackupBucket, EtcdEndpoint
from sandbox import datastores
from sandbox.cluster import Sandbox


def s3_client(sandbox: Sandbox) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=datastores.s3_url(sandbox.cfg),
        region_name="us-east-1",
        aws_access_key_id="rollbook-test-key",
        aws_secret_access_key="rollbook-test-secret",
    )


def etcd_endpoint(sandbox: Sandbox, *, client_cert: bool = True, port: int | None = None) -> EtcdEndpoint:
    pki = sandbox.pki
    return EtcdEndpoint(
        endpoints=[f"https://127.0.0.1:{port or sandbox.cfg.port('etcd')}"],
        ca_cert=pki.ca.read_text(),
        client_cert=pki.cert("etcd-client").read_text() if client_cert else None,
        client_key=pki.key("etcd-client").read_text() if client_cert else None,
    )


def backup_bucket(sandbox: Sandbox, bucket: str, prefix: str = "etcd") -> BackupBucket:
    return BackupBucket.s3_compatible(
        bucket_name=bucket,
        endpoint_url=datastores.s3_url(sandbox.cfg),
        access_key_id="rollbook-test-key",
        secret_access_key="rollbook-test-secret",
        region_name="us-east-1",
        prefix=prefix,
    )


def save_blocks(sandbox: Sandbox, tag: str) -> tuple[str, str, str]:
    """A fresh moto bucket and saved endpoint and bucket blocks: (endpoint block, bucket block, bucket name)."""
    bucket = f"rollbook-{tag}-{uuid.uuid4().hex[:6]}"
    s3_client(sandbox).create_bucket(Bucket=bucket)
    etcd_endpoint(sandbox).save(f"{tag}-etcd", overwrite=True)
    backup_bucket(sandbox, bucket).save(f"{tag}-bucket", overwrite=True)
    return f"{tag}-etcd", f"{tag}-bucket", bucket


def keys(sandbox: Sandbox, bucket: str) -> list[str]:
    listed = s3_client(sandbox).list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def pending_uploads(sandbox: Sandbox, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client(sandbox).list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def snapshot_request(sandbox: Sandbox, endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_block": endpoint,
        "bucket_block": bucket,
        "cluster_name": "sandbox",
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "etcdctl_executable": str(sandbox.bins / "etcdctl"),
        "etcdutl_executable": str(sandbox.bins / "etcdutl"),
        "part_size_mib": 5,
        **extra,
    }
