"""DaemonSet tasks for the image pre-pull: read the Deployments whose images to keep warm, read, create or
replace the DaemonSet, and wait for its rollout on every node.

Objects are plain JSON (`_preload_content=False`). Every write re-reads first and is guarded by the
resourceVersion it was planned on, so a retry after a lost answer recognises its own write (the spec hash
rollbook records) instead of writing twice, and a DaemonSet someone changed meanwhile is never overwritten.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task

from blocks import KubernetesCluster
from rollbook import pods as pod_rules
from rollbook import prepull, revisions
from rollbook.revisions import JSON
from tasks.cluster import REQUEST_TIMEOUT_SECONDS, namespace_exists
from tasks.kube import ConcurrentChange, ObjectNotFound
from tasks.listing import list_all
from tasks.policies import KUBE_API, KUBE_LIST, KUBE_WAIT, is_transient

POLL_SECONDS = 2.0


class DaemonSetNotReady(RuntimeError):
    """The DaemonSet's rollout did not complete in time; the message names the nodes and pods not ready."""


def _body(response: Any) -> JSON:
    data = json.loads(response.data)
    if not isinstance(data, dict):
        raise TypeError("the API server answered with something other than an object")
    return data


def _require_namespace(api: k8s_client.ApiClient, namespace: str) -> None:
    if not namespace_exists(api, namespace):
        raise ObjectNotFound(f"namespace {namespace!r} not found")


@task(**KUBE_LIST)
def read_deployments(cluster: KubernetesCluster, namespace: str, match_labels: dict[str, str]) -> list[JSON]:
    """The Deployments of `namespace` whose labels match `match_labels` (all of them when it is empty)."""
    selector = revisions.label_selector_string({"matchLabels": match_labels}) if match_labels else None
    with cluster.api_client() as api:
        _require_namespace(api, namespace)
        kwargs = {"label_selector": selector} if selector else {}
        found = list_all(k8s_client.AppsV1Api(api).list_namespaced_deployment, namespace, **kwargs)
    return sorted(found, key=lambda d: str(revisions.meta(d).get("name")))


def _read(api: k8s_client.ApiClient, namespace: str, name: str) -> JSON | None:
    try:
        resp = k8s_client.AppsV1Api(api).read_namespaced_daemon_set(
            name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except ApiException as exc:
        if exc.status == 404:
            _require_namespace(api, namespace)
            return None
        raise
    return _body(resp)


@task(**KUBE_API)
def read_daemonset(cluster: KubernetesCluster, namespace: str, name: str) -> JSON | None:
    """The DaemonSet as the API server stores it, or None when there is none (its namespace must exist)."""
    with cluster.api_client() as api:
        return _read(api, namespace, name)


def _changed(namespace: str, name: str, planned: str | None, current: JSON | None, when: str) -> ConcurrentChange:
    now = revisions.meta(current).get("resourceVersion") if current is not None else None
    return ConcurrentChange(
        f"daemonset {name!r} in namespace {namespace!r} changed {when} (resourceVersion {planned or 'absent'} -> "
        f"{now or 'absent'}); nothing written"
    )


@task(**KUBE_API)
def write_daemonset(
    cluster: KubernetesCluster, desired: JSON, audit: dict[str, str], resource_version: str | None
) -> JSON:
    """Create the DaemonSet (`resource_version` None: it was absent when planned) or replace the one planned on.

    Already as desired (a retry after a lost answer): returned unchanged. A 409 on create means it is already
    there: re-read and compare. Changed by someone else since the plan: ConcurrentChange, nothing written."""
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        current = _read(api, namespace, name)
        if current is not None and prepull.written_as_desired(current, desired):
            return current
        live_version = revisions.meta(current).get("resourceVersion") if current is not None else None
        if live_version != resource_version:
            raise _changed(namespace, name, resource_version, current, "after it was planned")
        try:
            if current is None:
                resp = apps.create_namespaced_daemon_set(
                    namespace,
                    cast(Any, prepull.with_audit(desired, audit)),  # a JSON body: the client sends dicts as they are
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            else:
                resp = apps.replace_namespaced_daemon_set(
                    name,
                    namespace,
                    cast(Any, prepull.replacement(current, desired, audit)),
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
        except ApiException as exc:
            if exc.status != 409:
                raise
            # created meanwhile (by our own lost attempt or someone else), or replaced since our read
            again = _read(api, namespace, name)
            if again is not None and prepull.written_as_desired(again, desired):
                return again
            raise _changed(namespace, name, resource_version, again, "while it was being written") from None
        return _body(resp)


def _pod_report(api: k8s_client.ApiClient, daemonset: JSON) -> list[str]:
    """Each pod of the DaemonSet that is not Ready or still runs other images, with its node and reasons."""
    meta = revisions.meta(daemonset)
    selector = revisions.label_selector_string((daemonset.get("spec") or {}).get("selector"))
    uid = str(meta.get("uid") or "")
    found = list_all(k8s_client.CoreV1Api(api).list_namespaced_pod, meta["namespace"], label_selector=selector)
    wanted = prepull.live_images(daemonset)
    lines = []
    for pod in sorted(found, key=lambda p: str(revisions.meta(p).get("name"))):
        if uid and not revisions.is_controlled_by(pod, uid):
            continue
        node = (pod.get("spec") or {}).get("nodeName") or "(not scheduled)"
        name = revisions.meta(pod).get("name")
        images = sorted({str(c.get("image")) for c in (pod.get("spec") or {}).get("containers") or []})
        why = pod_rules.problem_texts(pod) if not pod_rules.is_ready(pod) else []
        if images != wanted:
            why = [*why, "still on the previous images"]
        if why:
            lines.append(f"pod {name} on node {node}: {'; '.join(why)}")
    return lines


@task(**KUBE_WAIT)
def wait_for_daemonset(cluster: KubernetesCluster, namespace: str, name: str, timeout_seconds: float) -> dict[str, Any]:
    """Wait, like `kubectl rollout status daemonset`, until the controller has seen the latest spec and every
    node it schedules on runs an updated, Ready pod (desiredNumberScheduled == updatedNumberScheduled ==
    numberReady). Returns {"desired", "updated", "ready", "seconds"}.

    At the deadline it raises DaemonSetNotReady naming the pods (and their nodes) not ready and why. An API
    server that blinks is ridden out inside the deadline (no task retry: it would restart the clock)."""
    log = get_run_logger()
    start = time.monotonic()
    deadline = start + timeout_seconds
    last_logged = ""
    with cluster.api_client() as api:
        while True:
            try:
                daemonset = _read(api, namespace, name)
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() + POLL_SECONDS >= deadline:
                    raise
                log.warning("API server unavailable while waiting for daemonset %r (%s); retrying", name, exc)
                time.sleep(POLL_SECONDS)
                continue
            if daemonset is None:
                raise ObjectNotFound(f"daemonset {name!r} was deleted from namespace {namespace!r} during its rollout")
            state = prepull.readiness(daemonset)
            if state.done:
                return {
                    "desired": state.desired,
                    "updated": state.updated,
                    "ready": state.ready,
                    "seconds": round(time.monotonic() - start, 2),
                }
            if time.monotonic() >= deadline:
                pods = _pod_report(api, daemonset)
                raise DaemonSetNotReady(
                    f"daemonset {name!r} in namespace {namespace!r} did not roll out within {timeout_seconds:.0f}s: "
                    f"{state.message}; {'; '.join(pods) or 'no pod reported a problem'}"
                )
            if state.message != last_logged:
                log.info("rollout of daemonset %r: %s", name, state.message)
                last_logged = state.message
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
