"""etcd-restore on a sandbox of its own (etcd, the Kubernetes control plane, kwok, moto's S3): the restore stops
and restarts etcd and the API server, so it never runs on the session's sandbox that other tests share.

One snapshot is taken at the start; then refusals (nothing stopped, nothing changed), plan, a rejected approval,
and finally the real restore: namespaces deleted after the snapshot come back with their Deployments available,
an object created after the snapshot is gone and named, and a new rollout after the restore completes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PORT_START
from etcd_helpers import backup_bucket, s3_client, save_blocks, snapshot_request
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.etcd_restore import EtcdRestoreRequest, SnapshotRefused, etcd_restore
from flows.etcd_snapshot import EtcdSnapshotRequest, etcd_snapshot
from rollbook.change import ChangeControls
from rollbook.etcd_backup import manifest_name
from rollbook.reports.etcd import SnapshotResult
from sandbox.cluster import Sandbox
from sandbox.config import PORT_BLOCK, SandboxConfig, free_base_port
from sandbox.services import wait_until
from tasks.backup_store import put_manifest, upload_snapshot

CONTROLS = ChangeControls(reason="drill: restore the cluster from etcd", requested_by="pytest")
KEPT = ("dr-shop", "dr-billing")  # namespaces in the snapshot, deleted before the restore
PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def dr(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if request.config.getoption("--unit"):
        pytest.skip("--unit given: the restore tests need their own sandbox")
    base = free_base_port(TEST_PORT_START + 2 * PORT_BLOCK)
    sb = Sandbox(SandboxConfig(work_dir=tmp_path_factory.mktemp("dr-sandbox"), base_port=base))
    try:
        sb.up_control_plane(nodes=2)
        yield sb
    finally:
        sb.down()


def _deployment(apps: client.AppsV1Api, namespace: str, name: str, replicas: int = 2) -> None:
    labels = {"app": name}
    container = {"name": name, "image": "127.0.0.1/rollbook/demo-app:1.0.0"}
    spec = {"replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}  # fmt: skip
    apps.create_namespaced_deployment(namespace, {"metadata": {"name": name}, "spec": spec})


def _available(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    try:
        dep = apps.read_namespaced_deployment(namespace=namespace, name=name)
    except ApiException:
        return False
    status = dep.status
    return (
        (status.observed_generation or 0) >= dep.metadata.generation
        and (status.updated_replicas or 0) == dep.spec.replicas
        and (status.available_replicas or 0) == dep.spec.replicas
    )


@pytest.fixture(scope="module")
def taken(dr: Sandbox) -> dict[str, Any]:
    """The workload, the blocks and one snapshot of it."""
    core, apps = client.CoreV1Api(dr.api_client()), client.AppsV1Api(dr.api_client())
    for ns in KEPT:
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"mode": "live"}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "token"}, "stringData": {"t": "x"}})
        _deployment(apps, ns, "web")
    for ns in KEPT:
        wait_until(lambda ns=ns: _available(apps, ns, "web"), 120, f"{ns}/web available")
    endpoint, bucket_block, bucket = save_blocks(dr, "dr")
    result = etcd_snapshot(EtcdSnapshotRequest.model_validate(snapshot_request(dr, endpoint, bucket_block)))
    return {"bucket_block": bucket_block, "bucket": bucket, "result": result}


def _request(dr: Sandbox, taken: dict[str, Any], **extra: Any) -> EtcdRestoreRequest:
    result: SnapshotResult = taken["result"]
    return EtcdRestoreRequest.model_validate(
        {
            "bucket_block": taken["bucket_block"],
            "cluster_name": "sandbox",
            "snapshot": result.name,
            "kubeconfig_path": str(dr.cfg.kubeconfig),
            "etcdctl_executable": str(dr.bins / "etcdctl"),
            "etcdutl_executable": str(dr.bins / "etcdutl"),
            "control_plane": dr.restore_control_plane(),
            "deployments_timeout_seconds": 180,
            **extra,
        }
    )


def _control_plane_state(dr: Sandbox) -> tuple[Any, ...]:
    """What must not change when a restore is refused: the processes and etcd's data directory."""
    data = dr.cfg.work_dir / "etcd"
    return (
        dr.supervisor.pid("etcd"),
        dr.supervisor.pid("kube-apiserver"),
        data.stat().st_ino,
        sorted(p.name for p in data.parent.iterdir() if p.name.startswith("etcd.")),
    )


# -- corruptions: each changes the stored snapshot or its manifest; the fixture puts the originals back ------


