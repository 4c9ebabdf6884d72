"""Demo flow: say hello to a Kubernetes cluster (server version and pod count of one namespace)."""

from __future__ import annotations

from typing import Self

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.cluster import count_pods, resolve_cluster, server_version


class HelloRequest(BaseModel):
    """Which cluster to greet. Frozen because a default instance is shared between calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_block: str | None = Field(default=None, description="Name of a saved 'Rollbook Kubernetes Cluster' block.")
    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file to use instead of a block; default $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Kubeconfig context (only with a kubeconfig file).")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace whose pods are counted; default: the block's namespace, else 'default'.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        return self


@flow(name="hello-cluster", log_prints=True)
def hello_cluster(request: HelloRequest = HelloRequest()) -> dict[str, object]:  # noqa: B008 (frozen model)
    """Check that a cluster answers: report its version and how many pods run in one namespace."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    version = server_version(cluster)
    pods = count_pods(cluster, namespace)
    get_run_logger().info("Cluster answers: Kubernetes %s, %d pod(s) in namespace %r", version, pods, namespace)
    return {"version": version, "namespace": namespace, "pods": pods}
