"""Deployment, ReplicaSet and Pod tasks on the official `kubernetes` client, reading objects as plain JSON.

Objects are read with `_preload_content=False` and returned as dicts: a rollback copies a ReplicaSet's pod
template back field for field, and the client's models would silently drop fields they do not know.
Every task re-reads the state it needs, so a retry after a lost response is safe.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task

from blocks import KubernetesCluster
from rollbook import pods, revisions
from rollbook.revisions import JSON
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.listing import list_all
from tasks.policies import KUBE_API, KUBE_LIST, KUBE_WAIT, is_transient


class ObjectNotFound(ValueError):
    """A named namespace or object does not exist (permanent: never retried)."""


class ConcurrentChange(ValueError):
    """The object changed between reading and writing it; nothing was written (permanent for this run)."""


def _body(response: Any) -> JSON:
    data = json.loads(response.data)
    if not isinstance(data, dict):
        raise TypeError("the API server answered with something other than an object")
    return data


def _not_found(api: k8s_client.ApiClient, namespace: str, what: str) -> ObjectNotFound:
    """404 on a namespaced object: say whether the namespace or the object is missing."""
    try:
        k8s_client.CoreV1Api(api).read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    except ApiException as exc:
        if exc.status == 404:
            return ObjectNotFound(f"namespace {namespace!r} not found")
        # 403: we may not read namespaces; the object is what we were asked about
    return ObjectNotFound(f"{what} not found in namespace {namespace!r}")


def _read_deployment(api: k8s_client.ApiClient, namespace: str, name: str) -> JSON:
    try:
        resp = k8s_client.AppsV1Api(api).read_namespaced_deployment(
            name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except ApiException as exc:
        if exc.status == 404:
            raise _not_found(api, namespace, f"deployment {name!r}") from None
        raise
    return _body(resp)


def _owned_replica_sets(api: k8s_client.ApiClient, deployment: JSON) -> list[JSON]:
    namespace = revisions.meta(deployment)["namespace"]
    selector = revisions.label_selector_string((deployment.get("spec") or {}).get("selector"))
    uid = revisions.meta(deployment)["uid"]
    found = list_all(k8s_client.AppsV1Api(api).list_namespaced_replica_set, namespace, label_selector=selector)
    return [rs for rs in found if revisions.is_controlled_by(rs, uid)]


@task(**KUBE_API)
def read_deployment(cluster: KubernetesCluster, namespace: str, name: str) -> JSON:
    """The Deployment as the API server stores it."""
    with cluster.api_client() as api:
        return _read_deployment(api, namespace, name)


@task(**KUBE_LIST)
def read_deployment_and_replica_sets(cluster: KubernetesCluster, namespace: str, name: str) -> tuple[JSON, list[JSON]]:
    """The Deployment and the ReplicaSets it controls (by controller ownerReference uid), read together."""
    with cluster.api_client() as api:
        deployment = _read_deployment(api, namespace, name)
        return deployment, _owned_replica_sets(api, deployment)


@task(**KUBE_LIST)
def list_replica_sets(cluster: KubernetesCluster, deployment: JSON) -> list[JSON]:
    """ReplicaSets controlled by the Deployment, found through its selector and filtered by owner uid."""
    with cluster.api_client() as api:
        return _owned_replica_sets(api, deployment)


@task(**KUBE_API)
def patch_deployment_rollback(
    cluster: KubernetesCluster,
    namespace: str,
    name: str,
    template: JSON,
    annotations: dict[str, str],
    resource_version: str,
    flow_run_marker: tuple[str, str],
) -> JSON:
    """Replace the Deployment's pod template and metadata annotations in one JSON patch, only if it still has
    `resource_version`. A retry after a lost response finds our own write (the `flow_run_marker` annotation
    key/value and the target template) and returns it instead of failing on the moved resourceVersion."""
    ops = revisions.rollback_patch(template, annotations, resource_version)
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        try:
            resp = apps.patch_namespaced_deployment(
                name,
                namespace,
                ops,
                _content_type="application/json-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            return _body(resp)
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found(api, namespace, f"deployment {name!r}") from None
            if exc.status != 409:
                raise
        current = _read_deployment(api, namespace, name)
        key, value = flow_run_marker
        mine = revisions.annotations_of(current).get(key) == value
        if mine and revisions.equal_ignore_hash(current["spec"]["template"], template):
            return current
        raise ConcurrentChange(
            f"deployment {name!r} in namespace {namespace!r} changed after it was read "
            f"(resourceVersion {resource_version} -> {revisions.meta(current).get('resourceVersion')}); nothing written"
        )


@task(**KUBE_API)
def mark_rollout_complete(cluster: KubernetesCluster, namespace: str, replica_set: str, uid: str) -> None:
    """Record on a ReplicaSet that a flow saw its rollout complete (the last-known-good evidence).

    A merge patch of one metadata annotation: it changes no pod template, so it starts no rollout."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    marker = revisions.completion_marker({"metadata": {"uid": uid}}, now)
    body = {"metadata": {"uid": uid, "annotations": {revisions.ROLLOUT_COMPLETE_ANNOTATION: marker}}}
    with cluster.api_client() as api:
        try:
            k8s_client.AppsV1Api(api).patch_namespaced_replica_set(
                replica_set,
                namespace,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # gone or replaced by a namesake: nothing to mark
                raise ObjectNotFound(
                    f"replicaset {replica_set!r} (uid {uid}) not found in namespace {namespace!r}"
                ) from None
            raise


@task(**KUBE_LIST)
def pod_problems(
    cluster: KubernetesCluster, namespace: str, selector: str, owner_uids: list[str]
) -> dict[str, list[str]]:
    """Pods matching `selector` owned by one of `owner_uids` (ReplicaSets), each with its problems as
    `rollbook.pods` names them; a pod with no problem maps to an empty list."""
    with cluster.api_client() as api:
        found = list_all(k8s_client.CoreV1Api(api).list_namespaced_pod, namespace, label_selector=selector)
    owners = set(owner_uids)
    result: dict[str, list[str]] = {}
    for pod in found:
        if any(revisions.is_controlled_by(pod, uid) for uid in owners):
            result[str(revisions.meta(pod).get("name"))] = pods.problem_texts(pod)
    return result


@task(**KUBE_LIST)
def deployment_pod_problems(cluster: KubernetesCluster, namespace: str, name: str) -> dict[str, list[str]]:
    """Problems of every pod of a Deployment (all its ReplicaSets)."""
    with cluster.api_client() as api:
        deployment = _read_deployment(api, namespace, name)
        owners = {revisions.meta(rs)["uid"] for rs in _owned_replica_sets(api, deployment)}
        selector = revisions.label_selector_string((deployment.get("spec") or {}).get("selector"))
        found = list_all(k8s_client.CoreV1Api(api).list_namespaced_pod, namespace, label_selector=selector)
    return {
        str(revisions.meta(p).get("name")): pods.problem_texts(p)
        for p in found
        if any(revisions.is_controlled_by(p, uid) for uid in owners)
    }


class ApiUnreachable(RuntimeError):
    """The API server stayed unreachable (or kept failing) until the wait's own deadline."""


# Pauses between attempts while the API server is away: short at first (a restart takes seconds), capped so
# the wait notices its return soon after; never past the wait's deadline.
OUTAGE_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 4.0, 5.0)


