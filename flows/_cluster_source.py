"""Parameters every runbook shares: which cluster to act on, and the name rules Kubernetes and Helm enforce.

Checking names here means a typo fails in the Prefect form, before any task runs.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Helm's own rule for release names (lowercase DNS subdomain, at most 53 characters).
RELEASE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class ClusterSource(BaseModel):
    """The cluster comes from a saved block or from a kubeconfig file (with an optional context), never both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_block: str | None = Field(default=None, description="Name of a saved 'Rollbook Kubernetes Cluster' block.")
    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file to use instead of a block; default $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Kubeconfig context (only with a kubeconfig file).")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        return self
