"""What an etcd snapshot backup is, as data: its `snapshot status`, the cluster inventory taken with it, the
manifest stored beside it, how objects are named, and the checks a restore makes before touching anything.

Pure and unit-tested: the tasks (tasks/etcd.py, tasks/backup_store.py, tasks/inventory.py) produce these
values, the flows decide with them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollbook.types import FormOptional

MANIFEST_FORMAT = 1
SNAPSHOT_SUFFIX = ".db"
MANIFEST_SUFFIX = ".manifest.json"
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^etcd-(\d{8}T\d{6}Z)-r(\d+)\.db$")
# resources whose objects come and go on their own (events expire, leases are renewed): never in an inventory
VOLATILE_RESOURCES = frozenset({"events", "events.events.k8s.io"})
# `etcdutl snapshot restore --bump-revision`: past anything a client may have seen since the snapshot (etcd's
# guidance is a large margin, e.g. a billion), so watches and informers see newer revisions and re-list
# instead of silently missing changes; with --mark-compacted, older revisions read as compacted.
DEFAULT_BUMP_REVISION = 1_000_000_000


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not belong to the snapshot beside it."""


class SnapshotStatus(BaseModel):
    """`etcdutl snapshot status -w json`: what the file holds, checked before it is uploaded and after download."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    hash: int = Field(description="etcd's hash of the key space in the file.")
    revision: int = Field(ge=0)
    total_keys: int = Field(alias="totalKey", ge=0)
    total_size: int = Field(alias="totalSize", ge=0)
    version: str = Field(default="", description="The storage version etcd wrote the file with.")


def parse_snapshot_status(text: str) -> SnapshotStatus:
    """etcdutl's JSON output; anything else is a clear error naming what was printed."""
    try:
        return SnapshotStatus.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise ValueError(f"etcdutl snapshot status printed something that is not its status: {text[:200]!r}") from exc


class Inventory(BaseModel):
    """The objects a cluster holds: resource ('deployments.apps', 'secrets') -> namespace ('' when cluster-scoped)
    -> sorted names. Names only: a Secret's data never leaves the cluster (the listing asks for metadata only)."""

    model_config = ConfigDict(frozen=True)

    resources: dict[str, dict[str, list[str]]] = Field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {res: sum(len(names) for names in by_ns.values()) for res, by_ns in sorted(self.resources.items())}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def object_keys(self, *, skip: frozenset[str] = frozenset()) -> set[tuple[str, str, str]]:
        """(resource, namespace, name) for every object, leaving out `skip` resources."""
        return {
            (res, ns, name)
            for res, by_ns in self.resources.items()
            if res not in skip
            for ns, names in by_ns.items()
            for name in names
        }


class InventoryDiff(BaseModel):
    """What a restore of the snapshot would do to the live cluster's objects (or what it did not bring back)."""

    model_config = ConfigDict(frozen=True)

    come_back: list[str] = Field(description="In the snapshot, not live: the restore brings them back.")
    disappear: list[str] = Field(description="Live, not in the snapshot: the restore removes them.")

    @property
    def empty(self) -> bool:
        return not self.come_back and not self.disappear


def object_label(key: tuple[str, str, str]) -> str:
    resource, namespace, name = key
    return f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"


def inventory_diff(snapshot: Inventory, live: Inventory, *, skip: frozenset[str] = VOLATILE_RESOURCES) -> InventoryDiff:
    """Objects the snapshot has and the live cluster lacks, and the other way round, by resource/namespace/name."""
    ours, theirs = snapshot.object_keys(skip=skip), live.object_keys(skip=skip)
    return InventoryDiff(
        come_back=[object_label(k) for k in sorted(ours - theirs)],
        disappear=[object_label(k) for k in sorted(theirs - ours)],
    )


def missing_after_restore(
    snapshot: Inventory, live: Inventory, *, skip: frozenset[str] = VOLATILE_RESOURCES
) -> list[str]:
    """Objects of the snapshot's inventory that the restored cluster does not serve: each one is a lost object."""
    return [object_label(k) for k in sorted(snapshot.object_keys(skip=skip) - live.object_keys(skip=skip))]


class ClusterIdentity(BaseModel):
    """Which cluster a snapshot belongs to: the name the team gives it and the kube-system namespace's UID,
    which the API server creates once per cluster and an etcd restore brings back unchanged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kube_system_uid: str = ""
    etcd_cluster_id: str = ""


class ObjectChecksum(BaseModel):
    """The uploaded object: size, whole-file SHA-256 (hex) and S3's composite SHA-256 of the parts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    s3_checksum_sha256: str = Field(description="base64 SHA-256 of the parts' SHA-256 digests, '-<parts>' appended.")
    part_size: int = Field(ge=1)
    parts: int = Field(ge=1)


