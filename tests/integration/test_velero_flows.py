"""velero-backup and velero-restore against the sandbox's real Velero server (moto S3): two namespaces with a
Deployment, a Service, a ConfigMap and a Secret each are backed up, deleted and restored, then restored again
under other names; plan, a refused approval and bad names change nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.velero_backup import VeleroBackupRequest, velero_backup
from flows.velero_restore import VeleroRestoreRequest, velero_restore
from rollbook.change import ChangeControls
from rollbook.velero import VeleroRefused
from sandbox import toolchain, velero
from sandbox.cluster import Sandbox
from sandbox.services import wait_until

CONTROLS = ChangeControls(reason="velero flows integration test", requested_by="pytest")
SUFFIX = uuid.uuid4().hex[:5]
NAMESPACES = [f"vf-a-{SUFFIX}", f"vf-b-{SUFFIX}"]
BACKUP = f"vf-{SUFFIX}"
KINDS = ("Deployment", "Service", "ConfigMap", "Secret")
OBJECTS = ("web", "web", "settings", "creds")


@pytest.fixture(scope="module")
def custom(sandbox: Sandbox) -> client.CustomObjectsApi:
    toolchain.ensure_velero()
    sandbox.start_service("velero")
    return client.CustomObjectsApi(sandbox.api_client())


def _names(api: client.CustomObjectsApi, plural: str) -> set[str]:
    found: dict[str, Any] = api.list_namespaced_custom_object("velero.io", "v1", velero.NAMESPACE, plural)  # type: ignore[assignment]
    return {item["metadata"]["name"] for item in found["items"]}


def _available(apps: client.AppsV1Api, ns: str) -> bool:
    try:
        dep = apps.read_namespaced_deployment("web", ns)
    except ApiException:
        return False
    return (dep.status.available_replicas or 0) == dep.spec.replicas


def _gone(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespace(ns)
    except ApiException as exc:
        return exc.status == 404
    return False


def _delete(core: client.CoreV1Api, ns: str) -> None:
    try:
        core.delete_namespace(ns)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _objects(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> dict[str, Any]:
    return {
        "Deployment": apps.read_namespaced_deployment("web", ns),
        "Service": core.read_namespaced_service("web", ns),
        "ConfigMap": core.read_namespaced_config_map("settings", ns),
        "Secret": core.read_namespaced_secret("creds", ns),
    }


def _identity(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> dict[str, Any]:
    """What a restore into another namespace must not change here: the objects themselves (uid), their spec
    generation, labels and data (resourceVersion moves with status updates, so it is not compared)."""
    return {
        kind: (o.metadata.uid, o.metadata.generation, o.metadata.labels, getattr(o, "data", None))
        for kind, o in _objects(core, apps, ns).items()
    }


@pytest.fixture(scope="module")
def two_namespaces(sandbox: Sandbox) -> Iterator[list[str]]:
    core, apps = client.CoreV1Api(sandbox.api_client()), client.AppsV1Api(sandbox.api_client())
    labels = {"app": "web"}
    for ns in NAMESPACES:
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_config_map(ns, {"metadata": {"name": "settings"}, "data": {"ns": ns}})
        core.create_namespaced_secret(ns, {"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}})
        core.create_namespaced_service(
            ns, {"metadata": {"name": "web"}, "spec": {"selector": labels, "ports": [{"port": 80}]}}
        )
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
    for ns in NAMESPACES:
        wait_until(lambda ns=ns: _available(apps, ns), 90, f"deployment web in {ns} to be available")
    yield NAMESPACES
    for ns in [*NAMESPACES, *(f"{n}-copy" for n in NAMESPACES)]:
        _delete(core, ns)


def _backup_request(sandbox: Sandbox, **kw: Any) -> VeleroBackupRequest:
    return VeleroBackupRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig), included_namespaces=NAMESPACES, backup_name=BACKUP,
        wait_timeout_seconds=240, **kw,
    )  # fmt: skip


def _restore_request(sandbox: Sandbox, **kw: Any) -> VeleroRestoreRequest:
    kw.setdefault("namespaces", NAMESPACES)
    return VeleroRestoreRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig), wait_timeout_seconds=240,
        verify_timeout_seconds=120, **kw,
    )  # fmt: skip


def test_plan_refused_approval_and_unknown_location_create_no_backup(
    sandbox: Sandbox, custom: client.CustomObjectsApi, two_namespaces: list[str]
) -> None:
    planned = velero_backup(_backup_request(sandbox), CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and planned.spec["includedNamespaces"] == NAMESPACES
    timeout = CONTROLS.model_copy(
        update={"require_approval": True, "approval_timeout_seconds": 10, "approval_poll_seconds": 1}
    )
    refused = velero_backup(_backup_request(sandbox), timeout)
    assert refused.outcome == "not-approved"
    with pytest.raises(VeleroRefused, match="storage location 'nowhere' not found"):
        velero_backup(_backup_request(sandbox, storage_location="nowhere"), CONTROLS)
    assert BACKUP not in _names(custom, "backups")


def test_backup_delete_restore_brings_every_object_back(
    sandbox: Sandbox, custom: client.CustomObjectsApi, core: client.CoreV1Api, apps: client.AppsV1Api,
    two_namespaces: list[str],
) -> None:  # fmt: skip
    done = velero_backup(_backup_request(sandbox), CONTROLS)
    assert done.outcome == "changed" and done.phase == "Completed" and done.errors == 0, done
    backup = custom.get_namespaced_custom_object("velero.io", "v1", velero.NAMESPACE, "backups", BACKUP)
    assert backup["metadata"]["annotations"]["rollbook.dev/requested-by"] == "pytest"  # type: ignore[index]
    again = velero_backup(_backup_request(sandbox), CONTROLS)
    assert again.outcome == "unchanged" and again.phase == "Completed"

    restores_before = _names(custom, "restores")
    planned = velero_restore(_restore_request(sandbox, backup_name=BACKUP), CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and _names(custom, "restores") == restores_before
    wanted = {f"{kind} {ns}/{name}" for ns in NAMESPACES for kind, name in zip(KINDS, OBJECTS, strict=True)}
    assert wanted <= set(planned.expected), planned.expected

    for ns in NAMESPACES:
        core.delete_namespace(ns)
    for ns in NAMESPACES:
        wait_until(lambda ns=ns: _gone(core, ns), 120, f"namespace {ns} to be deleted")

    restored = velero_restore(_restore_request(sandbox, backup_name=BACKUP), CONTROLS)
    assert restored.outcome == "changed" and restored.phase == "Completed", restored
    assert not restored.missing and not restored.unavailable
    for ns in NAMESPACES:
        objects = _objects(core, apps, ns)
        assert objects["ConfigMap"].data == {"ns": ns}
        assert objects["Secret"].data and "password" in objects["Secret"].data
        assert _available(apps, ns)


def test_mapped_restore_leaves_the_originals_untouched_and_bad_input_is_refused(
    sandbox: Sandbox, custom: client.CustomObjectsApi, core: client.CoreV1Api, apps: client.AppsV1Api,
    two_namespaces: list[str],
) -> None:  # fmt: skip
    mapping = {ns: f"{ns}-copy" for ns in NAMESPACES}
    before = {ns: _identity(core, apps, ns) for ns in NAMESPACES}
    restores_before = _names(custom, "restores")
    with pytest.raises(VeleroRefused, match="already exist"):
        onto_existing = {NAMESPACES[0]: NAMESPACES[1]}
        velero_restore(_restore_request(sandbox, namespaces=NAMESPACES[:1], namespace_mapping=onto_existing), CONTROLS)
    with pytest.raises(VeleroRefused, match="backup 'no-such-backup' not found"):
        velero_restore(_restore_request(sandbox, backup_name="no-such-backup"), CONTROLS)
    assert _names(custom, "restores") == restores_before

    mapped = velero_restore(_restore_request(sandbox, namespace_mapping=mapping), CONTROLS)  # the newest backup
    assert mapped.outcome == "changed" and not mapped.missing and not mapped.unavailable, mapped
    for ns, copy in mapping.items():
        assert _objects(core, apps, copy)["ConfigMap"].data == {"ns": ns}
        assert _available(apps, copy)
        assert _identity(core, apps, ns) == before[ns]
