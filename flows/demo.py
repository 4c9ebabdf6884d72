"""Demo flow: say hello to a Kubernetes cluster (server version and pod count of one namespace)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from pydantic import Field

from flows._cluster_source import ClusterSource
from rollbook.types import FormOptional, Namespace
from tasks.cluster import count_pods, resolve_cluster, server_version


class HelloRequest(ClusterSource):
    """Which cluster to greet. Frozen because a default instance is shared between calls."""

    namespace: FormOptional[Namespace] = Field(
        default=None,
        description="Namespace whose pods are counted; default: the block's namespace, else 'default'.",
    )


@flow(name="hello-cluster", log_prints=True)
def hello_cluster(request: HelloRequest = HelloRequest()) -> dict[str, object]:  # noqa: B008 (frozen model)
    """Check that a cluster answers: report its version and how many pods run in one namespace."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    version = server_version(cluster)
    pods = count_pods(cluster, namespace)
    get_run_logger().info("Cluster answers: Kubernetes %s, %d pod(s) in namespace %r", version, pods, namespace)
    return {"version": version, "namespace": namespace, "pods": pods}
