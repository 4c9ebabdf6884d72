"""Full cluster restore from an etcd snapshot: the runbook's last line of defence, in the order that keeps a bad
snapshot from ever reaching etcd.

1. Choose the newest verified snapshot of the cluster, or the one named; download it.
2. Verify before touching anything: the manifest exists and names this snapshot and this cluster (name, and the
   live kube-system UID when the API answers), the file's size and SHA-256 match it, and `etcdutl snapshot
   status` reads the same hash and revision. Any failure refuses the run with every reason; nothing is stopped.
3. Evidence for the approver: snapshot time and revision, and the inventory diff against the live cluster
   (what comes back, what disappears). Plan mode stops here; approval is asked when required.
4. `etcdutl snapshot restore --bump-revision N --mark-compacted` into a new directory beside etcd's (the
   cluster still serves meanwhile), then through the control-plane driver: stop the API servers, stop etcd,
   swap the data directories, start etcd (if it does not start, the old data goes back and the control plane
   is restarted on it), start the API servers, wait for /readyz.
5. Verify: every object of the snapshot's inventory is served again, objects created after the snapshot are
   gone (named in the report), every Deployment is available. Time to recover is reported per phase.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from blocks import BackupBucket, KubernetesCluster
from flows.etcd_snapshot import EtcdToolchain
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, not_approved_state, request_approval
from rollbook.etcd_backup import (
    DEFAULT_BUMP_REVISION,
    Inventory,
    InventoryDiff,
    Manifest,
    inventory_diff,
    missing_after_restore,
    stamp,
    verification_problems,
)
from rollbook.reports.etcd import RestoreResult, restore_evidence_markdown, restore_result_markdown
from rollbook.retention import SnapshotRecord
from rollbook.types import BlockName, DnsLabel, FormOptional, LocalPath
from tasks.backup_store import download, load_bucket, sha256_file
from tasks.cluster import resolve_cluster
from tasks.controlplane import ControlPlane
from tasks.etcd import EtcdError, restore_snapshot, snapshot_status
from tasks.inventory import cluster_inventory, kube_system_uid
from tasks.restore import (
    annotate_kube_system,
    api_ready_now,
    control_plane_step,
    put_back_data_dir,
    restored_dir,
    swap_data_dir,
    wait_deployments_available,
    wait_ready,
)
from tasks.snapshot_catalogue import catalogue_snapshots


class SnapshotRefused(ValueError):
    """The snapshot failed a check before anything was touched; the message lists every reason."""


class RestoreIncomplete(RuntimeError):
    """The restore ran but the cluster does not serve everything the snapshot held (named in the message)."""


class EtcdRestoreRequest(EtcdToolchain):
    """Which snapshot, which bucket, and how this cluster's control plane is stopped and started."""

    bucket_block: BlockName = Field(description="Saved 'Rollbook Backup Bucket' block holding the snapshots.")
    cluster_name: DnsLabel = Field(description="The cluster being restored; snapshots of another name are refused.")
    snapshot: FormOptional[str] = Field(
        default=None,
        pattern=r"^etcd-\d{8}T\d{6}Z-r\d+\.db$",
        max_length=64,
        description="A snapshot's name (etcd-<time>-r<revision>.db); empty: the newest verified one.",
    )
    control_plane: ControlPlane = Field(description="The control-plane driver and the etcd member to recreate.")
    bump_revision: int = Field(
        default=DEFAULT_BUMP_REVISION, ge=1, le=10**12, description="etcdutl --bump-revision (with --mark-compacted)."
    )
    ready_timeout_seconds: int = Field(default=300, ge=10, le=3600, description="Wait for /readyz after restart.")
    deployments_timeout_seconds: int = Field(default=300, ge=0, le=3600, description="Wait for Deployments.")
    work_dir: FormOptional[LocalPath] = Field(
        default=None, description="Where the snapshot is downloaded; default: temp."
    )


