"""Read-only Kubernetes tasks used by the demo flow and as building blocks for runbooks."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from tasks.listing import count
from tasks.policies import KUBE_API, KUBE_LIST, PREFECT_API

# Per HTTP request; the task-level timeout bounds all retries of the client inside one attempt.
REQUEST_TIMEOUT_SECONDS = 10


def default_kubeconfig_path() -> str:
    """First file of $KUBECONFIG, else ~/.kube/config: the same default kubectl uses."""
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return first or str(Path.home() / ".kube" / "config")


@task(**PREFECT_API)
def resolve_cluster(cluster_block: str | None, kubeconfig_path: str | None, context: str | None) -> KubernetesCluster:
    """Load a saved cluster block, or describe a kubeconfig file; loading a block reads the Prefect API."""
    if cluster_block:
        block = KubernetesCluster.load(cluster_block)
        if not isinstance(block, KubernetesCluster):  # also narrows Prefect's sync/async dispatch type
            raise TypeError(f"block {cluster_block!r} is not a Rollbook Kubernetes Cluster")
        return block
    path = kubeconfig_path or default_kubeconfig_path()
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"kubeconfig not found: {path} (pass kubeconfig_path or cluster_block)")
    return KubernetesCluster(kubeconfig_path=path, context=context or None)  # "" (the form's empty box): current


@task(**KUBE_API)
def server_version(cluster: KubernetesCluster) -> str:
    """The API server's gitVersion: the cheapest call that proves reachability and authentication."""
    with cluster.api_client() as api:
        info = k8s_client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_SECONDS)
    return str(info.git_version)


@task(**KUBE_LIST)
def count_pods(cluster: KubernetesCluster, namespace: str) -> int:
    """Number of pods in a namespace, read in pages so a large namespace is not one huge response."""
    with cluster.api_client() as api:
        return count(k8s_client.CoreV1Api(api).list_namespaced_pod, namespace)


def namespace_exists(api: k8s_client.ApiClient, namespace: str) -> bool:
    try:
        k8s_client.CoreV1Api(api).read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
