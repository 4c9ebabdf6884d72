"""Scratch namespaces for drills: created with a label, and only ever deleted if they carry it."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import KUBE_API, KUBE_API_LONG

SCRATCH_LABEL = "rollbook.dev/scratch"


class NotScratchNamespace(ValueError):
    """The namespace exists but was not created as a scratch namespace: it is never reused or deleted."""


def _is_scratch(ns: object, purpose: str) -> bool:
    labels = getattr(getattr(ns, "metadata", None), "labels", None) or {}
    return bool(labels.get(SCRATCH_LABEL) == purpose)


@task(**KUBE_API_LONG)
def ensure_scratch_namespace(cluster: KubernetesCluster, name: str, purpose: str, wait_seconds: int = 120) -> bool:
    """Create `name` labelled as scratch for `purpose`; True if created, False if an earlier one is reused.

    A namespace of that name without the label belongs to someone else: refuse. One still terminating from a
    previous run is waited for (up to `wait_seconds`) and then created afresh.
    """
    deadline = time.monotonic() + wait_seconds
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        while True:
            try:
                ns: Any = core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                ns = None
            if ns is not None and not _is_scratch(ns, purpose):
                raise NotScratchNamespace(
                    f"namespace {name!r} exists and is not a {purpose} scratch namespace "
                    f"(label {SCRATCH_LABEL}={purpose}); choose another name"
                )
            if ns is not None and ns.status.phase != "Terminating":
                get_run_logger().warning("reusing scratch namespace %s left by an earlier run", name)
                return False
            if ns is None:
                body: Any = {"metadata": {"name": name, "labels": {SCRATCH_LABEL: purpose}}}
                try:
                    core.create_namespace(body, _request_timeout=REQUEST_TIMEOUT_SECONDS)
                    return True
                except ApiException as exc:
                    if exc.status != 409:  # 409: created or still terminating meanwhile: look again
                        raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"namespace {name!r} still terminating after {wait_seconds}s")
            time.sleep(2)


@task(**KUBE_API)
def delete_scratch_namespace(cluster: KubernetesCluster, name: str, purpose: str) -> bool:
    """Delete the scratch namespace (and with it the release and its history); False if already gone."""
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        try:
            ns = core.read_namespace(name, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        if not _is_scratch(ns, purpose):
            raise NotScratchNamespace(f"namespace {name!r} is not a {purpose} scratch namespace; not deleting it")
        try:
            core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True
