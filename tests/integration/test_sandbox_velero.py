"""The sandbox's Velero is real: a server built from the Go module proxy, out of cluster, storing backups in the
sandbox's moto S3 through the AWS plugin. A namespace is backed up, deleted and restored through Velero's API objects
(Backup, Restore) created with the Kubernetes client, never the CLI."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox import toolchain, velero
from sandbox.cluster import Sandbox
from sandbox.services import wait_until

GROUP, VERSION = velero.API
DONE = {"Completed", "PartiallyFailed", "Failed", "FailedValidation"}


@pytest.fixture(scope="module")
def velero_server(sandbox: Sandbox) -> Iterator[client.CustomObjectsApi]:
    """Velero needs its own toolchain set (`make test` builds it first); built here on first use otherwise, then
    started (idempotent: the session's `up` already started it when the set was in the cache)."""
    toolchain.ensure_velero()
    sandbox.start_service("velero")
    yield client.CustomObjectsApi(sandbox.api_client())


def _get(api: client.CustomObjectsApi, plural: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, velero.NAMESPACE, plural, name)  # type: ignore[assignment]
    return obj


def _create(api: client.CustomObjectsApi, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
    api.create_namespaced_custom_object(GROUP, VERSION, velero.NAMESPACE, kind.lower() + "s", body)


def _wait_phase(api: client.CustomObjectsApi, plural: str, name: str, timeout: float = 180) -> dict[str, Any]:
    """Poll until Velero reports a final phase (bounded), and return the object's status."""
    wait_until(lambda: _get(api, plural, name).get("status", {}).get("phase") in DONE, timeout, f"{plural}/{name}")
    status: dict[str, Any] = _get(api, plural, name)["status"]
    return status


def _tcp_listeners(pid: int) -> set[str]:
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, timeout=10, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if f"pid={pid}," in line}


def _deployment_available(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    try:
        dep = apps.read_namespaced_deployment(name, namespace)
    except ApiException:
        return False
    return (dep.status.available_replicas or 0) == dep.spec.replicas


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as exc:
        return exc.status == 404
    return False


def test_storage_location_is_available_and_listeners_are_loopback_only(
    sandbox: Sandbox, velero_server: client.CustomObjectsApi
) -> None:
    bsl = _get(velero_server, "backupstoragelocations", velero.BSL_NAME)
    assert bsl["status"]["phase"] == "Available"
    assert bsl["spec"]["config"]["s3Url"].startswith("http://127.0.0.1:")
    pid = sandbox.supervisor.pid("velero")
    assert pid is not None
    wanted = {f"127.0.0.1:{sandbox.cfg.port('velero-metrics')}", f"127.0.0.1:{sandbox.cfg.port('velero-profiler')}"}
    # exactly its two flags' listeners: controller-runtime's default ":8080" is switched off by the wrapper main
    assert _tcp_listeners(pid) == wanted
    placeholder = client.AppsV1Api(sandbox.api_client()).read_namespaced_deployment("velero", velero.NAMESPACE)
    assert placeholder.spec.replicas == 0


def _app_namespace(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> None:
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}})
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1.0.0"}]},
                },
            },
        },
    )
    wait_until(lambda: _deployment_available(apps, ns, "web"), 60, "the Deployment to become available")


