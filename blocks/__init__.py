"""Prefect block types for rollbook; `prefect block register -m blocks` registers all of them."""

import rollbook  # noqa: F401  (installs log redaction before any block can hold a secret)
from blocks.backup_bucket import BackupBucket
from blocks.container_registry import ContainerRegistry
from blocks.database import DatabaseConnection
from blocks.etcd import EtcdEndpoint, EtcdTlsFiles
from blocks.kubernetes_cluster import KubernetesCluster
from blocks.prometheus import PrometheusConnection

__all__ = [
    "BackupBucket",
    "ContainerRegistry",
    "DatabaseConnection",
    "EtcdEndpoint",
    "EtcdTlsFiles",
    "KubernetesCluster",
    "PrometheusConnection",
]