def _choose(bucket: BackupBucket, request: EtcdRestoreRequest) -> tuple[SnapshotRecord, Manifest]:
    snapshots = catalogue_snapshots(bucket, request.cluster_name)
    if request.snapshot:
        wanted = f"{request.cluster_name}/{request.snapshot}"
        found = [(r, m) for r, m in snapshots if r.name == wanted]
        if not found:
            raise SnapshotRefused(f"no snapshot {wanted!r} in the bucket; nothing was touched")
    else:
        found = [(r, m) for r, m in reversed(snapshots) if r.verified]
        if not found:
            raise SnapshotRefused(f"no verified snapshot of {request.cluster_name!r} in the bucket; nothing touched")
    record, manifest = found[0]
    if record.problem or manifest is None:
        raise SnapshotRefused(f"snapshot {record.name} is refused: {record.problem}; nothing was touched")
    return record, manifest


def _live(cluster: KubernetesCluster) -> tuple[str | None, Inventory | None]:
    """The live cluster's identity and inventory, or Nones when its API does not answer (etcd lost)."""
    if not api_ready_now(cluster):
        get_run_logger().warning("the live cluster's API server is not ready: no diff against it")
        return None, None
    try:
        uid = kube_system_uid.with_options(retries=0)(cluster)
        return uid, cluster_inventory.with_options(retries=0)(cluster)
    except Exception as exc:  # any failure to read the live cluster just means there is nothing to compare
        get_run_logger().warning("the live cluster could not be read (%s): no diff against it", exc)
        return None, None


def _verify(
    request: EtcdRestoreRequest, record: SnapshotRecord, manifest: Manifest, path: Path, uid: str | None
) -> None:
    status = None
    try:
        status = snapshot_status(path, request.etcdutl_executable)
    except Exception as exc:
        problems = [f"etcdutl cannot read the file: {exc}"]
    else:
        problems = verification_problems(
            manifest, expected_name=record.name.rsplit("/", 1)[-1], cluster_name=request.cluster_name,
            live_kube_system_uid=uid, size=path.stat().st_size, sha256=sha256_file(path), status=status,
        )  # fmt: skip
    if problems:
        raise SnapshotRefused(f"snapshot {record.name} is refused (nothing was touched): " + "; ".join(problems))


def _restart(
    request: EtcdRestoreRequest, cluster: KubernetesCluster, path: Path, run_stamp: str, seconds: dict[str, float]
) -> Path:
    """Restore the data, then stop, swap, start; returns where the old data went."""
    cfg, member = request.control_plane, request.control_plane.etcd_member
    started, target = time.monotonic(), restored_dir(member, run_stamp)
    try:
        restored = restore_snapshot(
            path, request.etcdutl_executable, data_dir=target, member_name=member.name,
            initial_cluster=member.initial_cluster, initial_advertise_peer_urls=member.initial_advertise_peer_urls,
            bump_revision=request.bump_revision,
        )  # fmt: skip
    except EtcdError as exc:  # nothing is stopped yet: the cluster still runs on its own data
        shutil.rmtree(target, ignore_errors=True)
        raise SnapshotRefused(f"etcdutl could not restore the snapshot ({exc}); nothing was touched") from None
    seconds["restore data"] = time.monotonic() - started
    seconds["stop controllers"] = control_plane_step(cfg, "stop_controllers")
    seconds["stop API servers"] = control_plane_step(cfg, "stop_api_servers")
    seconds["stop etcd"] = control_plane_step(cfg, "stop_etcd")
    previous = swap_data_dir(member, restored, run_stamp)
    try:
        seconds["start etcd"] = control_plane_step(cfg, "start_etcd")
    except Exception:
        get_run_logger().error("etcd did not start on the restored data: putting the old data back")
        put_back_data_dir(member, previous, run_stamp)
        for step in ("start_etcd", "start_api_servers", "start_controllers"):
            control_plane_step(cfg, step)
        raise
    seconds["start API servers"] = control_plane_step(cfg, "start_api_servers")
    seconds["ready"] = wait_ready(cluster, request.ready_timeout_seconds)
    seconds["start controllers"] = control_plane_step(cfg, "start_controllers")
    return previous


