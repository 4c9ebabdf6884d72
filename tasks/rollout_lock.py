"""The rollout lock's Lease on the API server: take it, keep it renewed while the rollout runs, give it back.

The rules (who may take it, what a refusal says) are in `rollbook.rollout_lock`. Taking and giving back are
tasks under the KUBE_API policy: each reads the Lease first, so a retry after a lost answer finds its own
holding instead of refusing itself. Every write is guarded by the resourceVersion it read, so two runs racing
for a free or expired lock cannot both win: the loser's write answers 409 and it reads again. While the block
runs, a thread renews the Lease; an API-server outage shorter than the lease is ridden out (the next renewal
catches up), and a longer one is logged loudly, since another run may then take the lock.

The lock is re-entrant within one run context: blue/green takes it before installing green and then runs
canary-rollout as a subflow, which must not refuse its own parent's lock. The names held by the current
context live in a ContextVar, which Prefect carries into the subflow it runs in the same thread.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger
from prefect.runtime import flow_run

from blocks import KubernetesCluster
from rollbook.rollout_lock import LEASE_SECONDS, RENEW_EVERY_SECONDS, Holding, busy_error, lease_name, micro_time
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import KUBE_API, is_transient

_held: ContextVar[frozenset[str]] = ContextVar("rollbook_rollout_locks", default=frozenset())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _holding(lease: dict[str, Any]) -> Holding:
    spec = lease.get("spec") or {}
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    return Holding(
        holder=spec.get("holderIdentity") or "",
        renewed=dt.datetime.fromisoformat(renewed) if renewed else None,
        duration_seconds=spec.get("leaseDurationSeconds") or LEASE_SECONDS,
    )


def _read(api: k8s_client.CoordinationV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """The Lease as JSON (the client's models turn renewTime into naive datetimes), or None if absent."""
    try:
        resp = api.read_namespaced_lease(
            name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    lease: dict[str, Any] = json.loads(resp.data)  # type: ignore[attr-defined]
    return lease


def _version(lease: dict[str, Any]) -> str:
    return str(lease["metadata"]["resourceVersion"])


def _spec(identity: str, *, acquired: bool) -> dict[str, Any]:
    now = micro_time(_now())
    spec: dict[str, Any] = {"holderIdentity": identity, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}
    if acquired:
        spec["acquireTime"] = now
    return spec


@task(**KUBE_API)
def acquire_rollout_lock(cluster: KubernetesCluster, namespace: str, app: str, identity: str) -> None:
    """Take the app's Lease for `identity`, or raise RolloutBusy naming the holder (never retried: a rollout
    that may wait hours for an approval must not be queued behind)."""
    name = lease_name(app)
    with cluster.api_client() as api_client:
        api = k8s_client.CoordinationV1Api(api_client)
        for _ in range(3):  # a 409 means another run wrote in between: read again and decide again
            lease = _read(api, namespace, name)
            try:
                if lease is None:
                    body = {"metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rollbook"}},
                            "spec": _spec(identity, acquired=True)}  # fmt: skip
                    api.create_namespaced_lease(namespace, body, _request_timeout=REQUEST_TIMEOUT_SECONDS)  # type: ignore[arg-type]
                    return
                holding = _holding(lease)
                if not holding.free_for(identity, _now()):
                    raise busy_error(namespace, app, holding, _now())
                body = {
                    "metadata": {"name": name, "resourceVersion": _version(lease)},
                    "spec": _spec(identity, acquired=holding.holder != identity),
                }
                api.replace_namespaced_lease(name, namespace, body, _request_timeout=REQUEST_TIMEOUT_SECONDS)  # type: ignore[arg-type]
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        lease = _read(api, namespace, name)
        raise busy_error(namespace, app, _holding(lease) if lease else Holding("", None, LEASE_SECONDS), _now())