class Encryption(BaseModel):
    """Server-side encryption asked of S3 for the snapshot and its manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    mode: Literal["none", "AES256", "aws:kms"] = Field(default="none", description="S3 server-side encryption.")
    kms_key_id: FormOptional[str] = Field(default=None, max_length=2048, description="KMS key for aws:kms (optional).")

    def s3_args(self) -> dict[str, str]:
        if self.mode == "none":
            return {}
        args: dict[str, str] = {"ServerSideEncryption": self.mode}
        if self.mode == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


class Manifest(BaseModel):
    """Stored beside every snapshot; a restore trusts a snapshot only when its manifest reads, matches the object
    and names the cluster being restored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = MANIFEST_FORMAT
    name: str = Field(description="The snapshot's name (its key's last part).")
    cluster: ClusterIdentity
    taken_at: dt.datetime
    etcd: SnapshotStatus
    object: ObjectChecksum
    tools: dict[str, str] = Field(description="Versions of the programs that took and checked the snapshot.")
    inventory: Inventory
    encryption: Encryption = Encryption()

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=1).encode()


def parse_manifest(data: bytes, *, where: str) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "document"
        raise ManifestError(f"manifest {where} is unreadable ({field}: {first['msg']})") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ManifestError(f"manifest {where} has format {manifest.format}; this rollbook reads {MANIFEST_FORMAT}")
    return manifest


def snapshot_name(taken_at: dt.datetime, revision: int) -> str:
    """Names sort by time (S3 lists keys in lexical order) and carry the revision a person looks for."""
    return f"etcd-{taken_at.astimezone(dt.UTC).strftime(_STAMP)}-r{revision}{SNAPSHOT_SUFFIX}"


def parse_snapshot_name(name: str) -> tuple[dt.datetime, int] | None:
    """(time taken, revision) of a name `snapshot_name` made; None for any other object."""
    match = _NAME_RE.match(name)
    if not match:
        return None
    return dt.datetime.strptime(match[1], _STAMP).replace(tzinfo=dt.UTC), int(match[2])


def manifest_name(snapshot: str) -> str:
    return snapshot.removesuffix(SNAPSHOT_SUFFIX) + MANIFEST_SUFFIX


def composite_sha256(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object uploaded with ChecksumAlgorithm=SHA256: the SHA-256 of the parts'
    binary digests in order, base64, with '-<number of parts>'."""
    combined = hashlib.sha256(b"".join(part_digests)).digest()
    return f"{base64.b64encode(combined).decode()}-{len(part_digests)}"


def same_s3_checksum(expected: str, reported: str | None) -> bool:
    """S3 reports a composite checksum with its '-N' suffix; some S3-compatible stores (moto) leave it off."""
    if not reported:
        return False
    return reported == expected or reported == expected.rsplit("-", 1)[0]


def verification_problems(
    manifest: Manifest,
    *,
    expected_name: str,
    cluster_name: str,
    live_kube_system_uid: str | None,
    size: int,
    sha256: str,
    status: SnapshotStatus,
) -> list[str]:
    """Every reason not to restore this downloaded snapshot; empty means it is the file its manifest describes,
    etcd reads it, and it belongs to the cluster being restored."""
    problems = []
    if manifest.name != expected_name:
        problems.append(f"the manifest describes {manifest.name!r}, not {expected_name!r}")
    if manifest.cluster.name != cluster_name:
        problems.append(f"the snapshot is of cluster {manifest.cluster.name!r}, not {cluster_name!r}")
    uid = manifest.cluster.kube_system_uid
    if live_kube_system_uid and uid and uid != live_kube_system_uid:
        problems.append(
            f"the snapshot's kube-system namespace has UID {uid}, the live cluster's is {live_kube_system_uid}: "
            "it was taken of another cluster"
        )
    if size != manifest.object.size:
        problems.append(f"the file has {size} bytes, the manifest says {manifest.object.size} (truncated or padded)")
    if sha256 != manifest.object.sha256:
        problems.append(f"the file's SHA-256 is {sha256}, the manifest says {manifest.object.sha256}")
    if status.hash != manifest.etcd.hash or status.revision != manifest.etcd.revision:
        problems.append(
            f"etcdutl reads hash {status.hash} at revision {status.revision}, the manifest recorded hash "
            f"{manifest.etcd.hash} at revision {manifest.etcd.revision}"
        )
    return problems


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_STAMP)


def inventory_from_listing(listing: dict[str, list[tuple[str, str]]]) -> Inventory:
    """(namespace, name) pairs per resource into an Inventory (sorted, so two listings compare equal)."""
    resources: dict[str, dict[str, list[str]]] = {}
    for resource, items in listing.items():
        by_ns: dict[str, list[str]] = {}
        for namespace, name in items:
            by_ns.setdefault(namespace, []).append(name)
        resources[resource] = {ns: sorted(names) for ns, names in sorted(by_ns.items())}
    return Inventory(resources=dict(sorted(resources.items())))


def summary_counts(inventory: Inventory, *, top: int = 12) -> list[dict[str, Any]]:
    """The largest resource types first, for a report's table."""
    counts = sorted(inventory.counts().items(), key=lambda item: (-item[1], item[0]))
    return [{"resource": res, "objects": n} for res, n in counts[:top]]
