"""Parameters shared by the Helm runbooks: which cluster, which release, which helm binary, how long to wait."""

from __future__ import annotations

from pydantic import Field

from flows._cluster_source import DNS_LABEL, RELEASE_NAME, ClusterSource


class HelmReleaseTarget(ClusterSource):
    """One Helm release on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Namespace of the release.")
    release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Helm release name.")
    timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="How long helm waits for the release's resources to become ready."
    )
    helm_executable: str = Field(
        default="helm", min_length=1, description="helm v4 binary: a name on PATH or an absolute path."
    )
