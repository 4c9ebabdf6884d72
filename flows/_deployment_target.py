"""Parameters shared by the Deployment runbooks: which cluster, which namespace, which Deployment."""

from __future__ import annotations

import re
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class DeploymentTarget(BaseModel):
    """One Deployment on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_block: str | None = Field(default=None, description="Name of a saved 'Rollbook Kubernetes Cluster' block.")
    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file to use instead of a block; default $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Kubeconfig context (only with a kubeconfig file).")
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the Deployment; default: the block's namespace, else 'default'.",
    )
    deployment: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Deployment name.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        return self


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]
