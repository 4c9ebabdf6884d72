"""What every check shares: how many names evidence shows, and the one message for an unreachable API server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client as k8s_client
from prefect import task
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import KUBE_API

NAMES_SHOWN = 20  # bad nodes/pods named in evidence; the count is always complete
JSON = dict[str, Any]
_OBJECT_REPR = re.compile(r"<[^>]*>:?\s*")


class ApiServerUnreachable(ConnectionError):
    """No answer from the API server at all (refused, DNS, TLS, timeout); transient, so retried first."""


def named(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else "")


def connection_reason(exc: BaseException) -> str:
    """The useful part of a connection error: urllib3 wraps the socket error in MaxRetryError and prefixes it
    with the connection object's repr, neither of which helps the reader."""
    inner: BaseException = exc
    while isinstance(inner, MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    text = _OBJECT_REPR.sub("", str(inner)).strip() or type(inner).__name__
    return " ".join(text.split())[:300]


def unreachable(host: str, exc: BaseException) -> ApiServerUnreachable:
    return ApiServerUnreachable(f"cannot reach the API server at {host}: {connection_reason(exc)}")


@contextmanager
def connected(cluster: KubernetesCluster) -> Iterator[k8s_client.ApiClient]:
    """A client for `cluster` whose connection failures say which API server could not be reached, and why."""
    with cluster.api_client() as api:
        try:
            yield api
        except ApiServerUnreachable:
            raise
        except (Urllib3Error, ConnectionError) as exc:
            raise unreachable(api.configuration.host, exc) from exc


@task(**KUBE_API)
def reach_api_server(cluster: KubernetesCluster) -> str:
    """The API server's version: proves it answers before the checks that need it start (retried like every
    API call, so a restart of a few seconds is ridden out); raises ApiServerUnreachable naming it otherwise."""
    with connected(cluster) as api:
        info = k8s_client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT_SECONDS)
    return str(info.git_version)
