"""Velero through its API objects (velero.io/v1 Backup, Restore, BackupStorageLocation, DownloadRequest) with the
Kubernetes client, never the velero CLI: the objects are the state, and Velero's server acts on them.

Creates are idempotent by name (a 409 reads the object that is there), waits are bounded, and every read goes
to the API server again, so a retried task never acts on stale state.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.request
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task

from blocks import KubernetesCluster
from rollbook.velero import API_VERSION, GROUP, VERSION, VeleroRefused, is_final
from tasks.cluster import REQUEST_TIMEOUT_SECONDS, namespace_exists
from tasks.policies import KUBE_API, KUBE_LIST, KUBE_WAIT

JSON = dict[str, Any]
POLL_SECONDS = 2.0
DOWNLOAD_TIMEOUT_SECONDS = 60.0


def _custom(api: k8s_client.ApiClient) -> k8s_client.CustomObjectsApi:
    return k8s_client.CustomObjectsApi(api)


def _get(api: k8s_client.ApiClient, namespace: str, plural: str, name: str) -> JSON | None:
    try:
        obj: JSON = _custom(api).get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, plural, name, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _create(api: k8s_client.ApiClient, namespace: str, kind: str, body: JSON) -> tuple[JSON, bool]:
    """(object, created): a 409 means a previous attempt (or run) made it; that object is returned as it is."""
    plural = kind.lower() + "s"
    try:
        made: JSON = _custom(api).create_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, plural, body, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except ApiException as exc:
        if exc.status == 404 and not namespace_exists(api, namespace):
            raise VeleroRefused(f"Velero's namespace {namespace!r} does not exist; is Velero installed?") from exc
        if exc.status != 409:
            raise
        existing = _get(api, namespace, plural, body["metadata"]["name"])
        if existing is None:
            raise
        return existing, False
    return made, True


@task(**KUBE_API)
def storage_location(cluster: KubernetesCluster, velero_namespace: str, name: str) -> JSON:
    """The BackupStorageLocation, which must exist and be Available: a backup to anything else fails later."""
    with cluster.api_client() as api:
        bsl = _get(api, velero_namespace, "backupstoragelocations", name)
    if bsl is None:
        raise VeleroRefused(f"backup storage location {name!r} not found in namespace {velero_namespace!r}")
    phase = (bsl.get("status") or {}).get("phase")
    if phase != "Available":
        message = (bsl.get("status") or {}).get("message") or "no message"
        raise VeleroRefused(f"backup storage location {name!r} is {phase or 'not validated yet'}: {message}")
    return bsl


@task(**KUBE_API)
def read_velero_object(cluster: KubernetesCluster, velero_namespace: str, plural: str, name: str) -> JSON | None:
    """A Backup or Restore by name, or None."""
    with cluster.api_client() as api:
        return _get(api, velero_namespace, plural, name)


@task(**KUBE_LIST)
def list_backups(cluster: KubernetesCluster, velero_namespace: str) -> list[JSON]:
    with cluster.api_client() as api:
        found: JSON = _custom(api).list_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, velero_namespace, "backups", _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    return list(found.get("items") or [])


@task(**KUBE_API)
def create_velero_object(
    cluster: KubernetesCluster, velero_namespace: str, kind: str, name: str, spec: JSON, annotations: dict[str, str]
) -> tuple[JSON, bool]:
    """Create a Backup or Restore by name (idempotent: one already there is returned, with created=False)."""
    body = {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "namespace": velero_namespace, "annotations": annotations},
        "spec": spec,
    }
    with cluster.api_client() as api:
        return _create(api, velero_namespace, kind, body)


@task(**KUBE_WAIT)
def wait_for_phase(
    cluster: KubernetesCluster, velero_namespace: str, plural: str, name: str, timeout_seconds: float
) -> JSON:
    """Poll until Velero gives the object a final phase; TimeoutError names the last phase seen."""
    deadline, phase = time.monotonic() + timeout_seconds, None
    while True:
        with cluster.api_client() as api:
            obj = _get(api, velero_namespace, plural, name)
        if obj is None:
            raise VeleroRefused(f"{plural}/{name} disappeared while waiting for it")
        phase = (obj.get("status") or {}).get("phase")
        if is_final(phase):
            return obj
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{plural}/{name} still {phase or 'New (not picked up: is the velero server running?)'} "
                f"after {timeout_seconds:.0f}s"
            )
        time.sleep(POLL_SECONDS)


@task(**KUBE_API)
def existing_namespaces(cluster: KubernetesCluster, names: list[str]) -> list[str]:
    with cluster.api_client() as api:
        return [n for n in names if namespace_exists(api, n)]


@task(**KUBE_API)
def backup_resource_list(cluster: KubernetesCluster, velero_namespace: str, backup: str) -> dict[str, list[str]]:
    """What the backup holds, from Velero itself: a DownloadRequest for its BackupResourceList, then the signed
    URL it answers with ({"apps/v1/Deployment": ["ns/name", ...]}). The DownloadRequest is deleted again."""
    name = f"{backup}-resources-{int(time.time())}"[:253]
    body = {
        "apiVersion": API_VERSION,
        "kind": "DownloadRequest",
        "metadata": {"name": name, "namespace": velero_namespace},
        "spec": {"target": {"kind": "BackupResourceList", "name": backup}},
    }
    with cluster.api_client() as api:
        _create(api, velero_namespace, "DownloadRequest", body)
        try:
            url = _download_url(api, velero_namespace, name)
        finally:
            try:
                _custom(api).delete_namespaced_custom_object(
                    GROUP, VERSION, velero_namespace, "downloadrequests", name,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )  # fmt: skip
            except ApiException as exc:
                get_run_logger().warning("could not delete downloadrequest %s: %s", name, exc.reason)
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as resp:  # noqa: S310 - Velero's signed URL
        data = json.loads(gzip.decompress(resp.read()))
    if not isinstance(data, dict):
        raise TypeError(f"backup {backup!r}: its resource list is not an object")
    return {str(k): [str(i) for i in v] for k, v in data.items()}


def _download_url(api: k8s_client.ApiClient, velero_namespace: str, name: str) -> str:
    deadline = time.monotonic() + DOWNLOAD_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        obj = _get(api, velero_namespace, "downloadrequests", name) or {}
        status = obj.get("status") or {}
        if status.get("phase") == "Processed" and status.get("downloadURL"):
            return str(status["downloadURL"])
        time.sleep(1)
    raise TimeoutError(f"downloadrequest {name} not processed within {DOWNLOAD_TIMEOUT_SECONDS:.0f}s")


_READERS = {
    "Deployment": lambda api: k8s_client.AppsV1Api(api).read_namespaced_deployment,
    "ConfigMap": lambda api: k8s_client.CoreV1Api(api).read_namespaced_config_map,
    "Service": lambda api: k8s_client.CoreV1Api(api).read_namespaced_service,
    "Secret": lambda api: k8s_client.CoreV1Api(api).read_namespaced_secret,
}


def _check_objects(api: k8s_client.ApiClient, expected: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    missing, unavailable = [], []
    for kind, namespace, name in expected:
        try:
            obj: Any = _READERS[kind](api)(name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status != 404:
                raise
            missing.append(f"{kind} {namespace}/{name}")
            continue
        if kind == "Deployment":
            want = obj.spec.replicas if obj.spec.replicas is not None else 1
            if (obj.status.available_replicas or 0) < want or (obj.status.updated_replicas or 0) < want:
                unavailable.append(f"Deployment {namespace}/{name} ({obj.status.available_replicas or 0}/{want})")
    return missing, unavailable


@task(**KUBE_WAIT)
def verify_restored(
    cluster: KubernetesCluster, expected: list[tuple[str, str, str]], timeout_seconds: float
) -> tuple[list[str], list[str]]:
    """(missing, unavailable) once every expected object exists and every Deployment is available, or when the
    bound runs out; secrets are read only to prove they exist (nothing of them is kept or logged)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        with cluster.api_client() as api:
            missing, unavailable = _check_objects(api, expected)
        if (not missing and not unavailable) or time.monotonic() >= deadline:
            return missing, unavailable
        time.sleep(POLL_SECONDS)
