"""Parameters shared by the Helm runbooks: which cluster, which release, which helm binary, how long to wait."""

from __future__ import annotations

from pydantic import Field

from flows._cluster_source import ClusterSource
from rollbook.types import LocalPath, Namespace, ReleaseName


class HelmReleaseTarget(ClusterSource):
    """One Helm release on one cluster. The cluster comes from a saved block or a kubeconfig file, as in the demo."""

    namespace: Namespace = Field(description="Namespace of the release.")
    release: ReleaseName = Field(description="Helm release name.")
    timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="How long helm waits for the release's resources to become ready."
    )
    helm_executable: LocalPath = Field(
        default="helm", description="helm v4 binary: a name on PATH or an absolute path."
    )
