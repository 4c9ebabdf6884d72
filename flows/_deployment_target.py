"""Parameters shared by the Deployment runbooks: which cluster, which namespace, which Deployment."""

from __future__ import annotations

from pydantic import Field

from flows._cluster_source import ClusterSource
from rollbook.types import FormOptional, Namespace, ResourceName


class DeploymentTarget(ClusterSource):
    """One Deployment on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    namespace: FormOptional[Namespace] = Field(
        default=None, description="Namespace of the Deployment; default: the block's namespace, else 'default'."
    )
    deployment: ResourceName = Field(description="Deployment name.")
