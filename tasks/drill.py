"""The dr-drill's own workload and disasters: namespaces it creates (labelled, so it never deletes anything else),
and the two failures it rehearses: those namespaces deleted, or etcd stopped with its data directory gone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.controlplane.base import EtcdMember
from tasks.policies import CONTROL_PLANE, KUBE_API_LONG

DRILL_LABEL = "rollbook.dev/drill"
DRILL_IMAGE = "registry.invalid/rollbook/drill:1"  # never pulled on the sandbox (kwok runs no containers)


def _namespace(core: k8s_client.CoreV1Api, apps: k8s_client.AppsV1Api, name: str, *, configmaps: int,
               replicas: int, drill: str) -> None:  # fmt: skip
    # plain dicts, which the client accepts as bodies (its stubs ask for model objects)
    namespace: Any = {"metadata": {"name": name, "labels": {DRILL_LABEL: drill}}}
    core.create_namespace(namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    for index in range(configmaps):
        body: Any = {"metadata": {"name": f"config-{index}"}, "data": {"index": str(index)}}
        core.create_namespaced_config_map(name, body, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    labels = {"app": "drill"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": DRILL_IMAGE}]}}
    deployment: Any = {
        "metadata": {"name": "drill"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
    }
    apps.create_namespaced_deployment(name, deployment,
                                      _request_timeout=REQUEST_TIMEOUT_SECONDS)  # fmt: skip


@task(**KUBE_API_LONG)
def create_workload(
    cluster: KubernetesCluster, drill: str, *, namespaces: int, configmaps: int, replicas: int
) -> list[str]:
    """`namespaces` namespaces `<drill>-<n>`, each with `configmaps` ConfigMaps and a Deployment; an existing one
    (a retry) is left as it is."""
    names = [f"{drill}-{n}" for n in range(namespaces)]
    with cluster.api_client() as api:
        core, apps = k8s_client.CoreV1Api(api), k8s_client.AppsV1Api(api)

        def one(name: str) -> None:
            try:
                _namespace(core, apps, name, configmaps=configmaps, replicas=replicas, drill=drill)
            except ApiException as exc:
                if exc.status != 409:
                    raise

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))
    return names


@task(**KUBE_API_LONG)
def delete_workload(cluster: KubernetesCluster, drill: str, *, wait_seconds: float) -> list[str]:
    """Delete the namespaces labelled with this drill (only those) and wait until they are gone."""
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        selector = f"{DRILL_LABEL}={drill}"
        names = [str(n.metadata.name) for n in core.list_namespace(label_selector=selector).items if n.metadata]
        for name in names:
            try:
                core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        deadline = time.monotonic() + wait_seconds
        while core.list_namespace(label_selector=selector).items:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the drill's namespaces were not gone within {wait_seconds:.0f}s")
            time.sleep(1)
    return sorted(str(n) for n in names)


@task(**CONTROL_PLANE)
def move_etcd_data_away(member: EtcdMember, stamp: str) -> Path:
    """The 'etcd lost' disaster (etcd must be stopped first): its data directory disappears from where etcd
    reads it. Moved aside rather than deleted, so a drill that goes wrong can still be put back by hand."""
    away = member.path.with_name(f"{member.path.name}.wiped-by-drill-{stamp}")
    member.path.rename(away)
    return away