def _objects(dr: Sandbox, taken: dict[str, Any]) -> tuple[str, str]:
    name = taken["result"].snapshot_key
    return f"etcd/{name}", f"etcd/{manifest_name(name)}"


def _get(dr: Sandbox, taken: dict[str, Any], key: str) -> bytes:
    return bytes(s3_client(dr).get_object(Bucket=taken["bucket"], Key=key)["Body"].read())


def _reupload(dr: Sandbox, taken: dict[str, Any], data: bytes, tmp: Path) -> Any:
    """Upload other bytes under the snapshot's name the way the flow does (valid S3 part checksums)."""
    path = tmp / "changed.db"
    path.write_bytes(data)
    return upload_snapshot.fn(backup_bucket(dr, taken["bucket"]), path, taken["result"].snapshot_key, part_size=PART)


def _rewrite_manifest(dr: Sandbox, taken: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    _, manifest_key = _objects(dr, taken)
    doc = json.loads(_get(dr, taken, manifest_key))
    change(doc)
    name = manifest_name(taken["result"].snapshot_key)
    put_manifest.fn(backup_bucket(dr, taken["bucket"]), name, json.dumps(doc).encode())


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def corrupt(case: str, dr: Sandbox, taken: dict[str, Any], tmp: Path) -> None:
    snapshot_key, manifest_key = _objects(dr, taken)
    data, s3 = _get(dr, taken, snapshot_key), s3_client(dr)
    if case == "truncated":
        s3.put_object(Bucket=taken["bucket"], Key=snapshot_key, Body=data[: len(data) // 2])
    elif case == "flipped byte":
        _reupload(dr, taken, _flip(data), tmp)
    elif case == "checksum metadata":
        _rewrite_manifest(dr, taken, lambda doc: doc["object"].update(sha256="0" * 64))
    elif case == "other cluster":
        _rewrite_manifest(dr, taken, lambda doc: doc["cluster"].update(kube_system_uid="uid-of-another-cluster"))
    elif case == "missing manifest":
        s3.delete_object(Bucket=taken["bucket"], Key=manifest_key)
    elif case == "corrupt but consistent metadata":  # checksums recomputed: only etcd's own check can tell
        checksum = _reupload(dr, taken, _flip(data), tmp)
        _rewrite_manifest(dr, taken, lambda doc: doc.update(object=checksum.model_dump()))


@pytest.fixture
def restored_objects(dr: Sandbox, taken: dict[str, Any], tmp_path: Path) -> Iterator[None]:
    snapshot_key, manifest_key = _objects(dr, taken)
    original, manifest = _get(dr, taken, snapshot_key), _get(dr, taken, manifest_key)
    yield
    _reupload(dr, taken, original, tmp_path)
    put_manifest.fn(backup_bucket(dr, taken["bucket"]), manifest_name(taken["result"].snapshot_key), manifest)
    assert hashlib.sha256(_get(dr, taken, snapshot_key)).hexdigest() == taken["result"].sha256


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("truncated", "bytes, the manifest says"),
        ("flipped byte", "S3's checksum of the object differs"),
        ("checksum metadata", "SHA-256 is"),
        ("other cluster", "taken of another cluster"),
        ("missing manifest", "manifest missing"),
        ("corrupt but consistent metadata", "SHA-256 embedded in the snapshot does not match"),
    ],
)
def test_corrupt_input_is_refused_and_nothing_is_stopped_or_changed(
    dr: Sandbox, taken: dict[str, Any], restored_objects: None, tmp_path: Path, case: str, reason: str
) -> None:
    before = _control_plane_state(dr)
    corrupt(case, dr, taken, tmp_path)
    with pytest.raises(SnapshotRefused, match=reason) as refused:
        etcd_restore(_request(dr, taken), CONTROLS)
    assert "nothing" in str(refused.value)
    assert _control_plane_state(dr) == before
    assert client.VersionApi(dr.api_client()).get_code().git_version  # the API server kept serving


def test_plan_shows_what_comes_back_and_changes_nothing(dr: Sandbox, taken: dict[str, Any]) -> None:
    core = client.CoreV1Api(dr.api_client())
    core.create_namespace({"metadata": {"name": "dr-plan-only"}})
    before = _control_plane_state(dr)
    result = etcd_restore(_request(dr, taken), CONTROLS.model_copy(update={"plan": True}))
    assert result.outcome == "planned" and "namespaces dr-plan-only" in result.disappeared
    assert _control_plane_state(dr) == before
    core.delete_namespace("dr-plan-only")


def test_a_rejected_approval_changes_nothing(dr: Sandbox, taken: dict[str, Any]) -> None:
    from helm_helpers import resume, wait_paused

    controls = CONTROLS.model_copy(update={"require_approval": True, "approval_poll_seconds": 1})
    before = _control_plane_state(dr)
    out: dict[str, Any] = {}
    import threading

    thread = threading.Thread(target=lambda: out.update(result=etcd_restore(_request(dr, taken), controls)))
    thread.start()
    run = wait_paused(timeout=120)
    resume(run.id, {"approved": False, "comment": "not during business hours"})
    thread.join(120)
    assert out["result"].outcome == "not-approved" and _control_plane_state(dr) == before


def test_restore_brings_back_deleted_namespaces_and_removes_later_objects(dr: Sandbox, taken: dict[str, Any]) -> None:
    core, apps = client.CoreV1Api(dr.api_client()), client.AppsV1Api(dr.api_client())
    for ns in KEPT:
        core.delete_namespace(ns)
    core.create_namespace({"metadata": {"name": "dr-after"}})
    core.create_namespaced_config_map("dr-after", {"metadata": {"name": "made-after"}})
    for ns in KEPT:
        wait_until(lambda ns=ns: ns not in {n.metadata.name for n in core.list_namespace().items}, 120, f"{ns} gone")
    etcd_pid = dr.supervisor.pid("etcd")

    started = time.monotonic()
    result = etcd_restore(_request(dr, taken), CONTROLS)
    print(f"restore took {time.monotonic() - started:.1f}s; phases: {result.seconds}")

    assert result.outcome == "changed" and result.missing == []
    assert "configmaps dr-after/made-after" in result.disappeared and "namespaces dr-after" in result.disappeared
    assert {f"deployments.apps {ns}/web" for ns in KEPT} <= set(result.come_back)
    assert dr.supervisor.pid("etcd") != etcd_pid and Path(str(result.previous_data_dir)).is_dir()
    core, apps = client.CoreV1Api(dr.api_client()), client.AppsV1Api(dr.api_client())
    names = {n.metadata.name for n in core.list_namespace().items}
    assert set(KEPT) <= names and "dr-after" not in names
    for ns in KEPT:
        assert _available(apps, ns, "web")
        assert core.read_namespaced_config_map("settings", ns).data == {"mode": "live"}
    annotations = core.read_namespace("kube-system").metadata.annotations
    assert annotations["rollbook.dev/action"] == "etcd-restore"
    # watches and controllers work again: a new rollout after the restore completes
    patch = {"spec": {"template": {"metadata": {"annotations": {"rollbook.dev/after-restore": "1"}}}}}
    apps.patch_namespaced_deployment("web", KEPT[0], patch)
    wait_until(lambda: _available(apps, KEPT[0], "web"), 120, "the rollout after the restore")
    rs = apps.list_namespaced_replica_set(KEPT[0]).items
    assert len(rs) == 2 and any((r.status.replicas or 0) == 2 for r in rs)


def test_dr_drill_recovers_from_losing_etcd(dr: Sandbox, taken: dict[str, Any]) -> None:
    """The drill's harder disaster: etcd stopped and its data gone (the API server fails /readyz), then restored."""
    from flows.dr_drill import DrillRequest, dr_drill

    endpoint = "dr-etcd"  # saved by `taken`
    request = DrillRequest.model_validate(
        {
            **snapshot_request(dr, endpoint, taken["bucket_block"]),
            "control_plane": dr.restore_control_plane(),
            "disaster": "lose-etcd",
            "namespaces": 2,
            "configmaps_per_namespace": 3,
            "target_seconds": 3600,  # the benchmark measures the time; a test never asserts on it
        }
    )
    started = time.monotonic()
    result = dr_drill(request, CONTROLS)
    print(f"drill took {time.monotonic() - started:.1f}s; time to recover {result.time_to_recover}s: {result.phases}")
    assert result.outcome == "changed" and result.passed and result.lost == []
    assert result.workload_objects == 2 * (2 + 3)
    wiped = [p.name for p in dr.cfg.work_dir.iterdir() if p.name.startswith(f"etcd.wiped-by-drill-{result.drill}")]
    assert wiped, "the disaster moved etcd's data away"
    core = client.CoreV1Api(dr.api_client())
    drill_namespaces = core.list_namespace(label_selector=f"rollbook.dev/drill={result.drill}").items
    assert drill_namespaces == []  # restored, verified, then cleaned up
    assert set(KEPT) <= {n.metadata.name for n in core.list_namespace().items}