def _delete_namespace(core: client.CoreV1Api, ns: str) -> None:
    try:
        core.delete_namespace(ns)
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_backup_delete_restore_brings_the_namespace_back(
    sandbox: Sandbox, velero_server: client.CustomObjectsApi, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns, backup, restore = f"velero-app-{suffix}", f"app-{suffix}", f"app-{suffix}-restore"
    _app_namespace(core, apps, ns)
    try:
        _create(
            velero_server,
            "Backup",
            backup,
            {"includedNamespaces": [ns], "snapshotVolumes": False, "defaultVolumesToFsBackup": False, "ttl": "1h"},
        )
        status = _wait_phase(velero_server, "backups", backup)
        assert status["phase"] == "Completed", status
        assert status.get("errors", 0) == 0 and status["progress"]["itemsBackedUp"] >= 2, status

        core.delete_namespace(ns)
        wait_until(lambda: _namespace_gone(core, ns), 120, f"namespace {ns} to be deleted")

        _create(velero_server, "Restore", restore, {"backupName": backup, "includedNamespaces": [ns]})
        status = _wait_phase(velero_server, "restores", restore)
        assert status["phase"] == "Completed", status
        assert status.get("errors", 0) == 0, status

        assert core.read_namespaced_config_map("settings", ns).data == {"greeting": "hello"}
        restored = apps.read_namespaced_deployment("web", ns)
        assert restored.spec.replicas == 2
        assert restored.metadata.labels.get("velero.io/restore-name") == restore
        wait_until(lambda: _deployment_available(apps, ns, "web"), 90, "the restored Deployment to become available")
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        assert len(pods) == 2 and all(_ready(p) for p in pods), [(p.metadata.name, p.status) for p in pods]
    finally:
        _delete_namespace(core, ns)


def test_moto_also_takes_uploads_without_flexible_checksums(
    sandbox: Sandbox, velero_server: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    """The default location works with moto as it is (the test above); the plugin's workaround for S3 endpoints
    that reject aws-sdk-go-v2's flexible checksums (`checksumAlgorithm: ""`) works as well."""
    suffix = uuid.uuid4().hex[:6]
    ns, location, backup = f"velero-cm-{suffix}", f"no-checksum-{suffix}", f"cm-{suffix}"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}, "data": {"k": "v"}})
    spec = velero.backup_storage_location(sandbox.cfg)["spec"]
    spec["default"] = False
    # a bucket of its own: another location's prefix at the top of the default bucket makes Velero call the
    # default location invalid ("Backup store contains invalid top-level directories"), failing later tests
    bucket = f"velero-{location}"
    velero.s3_client(sandbox.cfg).create_bucket(Bucket=bucket)
    spec["objectStorage"] = {**spec["objectStorage"], "bucket": bucket, "prefix": location}
    spec["config"]["checksumAlgorithm"] = ""
    try:
        _create(velero_server, "BackupStorageLocation", location, spec)
        wait_until(
            lambda: (
                _get(velero_server, "backupstoragelocations", location).get("status", {}).get("phase") == "Available"
            ),
            90,
            f"storage location {location} to become Available",
        )
        _create(velero_server, "Backup", backup, {"includedNamespaces": [ns], "storageLocation": location})
        status = _wait_phase(velero_server, "backups", backup)
        assert status["phase"] == "Completed", status
        keys = [o["Key"] for o in velero.s3_client(sandbox.cfg).list_objects_v2(Bucket=bucket)["Contents"]]
        assert f"{location}/backups/{backup}/{backup}.tar.gz" in keys
    finally:
        _delete_namespace(core, ns)


def test_restores_need_the_placeholder_velero_deployment(
    sandbox: Sandbox, velero_server: client.CustomObjectsApi, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    """Why prepare() creates Deployment velero at 0 replicas (vmware-tanzu/velero#9023): without it every restore
    fails, because PodVolumeRestoreAction reads that Deployment's image. Put back afterwards."""
    suffix = uuid.uuid4().hex[:6]
    ns, backup, restore = f"velero-ph-{suffix}", f"ph-{suffix}", f"ph-{suffix}-restore"
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "one"}, "data": {"k": "v"}})
    try:
        _create(velero_server, "Backup", backup, {"includedNamespaces": [ns]})
        assert _wait_phase(velero_server, "backups", backup)["phase"] == "Completed"
        apps.delete_namespaced_deployment("velero", velero.NAMESPACE)
        _create(velero_server, "Restore", restore, {"backupName": backup, "existingResourcePolicy": "update"})
        status = _wait_phase(velero_server, "restores", restore)
        assert status["phase"] in ("PartiallyFailed", "Failed"), status
    finally:
        sandbox.prepare_velero()
        _delete_namespace(core, ns)
