"""The steps of a full-cluster restore that touch the control plane and the cluster: each a task, each bounded.

The data-directory swap is two renames on one file system (the restored directory is made beside the live
one), so at every moment etcd's data directory is either the old data or the complete restored data, never
a half-copied mix; the old data is kept under a dated name for as long as the team wants it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task
from urllib3.exceptions import HTTPError

from blocks import KubernetesCluster
from tasks.checks.cluster_health import readyz
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.controlplane import ControlPlane, ControlPlaneError, make_driver
from tasks.controlplane.base import EtcdMember
from tasks.listing import Raw, pages
from tasks.policies import CONTROL_PLANE, KUBE_API, KUBE_WAIT

Step = Literal[
    "stop_controllers", "stop_api_servers", "stop_etcd", "start_etcd", "start_api_servers", "start_controllers"
]


@task(**CONTROL_PLANE)
def control_plane_step(control_plane: ControlPlane, step: Step) -> float:
    """Run one driver step; returns its seconds (the report's time to recover per phase)."""
    started = time.monotonic()
    getattr(make_driver(control_plane), step)()
    return time.monotonic() - started


def restored_dir(member: EtcdMember, stamp: str) -> Path:
    return member.path.with_name(f"{member.path.name}.restored-{stamp}")


@task(**CONTROL_PLANE)
def swap_data_dir(member: EtcdMember, restored: Path, stamp: str) -> Path:
    """Put the restored directory where etcd reads its data; returns where the old data went."""
    live, previous = member.path, member.path.with_name(f"{member.path.name}.before-restore-{stamp}")
    if not restored.is_dir():
        raise ControlPlaneError(f"restored data {restored} is missing; nothing was swapped")
    if live.exists():
        live.rename(previous)
    restored.rename(live)
    return previous


@task(**CONTROL_PLANE)
def put_back_data_dir(member: EtcdMember, previous: Path, stamp: str) -> None:
    """Undo the swap after etcd failed to start on the restored data: the old data goes back in place."""
    live = member.path
    if live.exists():
        live.rename(live.with_name(f"{live.name}.failed-restore-{stamp}"))
    if previous.exists():  # etcd had no data before (it was lost): nothing to put back
        previous.rename(live)


@task(**KUBE_WAIT)
def wait_ready(cluster: KubernetesCluster, timeout_seconds: float) -> float:
    """Poll /readyz until the API server is ready (riding out connection errors while it starts)."""
    started = time.monotonic()
    failing: list[str] = []
    with cluster.api_client() as api:
        while time.monotonic() - started < timeout_seconds:
            try:
                ready, failing = readyz(api)
            except (ApiException, HTTPError, OSError):
                ready = False
            if ready:
                return time.monotonic() - started
            time.sleep(0.5)
    raise TimeoutError(f"the API server was not ready within {timeout_seconds:.0f}s; failing checks: {failing}")


def _unavailable(api: k8s_client.ApiClient) -> list[str]:
    names = []
    for page in pages(k8s_client.AppsV1Api(api).list_deployment_for_all_namespaces, Raw):
        for dep in page:
            spec, status, meta = dep.get("spec") or {}, dep.get("status") or {}, dep["metadata"]
            wanted = int(spec.get("replicas", 1))
            fresh = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
            if not fresh or int(status.get("availableReplicas", 0)) < wanted:
                names.append(f"{meta['namespace']}/{meta['name']}")
    return names


@task(**KUBE_WAIT)
def wait_deployments_available(cluster: KubernetesCluster, timeout_seconds: float) -> tuple[float, list[str]]:
    """Wait until every Deployment has its replicas available; (seconds, those still unavailable at the end)."""
    started, waiting = time.monotonic(), ["(not read yet)"]
    with cluster.api_client() as api:
        while time.monotonic() - started < timeout_seconds:
            try:
                waiting = _unavailable(api)
            except (ApiException, HTTPError, OSError):
                waiting = ["(API not answering)"]
            if not waiting:
                break
            time.sleep(1)
    return time.monotonic() - started, waiting


@task(**KUBE_API)
def annotate_kube_system(cluster: KubernetesCluster, annotations: dict[str, str]) -> None:
    """The restore's record on the cluster itself (the kube-system namespace): who restored what, and why."""
    with cluster.api_client() as api:
        body = {"metadata": {"annotations": annotations}}
        k8s_client.CoreV1Api(api).patch_namespace("kube-system", body, _request_timeout=REQUEST_TIMEOUT_SECONDS)


def _ready_once(cluster: KubernetesCluster) -> bool:
    with cluster.api_client() as api:
        return readyz(api)[0]


@task(**KUBE_API)
def api_ready_now(cluster: KubernetesCluster, within_seconds: float = 5) -> bool:
    """Whether the API server answers /readyz within a few seconds: with etcd gone it only times out (and the
    client retries each timeout), so a restore asks this before reading the live cluster for its diff."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(_ready_once, cluster)
    pool.shutdown(wait=False)  # a hung probe ends on its own timeouts; nobody waits for it
    try:
        return future.result(timeout=within_seconds)
    except Exception:  # timed out, refused, TLS trouble, 5xx: not ready now
        return False