def _check_after(
    request: EtcdRestoreRequest, cluster: KubernetesCluster, manifest: Manifest, diff: InventoryDiff | None,
    seconds: dict[str, float],
) -> tuple[list[str], list[str], list[str]]:  # fmt: skip
    seconds["deployments available"], waiting = wait_deployments_available(cluster, request.deployments_timeout_seconds)
    started = time.monotonic()
    after = cluster_inventory(cluster)
    missing = missing_after_restore(manifest.inventory, after)
    still = set(inventory_diff(after, Inventory()).come_back)
    disappeared = [label for label in (diff.disappear if diff else []) if label not in still]
    seconds["verify inventory"] = time.monotonic() - started
    return missing, disappeared, waiting


@flow(name="etcd-restore")
def etcd_restore(request: EtcdRestoreRequest, controls: ChangeControls) -> RestoreResult | State[RestoreResult]:
    """Verify, show the evidence, (approve,) restore through the driver, verify the restored cluster."""
    try:
        return _restore(request, controls)
    except SnapshotRefused as exc:
        refused = RestoreResult(
            outcome="unchanged", summary=str(exc), snapshot=request.snapshot or "", revision=0, taken_at="",
            refused=[str(exc)],
        )  # fmt: skip
        key = artifact_key("etcd-restore", request.cluster_name)
        create_markdown_artifact(restore_result_markdown(refused), key=key, description="etcd restore refused")
        raise


def _restore(request: EtcdRestoreRequest, controls: ChangeControls) -> RestoreResult | State[RestoreResult]:
    log, seconds = get_run_logger(), {}
    key = artifact_key("etcd-restore", request.cluster_name)
    bucket = load_bucket(request.bucket_block)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    record, manifest = _choose(bucket, request)
    base: dict[str, object] = {
        "snapshot": record.name,
        "revision": manifest.etcd.revision,
        "taken_at": manifest.taken_at.isoformat(),
    }
    with tempfile.TemporaryDirectory(prefix="rollbook-etcd-restore-", dir=request.work_dir) as tmp:
        started = time.monotonic()
        path = download(bucket, record.name, Path(tmp) / "snapshot.db")
        seconds["download"] = time.monotonic() - started
        uid, live = _live(cluster)
        started = time.monotonic()
        _verify(request, record, manifest, path, uid)
        seconds["verify"] = time.monotonic() - started
        diff = inventory_diff(manifest.inventory, live) if live is not None else None
        evidence = restore_evidence_markdown(manifest, diff, driver=request.control_plane.kind)
        if controls.plan:
            create_markdown_artifact(evidence, key=key, description="etcd restore plan")
            summary = f"plan: restore {record.name} (revision {manifest.etcd.revision}); nothing was touched"
            extra = {"come_back": diff.come_back, "disappeared": diff.disappear} if diff else {}
            return RestoreResult.model_validate({"outcome": "planned", "summary": summary, **base, **extra})
        decision = request_approval(controls, evidence)
        if not decision.approved:
            summary = f"not approved: {decision.comment}; nothing was touched"
            result = RestoreResult.model_validate({"outcome": "not-approved", "summary": summary, **base})
            return not_approved_state(result, decision)
        run_stamp = stamp(dt.datetime.now(dt.UTC))
        previous = _restart(request, cluster, path, run_stamp, seconds)
    missing, disappeared, waiting = _check_after(request, cluster, manifest, diff, seconds)
    annotate_kube_system(cluster, change_annotations(controls, "etcd-restore", snapshot=record.name))
    result = RestoreResult.model_validate(
        {
            "outcome": "changed",
            "summary": f"restored {request.cluster_name} from {record.name} in {sum(seconds.values()):.1f}s; "
            f"{len(missing)} object(s) missing, {len(waiting)} Deployment(s) unavailable",
            "approval": decision.comment,
            "come_back": diff.come_back if diff else [],
            "disappeared": disappeared,
            "missing": missing,
            "previous_data_dir": str(previous) if previous.exists() else None,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            **base,
        }
    )
    create_markdown_artifact(restore_result_markdown(result), key=key, description="etcd restore")
    log.info(result.summary)
    if missing or waiting:
        raise RestoreIncomplete(f"{result.summary}: missing {missing[:20]}, unavailable Deployments {waiting[:20]}")
    return result