@task(**KUBE_API)
def release_rollout_lock(cluster: KubernetesCluster, namespace: str, app: str, identity: str) -> bool:
    """Delete the app's Lease if `identity` still holds it (guarded by the version read); True if deleted.
    A Lease another run took over after ours expired is left alone."""
    name = lease_name(app)
    with cluster.api_client() as api_client:
        api = k8s_client.CoordinationV1Api(api_client)
        for _ in range(3):  # a 409: the Lease changed since it was read (renewed at that moment): read again
            lease = _read(api, namespace, name)
            if lease is None or _holding(lease).holder != identity:
                return False
            guard = k8s_client.V1Preconditions(resource_version=_version(lease))
            try:
                api.delete_namespaced_lease(
                    name, namespace, body=k8s_client.V1DeleteOptions(preconditions=guard),
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )  # fmt: skip
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return False
                if exc.status != 409:
                    raise
        raise RuntimeError(f"could not release the rollout lock {name!r} in {namespace!r}: it kept changing")


def _renew(cluster: KubernetesCluster, namespace: str, app: str, identity: str) -> str:
    """One renewal: "renewed", "lost" (another run holds it now) or "failed" (the API did not answer)."""
    name = lease_name(app)
    try:
        with cluster.api_client() as api_client:
            api = k8s_client.CoordinationV1Api(api_client)
            lease = _read(api, namespace, name)
            if lease is None or _holding(lease).holder != identity:
                return "lost"
            spec = {**_spec(identity, acquired=False), "acquireTime": (lease.get("spec") or {}).get("acquireTime")}
            body = {"metadata": {"name": name, "resourceVersion": _version(lease)}, "spec": spec}
            api.replace_namespaced_lease(name, namespace, body, _request_timeout=REQUEST_TIMEOUT_SECONDS)  # type: ignore[arg-type]
            return "renewed"
    except ApiException as exc:
        return "failed" if exc.status == 409 or is_transient(exc) else "lost"
    except Exception as exc:  # noqa: BLE001 - connection errors of every kind: try again at the next tick
        return "failed" if is_transient(exc) else "lost"


def _keep_renewed(
    cluster: KubernetesCluster, namespace: str, app: str, identity: str, *, stop: threading.Event, logger: Any
) -> None:
    failures = 0
    while not stop.wait(RENEW_EVERY_SECONDS):
        answer = _renew(cluster, namespace, app, identity)
        if answer == "lost":
            logger.error(
                "the rollout lock %r of %r in %r is no longer ours (it expired while the API server did not answer, "
                "and another run took it): two rollouts of the app may now overlap",
                lease_name(app), app, namespace,
            )  # fmt: skip
            return
        failures = 0 if answer == "renewed" else failures + 1
        if failures:
            logger.warning("could not renew the rollout lock %r (%d in a row); retrying", lease_name(app), failures)


def _logger() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:  # used outside a flow run (tests, scripts)
        return get_logger("rollbook.rollout_lock")


def _identity() -> str:
    """Names the run in `kubectl get lease` (holderIdentity), unique even outside a flow run."""
    run = flow_run.name or "no-flow-run"
    return f"{run}/{flow_run.id or uuid.uuid4().hex[:12]}"


@contextmanager
def rollout_lock(cluster: KubernetesCluster, namespace: str, app: str) -> Iterator[str]:
    """Hold the app's lock for the block; raise RolloutBusy at once if another run holds it. A nested use in the
    same context (a subflow of the holder) passes through without taking it again."""
    name = lease_name(app)
    key = f"{namespace}/{name}"
    if key in _held.get():
        yield name
        return
    identity = _identity()
    acquire_rollout_lock(cluster, namespace, app, identity)
    stop = threading.Event()
    renewer = threading.Thread(
        target=_keep_renewed,
        args=(cluster, namespace, app, identity),
        kwargs={"stop": stop, "logger": _logger()},  # the thread has no run context of its own
        daemon=True,
        name=f"renew-{name}",
    )
    renewer.start()
    token = _held.set(_held.get() | {key})
    try:
        yield name
    finally:
        _held.reset(token)
        stop.set()
        renewer.join(REQUEST_TIMEOUT_SECONDS * 2)
        release_rollout_lock(cluster, namespace, app, identity)
