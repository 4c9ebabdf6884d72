"""Parameters both Velero flows share: the cluster, where Velero runs, and how long to wait for it."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from flows._cluster_source import ClusterSource
from rollbook.types import Namespace


class VeleroSource(ClusterSource):
    """The cluster, and the namespace Velero's server watches for its objects (`velero install --namespace`)."""

    velero_namespace: Namespace = Field(default="velero", description="Namespace Velero's server runs in.")
    wait_timeout_seconds: int = Field(
        default=900, ge=10, le=6 * 3600, description="How long to wait for Velero to finish (a final phase)."
    )


def generated_name(prefix: str) -> str:
    """A name unique to the second, within Kubernetes' 63-character label limit (Velero labels objects with it)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"{prefix[: 62 - len(stamp)].rstrip('-')}-{stamp}"
