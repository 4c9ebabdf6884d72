"""Which images each workload (Deployment, StatefulSet, DaemonSet) runs, and changing them: the cluster side of
a registry-outage fallback.

Each write is one JSON patch guarded by the resourceVersion it was planned on, and carries the annotations
that explain it in the same patch, so the image and its record never disagree. A retry after a lost answer
reads the workload back and recognises its own write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from rollbook import controller_rollouts, revisions
from rollbook.registry_fallback import WorkloadKind, template_containers
from rollbook.revisions import JSON
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.kube import ConcurrentChange, ObjectNotFound
from tasks.listing import list_all
from tasks.policies import KUBE_API, KUBE_LIST, KUBE_WAIT, is_transient

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
POLL_SECONDS = 1.0


def _verbs(apps: k8s_client.AppsV1Api, kind: WorkloadKind) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The read and patch calls of the apps/v1 API for `kind`."""
    if kind == "StatefulSet":
        return apps.read_namespaced_stateful_set, apps.patch_namespaced_stateful_set
    if kind == "DaemonSet":
        return apps.read_namespaced_daemon_set, apps.patch_namespaced_daemon_set
    return apps.read_namespaced_deployment, apps.patch_namespaced_deployment


def _read(api: k8s_client.ApiClient, kind: WorkloadKind, namespace: str, name: str) -> JSON:
    read, _ = _verbs(k8s_client.AppsV1Api(api), kind)
    try:
        resp = read(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    except ApiException as exc:
        if exc.status == 404:
            raise ObjectNotFound(f"{kind.lower()} {name!r} not found in namespace {namespace!r}") from None
        raise
    data: JSON = json.loads(cast(Any, resp).data)
    return data


@task(**KUBE_API)
def read_workload(cluster: KubernetesCluster, kind: WorkloadKind, namespace: str, name: str) -> JSON:
    """The workload as the API server stores it."""
    with cluster.api_client() as api:
        return _read(api, kind, namespace, name)


@task(**KUBE_LIST)
def read_namespace_workloads(cluster: KubernetesCluster, namespace: str) -> dict[str, list[JSON]]:
    """Deployments, StatefulSets, DaemonSets, ReplicaSets, Pods and Events of one namespace, read together for
    one picture."""
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
            "statefulsets": list_all(apps.list_namespaced_stateful_set, namespace),
            "daemonsets": list_all(apps.list_namespaced_daemon_set, namespace),
            "replica_sets": list_all(apps.list_namespaced_replica_set, namespace),
            "pods": list_all(core.list_namespaced_pod, namespace),
            "events": list_all(core.list_namespaced_event, namespace, field_selector="involvedObject.kind=Pod"),
        }


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def image_patch(workload: JSON, images: dict[str, str], annotations: dict[str, str | None]) -> list[JSON]:
    """JSON patch ops: test the resourceVersion, set each container's image, set or remove annotations."""
    spec = workload["spec"]["template"]["spec"]
    ops: list[JSON] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": revisions.meta(workload)["resourceVersion"]}
    ]
    for key in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(key) or []):
            if container.get("name") in images:
                path = f"/spec/template/spec/{key}/{index}/image"
                ops.append({"op": "replace", "path": path, "value": images[container["name"]]})
    existing = revisions.annotations_of(workload)
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
def set_workload_images(
    cluster: KubernetesCluster,
    kind: WorkloadKind,
    namespace: str,
    name: str,
    *,
    images: dict[str, str],
    annotations: dict[str, str | None],
    resource_version: str,
) -> JSON:
    """Set containers' images and the annotations recording why, only on the workload as planned
    (`resource_version`). Already as asked (a retry after a lost answer, a re-run): returned unchanged.
    Changed by someone else since it was planned: ConcurrentChange, nothing written."""
    what = f"{kind.lower()} {name!r} in namespace {namespace!r}"
    with cluster.api_client() as api:
        _, patch = _verbs(k8s_client.AppsV1Api(api), kind)
        current = _read(api, kind, namespace, name)
        live, notes = template_containers(current), revisions.annotations_of(current)
        if all(live.get(c) == i for c, i in images.items()) and all(notes.get(k) == v for k, v in annotations.items()):
            return current
        if revisions.meta(current).get("resourceVersion") != resource_version:
            raise ConcurrentChange(
                f"{what} changed after it was planned (resourceVersion "
                f"{resource_version} -> {revisions.meta(current).get('resourceVersion')}); nothing written"
            )
        missing = sorted(set(images) - set(live))
        if missing:
            raise ObjectNotFound(f"{what} has no container {', '.join(missing)}")
        try:
            resp = patch(
                name,
                namespace,
                image_patch(current, images, annotations),
                _content_type="application/json-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status in (409, 422):  # the test op failed: it moved between our read and our write
                raise ConcurrentChange(f"{what} changed while it was being patched; nothing written") from None
            raise
        data: JSON = json.loads(cast(Any, resp).data)  # _preload_content=False: the raw response
        return data


@task(**KUBE_API)
def restart_workload(cluster: KubernetesCluster, kind: WorkloadKind, namespace: str, name: str, *, stamp: str) -> None:
    """`kubectl rollout restart`: a new pod-template annotation, so the controller replaces every pod. The
    same `stamp` on a retry writes the same template, so it starts no second rollout."""
    body: dict[str, Any] = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
    with cluster.api_client() as api:
        _, patch = _verbs(k8s_client.AppsV1Api(api), kind)
        try:
            patch(name, namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                raise ObjectNotFound(f"{kind.lower()} {name!r} not found in namespace {namespace!r}") from None
            raise


@task(**KUBE_API)
def delete_pods(cluster: KubernetesCluster, namespace: str, pods: dict[str, str]) -> list[str]:
    """Delete the named pods (name -> uid), each only while it is still that pod (a uid precondition), so a
    retry never deletes the replacement the controller made. Returns the names deleted now.

    This is how a StatefulSet (and a DaemonSet on OnDelete) gets past pods stuck on an image it can no
    longer pull: its controller waits for them instead of replacing them (Kubernetes' "forced rollback")."""
    deleted = []
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        for name, uid in sorted(pods.items()):
            body = k8s_client.V1DeleteOptions(preconditions=k8s_client.V1Preconditions(uid=uid))
            try:
                core.delete_namespaced_pod(name, namespace, body=body, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            except ApiException as exc:
                if exc.status in (404, 409):  # gone already, or already replaced: nothing of ours to delete
                    continue
                raise
            deleted.append(name)
    return deleted


@task(**KUBE_WAIT)
def wait_for_workload_rollout(
    cluster: KubernetesCluster, kind: WorkloadKind, namespace: str, name: str, timeout_seconds: float
) -> dict[str, Any]:
    """Wait, like `kubectl rollout status`, until a StatefulSet's or DaemonSet's rollout completes or
    `timeout_seconds` pass; {"done", "message", "seconds"}. Reads every second; an API server that blinks is
    ridden out inside the deadline (no task retry: it would restart the clock). Deployments have their own
    watch-based wait (tasks.kube.wait_for_rollout)."""
    start = time.monotonic()
    deadline = start + timeout_seconds
    message = "not read yet"
    with cluster.api_client() as api:
        while True:
            try:
                state = controller_rollouts.rollout_state(kind, _read(api, kind, namespace, name))
                message = state.message
                if state.done:
                    return {"done": True, "message": message, "seconds": round(time.monotonic() - start, 2)}
            except Exception as exc:
                if not is_transient(exc):
                    raise
                message = f"API server unavailable: {exc}"
            if time.monotonic() + POLL_SECONDS >= deadline:
                return {"done": False, "message": message, "seconds": round(time.monotonic() - start, 2)}
            time.sleep(POLL_SECONDS)
