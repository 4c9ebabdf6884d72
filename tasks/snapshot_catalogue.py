"""The snapshots of one cluster in a BackupBucket, each with its manifest checked against its object.

A snapshot is *verified* when its manifest exists, parses, names it, and matches what S3 holds (size and S3's
SHA-256 checksum). Retention keeps unverified snapshots (and says why); a restore uses only verified ones.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from prefect import task

from blocks import BackupBucket
from rollbook.etcd_backup import (
    Manifest,
    ManifestError,
    manifest_name,
    parse_manifest,
    parse_snapshot_name,
    same_s3_checksum,
)
from rollbook.retention import SnapshotRecord
from tasks.backup_store import _error, _s3, list_objects, object_key
from tasks.policies import S3_READ


def _check(
    bucket: BackupBucket, name: str, size: int, manifests: dict[str, bytes]
) -> tuple[Manifest | None, str | None]:
    data = manifests.get(manifest_name(name))
    if data is None:
        return None, "manifest missing"
    try:
        manifest = parse_manifest(data, where=manifest_name(name))
    except ManifestError as exc:
        return None, str(exc)
    if manifest.name != name.rsplit("/", 1)[-1]:
        return None, f"the manifest describes {manifest.name!r}"
    if manifest.object.size != size:
        return manifest, f"the object has {size} bytes, the manifest says {manifest.object.size}"
    try:
        head = _s3(bucket).head_object(
            Bucket=bucket.bucket.bucket_name, Key=object_key(bucket, name), ChecksumMode="ENABLED"
        )
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, f"reading the checksum of {name}", bucket) from None
    if not same_s3_checksum(manifest.object.s3_checksum_sha256, head.get("ChecksumSHA256")):
        return manifest, "S3's checksum of the object differs from the manifest's"
    return manifest, None


@task(**S3_READ)
def catalogue_snapshots(bucket: BackupBucket, cluster_name: str) -> list[tuple[SnapshotRecord, Manifest | None]]:
    """Every snapshot of `cluster_name`, oldest first, with its manifest when it reads."""
    prefix = f"{cluster_name}/"
    objects = [o for o in list_objects(bucket) if o.name.startswith(prefix)]
    sizes = {o.name: o.size for o in objects if parse_snapshot_name(o.name[len(prefix) :])}
    manifests = {}
    for o in objects:
        if o.name.endswith(".manifest.json") and manifest_name(o.name.replace(".manifest.json", ".db")) == o.name:
            try:
                body = _s3(bucket).get_object(Bucket=bucket.bucket.bucket_name, Key=object_key(bucket, o.name))
                manifests[o.name] = body["Body"].read()
            except (ClientError, BotoCoreError) as exc:  # one clear error (a refused key is not retried)
                raise _error(exc, f"reading {o.name}", bucket) from None
    found = []
    for name, size in sorted(sizes.items()):
        parsed = parse_snapshot_name(name[len(prefix) :])
        assert parsed is not None
        manifest, problem = _check(bucket, name, size, manifests)
        found.append((SnapshotRecord(name=name, taken_at=parsed[0], problem=problem), manifest))
    return found
