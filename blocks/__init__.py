"""Prefect block types for rollbook; `prefect block register -m blocks` registers all of them.

Each type is imported on first use (PEP 562), so a flow that needs the cluster block does not pay for
importing boto3 and prefect-aws; `dir(blocks)` still lists every type, which is what block registration reads.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

import rollbook  # noqa: F401  (installs log redaction before any block can hold a secret)

_HOMES = {
    "BackupBucket": "blocks.backup_bucket",
    "ContainerRegistry": "blocks.container_registry",
    "DatabaseConnection": "blocks.database",
    "EtcdEndpoint": "blocks.etcd",
    "EtcdTlsFiles": "blocks.etcd",
    "KubernetesCluster": "blocks.kubernetes_cluster",
    "PrometheusConnection": "blocks.prometheus",
}
__all__ = [
    "BackupBucket",
    "ContainerRegistry",
    "DatabaseConnection",
    "EtcdEndpoint",
    "EtcdTlsFiles",
    "KubernetesCluster",
    "PrometheusConnection",
]

if TYPE_CHECKING:
    from blocks.backup_bucket import BackupBucket
    from blocks.container_registry import ContainerRegistry
    from blocks.database import DatabaseConnection
    from blocks.etcd import EtcdEndpoint, EtcdTlsFiles
    from blocks.kubernetes_cluster import KubernetesCluster
    from blocks.prometheus import PrometheusConnection


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
