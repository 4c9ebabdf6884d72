"""Parameters shared by the Helm runbooks: which cluster, which release, which helm binary, how long to wait."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Helm's own rule for release names (lowercase DNS subdomain, at most 53 characters).
RELEASE_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class HelmReleaseTarget(BaseModel):
    """One Helm release on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster_block: str | None = Field(default=None, description="Name of a saved 'Rollbook Kubernetes Cluster' block.")
    kubeconfig_path: str | None = Field(
        default=None, description="Kubeconfig file to use instead of a block; default $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="Kubeconfig context (only with a kubeconfig file).")
    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Namespace of the release.")
    release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Helm release name.")
    timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="How long helm waits for the release's resources to become ready."
    )
    helm_executable: str = Field(
        default="helm", min_length=1, description="helm v4 binary: a name on PATH or an absolute path."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        return self
