"""The monthly disaster-recovery drill: snapshot, disaster, restore, verify, score.

1. A workload of its own (namespaces labelled with the drill's name, each with ConfigMaps and a Deployment),
   waited until available, then an etcd-snapshot.
2. Approval (when required), then the disaster: the drill's namespaces deleted, or etcd stopped and its data
   directory moved away (the API server then fails /readyz: the whole cluster is down).
3. etcd-restore of the drill's snapshot through the control-plane driver, with all its checks.
4. The score: objects lost (the snapshot's inventory against the restored cluster) and the time to recover,
   against a goal. The drill's namespaces are removed afterwards unless `keep_workload`.

Run it on a sandbox or a staging cluster: the restore returns the *whole* cluster to the drill's snapshot, so
anything changed elsewhere in the cluster during the drill's minute is rolled back too.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from blocks import KubernetesCluster
from flows.etcd_restore import EtcdRestoreRequest, RestoreIncomplete, etcd_restore
from flows.etcd_snapshot import EtcdSnapshotRequest, etcd_snapshot
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, not_approved_state, request_approval, subflow_result
from rollbook.etcd_backup import stamp
from rollbook.reports.etcd import DrillResult, drill_markdown
from tasks.cluster import resolve_cluster
from tasks.controlplane import ControlPlane
from tasks.drill import create_workload, delete_workload, move_etcd_data_away
from tasks.restore import control_plane_step, wait_deployments_available

Disaster = Literal["delete-namespaces", "lose-etcd"]


class DrillRequest(EtcdSnapshotRequest):
    """Where to snapshot to, how the control plane restarts, which disaster, and how big the workload is."""

    control_plane: ControlPlane = Field(description="The control-plane driver and the etcd member to recreate.")
    disaster: Disaster = Field(default="delete-namespaces", description="What the drill breaks.")
    namespaces: int = Field(default=3, ge=1, le=500, description="Namespaces the drill creates.")
    configmaps_per_namespace: int = Field(default=5, ge=0, le=2000, description="ConfigMaps in each of them.")
    replicas: int = Field(default=2, ge=0, le=100, description="Replicas of each namespace's Deployment.")
    target_seconds: int = Field(default=60, ge=1, le=3600, description="Time-to-recover goal.")
    keep_workload: bool = Field(default=False, description="Leave the drill's namespaces after the drill.")


def _restore_request(request: DrillRequest, snapshot: str) -> EtcdRestoreRequest:
    fields = request.model_dump(
        include={"cluster_block", "kubeconfig_path", "context", "etcdctl_executable", "etcdutl_executable",
                 "bucket_block", "cluster_name", "control_plane", "work_dir"}
    )  # fmt: skip
    return EtcdRestoreRequest.model_validate({**fields, "snapshot": snapshot, "deployments_timeout_seconds": 300})


def _disaster(request: DrillRequest, cluster: KubernetesCluster, drill: str) -> None:
    if request.disaster == "delete-namespaces":
        delete_workload(cluster, drill, wait_seconds=300)
    else:
        control_plane_step(request.control_plane, "stop_etcd")
        move_etcd_data_away(request.control_plane.etcd_member, drill)


@flow(name="dr-drill")
def dr_drill(request: DrillRequest, controls: ChangeControls) -> DrillResult | State[DrillResult]:
    """Snapshot, break, restore, verify, score."""
    log = get_run_logger()
    drill = f"drill-{stamp(dt.datetime.now(dt.UTC)).lower()}"
    base = {"drill": drill, "disaster": request.disaster, "target_seconds": request.target_seconds}
    if controls.plan:
        summary = f"plan: create {request.namespaces} namespace(s), snapshot, {request.disaster}, restore; nothing done"
        return DrillResult.model_validate({**base, "outcome": "planned", "summary": summary, "snapshot": "",
            "objects": 0, "workload_objects": 0, "lost": [], "time_to_recover": 0, "passed": False})  # fmt: skip
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    names = create_workload(cluster, drill, namespaces=request.namespaces,
                            configmaps=request.configmaps_per_namespace, replicas=request.replicas)  # fmt: skip
    wait_deployments_available(cluster, 300)
    snapshot = etcd_snapshot(request)
    decision = request_approval(controls, f"# DR drill {drill}\n\nSnapshot `{snapshot.name}` taken; next: "
                                f"**{request.disaster}**, then a full restore of the cluster from it.")  # fmt: skip
    if not decision.approved:
        delete_workload(cluster, drill, wait_seconds=300)
        refused = DrillResult.model_validate({**base, "outcome": "not-approved", "summary": decision.comment,
            "snapshot": snapshot.name, "objects": snapshot.objects, "workload_objects": 0, "lost": [],
            "time_to_recover": 0, "passed": False})  # fmt: skip
        return not_approved_state(refused, decision)
    _disaster(request, cluster, drill)
    started = time.monotonic()
    restore_controls = controls.model_copy(update={"require_approval": False})
    try:
        restored = subflow_result(etcd_restore(_restore_request(request, snapshot.name), restore_controls))
        lost, phases = restored.missing, restored.seconds
    except RestoreIncomplete as exc:
        lost, phases = [str(exc)], {}
    time_to_recover = time.monotonic() - started
    passed = not lost and time_to_recover <= request.target_seconds
    workload = len(names) * (2 + request.configmaps_per_namespace)  # namespace, Deployment, ConfigMaps
    summary = (f"{'passed' if passed else 'failed'}: {request.disaster} recovered in {time_to_recover:.1f}s "
               f"(goal {request.target_seconds}s), {len(lost)} object(s) lost")  # fmt: skip
    result = DrillResult.model_validate({**base, "outcome": "changed", "summary": summary, "snapshot": snapshot.name,
        "objects": snapshot.objects, "workload_objects": workload, "lost": lost,
        "time_to_recover": round(time_to_recover, 2), "passed": passed, "phases": phases})  # fmt: skip
    if not request.keep_workload:
        delete_workload(cluster, drill, wait_seconds=300)
    create_markdown_artifact(drill_markdown(result), key=artifact_key("dr-drill", request.cluster_name))
    log.info(summary)
    return result
