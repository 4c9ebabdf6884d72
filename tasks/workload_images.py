"""Which image each Deployment runs, and changing it: the cluster side of a registry-outage fallback.

Each write is one JSON patch guarded by the resourceVersion it was planned on, and carries the annotations
that explain it in the same patch, so the image and its record never disagree. A retry after a lost answer
reads the Deployment back and recognises its own write.
"""

from __future__ import annotations

import json
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from rollbook import revisions
from rollbook.registry_fallback import template_containers
from rollbook.revisions import JSON
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.kube import ConcurrentChange, ObjectNotFound, read_deployment
from tasks.listing import list_all
from tasks.policies import KUBE_API, KUBE_LIST

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


@task(**KUBE_LIST)
def read_namespace_workloads(cluster: KubernetesCluster, namespace: str) -> dict[str, list[JSON]]:
    """Deployments, ReplicaSets, Pods and Events of one namespace, read together for one picture."""
    with cluster.api_client() as api:
        core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)
        try:
            core.read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                raise ObjectNotFound(f"namespace {namespace!r} not found") from None
            raise
        return {
            "deployments": list_all(apps.list_namespaced_deployment, namespace),
            "replica_sets": list_all(apps.list_namespaced_replica_set, namespace),
            "pods": list_all(core.list_namespaced_pod, namespace),
            "events": list_all(core.list_namespaced_event, namespace, field_selector="involvedObject.kind=Pod"),
        }


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def image_patch(deployment: JSON, images: dict[str, str], annotations: dict[str, str | None]) -> list[JSON]:
    """JSON patch ops: test the resourceVersion, set each container's image, set or remove annotations."""
    spec = deployment["spec"]["template"]["spec"]
    ops: list[JSON] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": revisions.meta(deployment)["resourceVersion"]}
    ]
    for key in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(key) or []):
            if container.get("name") in images:
                path = f"/spec/template/spec/{key}/{index}/image"
                ops.append({"op": "replace", "path": path, "value": images[container["name"]]})
    existing = revisions.annotations_of(deployment)
    if not existing and any(v is not None for v in annotations.values()):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    for key, value in annotations.items():
        path = f"/metadata/annotations/{_escape(key)}"
        if value is None:
            if key in existing:
                ops.append({"op": "remove", "path": path})
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


@task(**KUBE_API)
def set_deployment_images(
    cluster: KubernetesCluster,
    namespace: str,
    name: str,
    *,
    images: dict[str, str],
    annotations: dict[str, str | None],
    resource_version: str,
) -> JSON:
    """Set containers' images and the annotations recording why, only on the Deployment as planned
    (`resource_version`). Already as asked (a retry after a lost answer, a re-run): returned unchanged.
    Changed by someone else since it was planned: ConcurrentChange, nothing written."""
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        current = read_deployment.fn(cluster, namespace, name)
        live, notes = template_containers(current), revisions.annotations_of(current)
        if all(live.get(c) == i for c, i in images.items()) and all(notes.get(k) == v for k, v in annotations.items()):
            return current
        if revisions.meta(current).get("resourceVersion") != resource_version:
            raise ConcurrentChange(
                f"deployment {name!r} in namespace {namespace!r} changed after it was planned (resourceVersion "
                f"{resource_version} -> {revisions.meta(current).get('resourceVersion')}); nothing written"
            )
        missing = sorted(set(images) - set(live))
        if missing:
            raise ObjectNotFound(f"deployment {name!r} has no container {', '.join(missing)}")
        try:
            resp = apps.patch_namespaced_deployment(
                name,
                namespace,
                image_patch(current, images, annotations),
                _content_type="application/json-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status in (409, 422):  # the test op failed: it moved between our read and our write
                raise ConcurrentChange(
                    f"deployment {name!r} in namespace {namespace!r} changed while it was being patched; "
                    "nothing written"
                ) from None
            raise
        data: JSON = json.loads(cast(Any, resp).data)  # _preload_content=False: the raw response
        return data


@task(**KUBE_API)
def restart_deployment(cluster: KubernetesCluster, namespace: str, name: str, *, stamp: str) -> None:
    """`kubectl rollout restart`: a new pod-template annotation, so the controller replaces every pod. The
    same `stamp` on a retry writes the same template, so it starts no second rollout."""
    body: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    with cluster.api_client() as api:
        try:
            k8s_client.AppsV1Api(api).patch_namespaced_deployment(
                name, namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ObjectNotFound(f"deployment {name!r} not found in namespace {namespace!r}") from None
            raise
