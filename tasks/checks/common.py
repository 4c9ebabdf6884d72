"""What every check shares: how many names evidence shows, and the one message for an unreachable API server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client as k8s_client
from prefect import task
from urllib3.exceptions import HTTPError as Urllib3Error

from blocks import KubernetesCluster
from rollbook.kube_errors import ClusterUnreachable, connection_reason, unreachable
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import KUBE_API

NAMES_SHOWN = 20  # bad nodes/pods named in evidence; the count is always complete
JSON = dict[str, Any]

# No answer from the API server at all (refused, DNS, TLS, timeout); transient, so retried first. The checks'
# name for the error every Kubernetes call raises then (`blocks.kubernetes_cluster` makes it).
ApiServerUnreachable = ClusterUnreachable
__all__ = ["ApiServerUnreachable", "connected", "connection_reason", "named", "reach_api_server"]


def named(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else "")


@contextmanager
def connected(cluster: KubernetesCluster) -> Iterator[k8s_client.ApiClient]:
    """A client for `cluster` whose connection failures say which API server could not be reached, and why.
    The client's calls raise ClusterUnreachable themselves; this also catches what escapes them (a raw
    response's body read by the caller)."""
    with cluster.api_client() as api:
        try:
            yield api
        except ApiServerUnreachable:
            raise
        except (Urllib3Error, ConnectionError) as exc:
            raise unreachable(api.configuration.host, exc, check=cluster.readyz_command()) from exc


@task(**KUBE_API)
def reach_api_server(cluster: KubernetesCluster) -> str:
    """The API server's version: proves it answers before the checks that need it start (retried like every
    API call, so a restart of a few seconds is ridden out); raises ApiServerUnreachable naming it otherwise."""
    with connected(cluster) as api:
        info = k8s_client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_SECONDS)
    return str(info.git_version)