@dataclass
class _Outage:
    """Bookkeeping of transient failures during one wait: how many, for how long, the last error seen."""

    attempts: int = 0
    seconds: float = 0.0
    since: float | None = None
    total: int = 0
    last_error: str = ""

    def failed(self, exc: BaseException) -> float:
        """Record a transient failure; the pause before the next attempt."""
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        self.attempts += 1
        self.total += 1
        self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        return OUTAGE_BACKOFF_SECONDS[min(self.attempts, len(OUTAGE_BACKOFF_SECONDS)) - 1]

    def answered(self) -> None:
        if self.since is not None:
            self.seconds += time.monotonic() - self.since
        self.since, self.attempts = None, 0


def _watch_until(
    apps: k8s_client.AppsV1Api, namespace: str, name: str, resource_version: str, seconds: float
) -> JSON | None:
    """Watch the one Deployment from `resource_version` until its rollout is done or failed; None when the watch
    ends early (expiry, 410 Gone, an ERROR event): the caller re-lists and watches again."""
    watcher = k8s_watch.Watch()
    try:
        for event in watcher.stream(
            apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, int(seconds)),
            allow_watch_bookmarks=False,
            _request_timeout=seconds + REQUEST_TIMEOUT_SECONDS,
        ):
            obj = event.get("raw_object")  # the server's JSON; the model copy in "object" is not used
            if event.get("type") == "ERROR" or not isinstance(obj, dict):
                return None
            if event.get("type") == "DELETED":
                raise ObjectNotFound(f"deployment {name!r} was deleted from namespace {namespace!r} during the rollout")
            state = revisions.rollout_state(obj)
            if state.done or state.failed:
                return obj
    except ApiException as exc:
        if exc.status == 410:  # our resourceVersion is too old (e.g. after an API server restart): re-list
            return None
        raise
    finally:
        watcher.stop()
    return None


