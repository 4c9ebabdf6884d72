"""Parameters shared by the Deployment runbooks: which cluster, which namespace, which Deployment."""

from __future__ import annotations

from pydantic import Field

from flows._cluster_source import DNS_LABEL, DNS_SUBDOMAIN, ClusterSource


class DeploymentTarget(ClusterSource):
    """One Deployment on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the Deployment; default: the block's namespace, else 'default'.",
    )
    deployment: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Deployment name.")