def _wait_step(
    apps: k8s_client.AppsV1Api, api: k8s_client.ApiClient, namespace: str, name: str, deadline: float
) -> JSON:
    """One read (and, if the rollout is still going, one watch): the Deployment as last seen."""
    deployment = _read_deployment(api, namespace, name)
    state = revisions.rollout_state(deployment)
    remaining = deadline - time.monotonic()
    if state.done or state.failed or remaining <= 0:
        return deployment
    get_run_logger().info("rollout of %r: %s", name, state.message)
    seen = _watch_until(apps, namespace, name, revisions.meta(deployment)["resourceVersion"], remaining)
    if seen is None:
        time.sleep(0.2)  # the watch ended early: re-read without spinning
    return seen if seen is not None else deployment


@task(**KUBE_WAIT)
def wait_for_rollout(cluster: KubernetesCluster, namespace: str, name: str, timeout_seconds: float) -> dict[str, Any]:
    """Wait, like `kubectl rollout status`, until the Deployment's rollout completes, fails (progress deadline
    exceeded) or `timeout_seconds` pass. Returns {"revision", "done", "failed", "timed_out", "message",
    "seconds", "api_errors", "api_outage_seconds"}; a failed rollout is returned, not raised, so the flow can
    gather the pods' reasons.

    Connection errors, 5xx and 429 (an API server restarting) are ridden out inside the deadline: the wait
    re-reads and re-watches with a bounded backoff, and only if the API server is still unreachable when the
    deadline comes does it raise ApiUnreachable. It has no task retries (a retry would restart the clock)."""
    log = get_run_logger()
    start = time.monotonic()
    deadline = start + timeout_seconds
    outage = _Outage()
    last: JSON | None = None
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        while True:
            try:
                last = _wait_step(apps, api, namespace, name, deadline)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                pause = outage.failed(exc)
                if time.monotonic() + pause >= deadline:
                    raise ApiUnreachable(
                        f"could not read deployment {name!r} in namespace {namespace!r} before the wait's deadline "
                        f"({timeout_seconds:.0f}s): {outage.last_error}. The rollout may still complete; re-run "
                        "the same request to finish the wait"
                    ) from exc
                log.warning("API server unavailable while waiting for %r (%s); retrying in %ss", name, exc, pause)
                time.sleep(pause)
                continue
            outage.answered()
            state = revisions.rollout_state(last)
            if state.done or state.failed or time.monotonic() >= deadline:
                break
    return {
        "revision": revisions.revision_of(last),
        "done": state.done,
        "failed": state.failed,
        "timed_out": not (state.done or state.failed),
        "message": state.message,
        "seconds": round(time.monotonic() - start, 2),
        "api_errors": outage.total,
        "api_outage_seconds": round(outage.seconds, 2),
    }
