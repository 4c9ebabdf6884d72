"""Read-only discovery for progressive rollouts: which Ingress, Service and version belong to a Helm release.

Objects are found by the standard Helm chart label `app.kubernetes.io/instance=<release>`, so an unknown
release or one without an Ingress or Service is a clear error before anything changes.
"""

from __future__ import annotations

import json
from typing import Any

import pyhelm3
from kubernetes import client as k8s_client
from prefect import task
from pydantic import BaseModel

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.helm_cli import DEFAULT_HELM, run_pyhelm3
from tasks.helm_errors import HelmUnavailable, classify
from tasks.policies import HELM_CHANGE, KUBE_API
from tasks.release_workloads import patch_release_deployments
from tasks.routers.nginx import CANARY

INSTANCE = "app.kubernetes.io/instance"
VERSION = "app.kubernetes.io/version"


class RoutingNotFound(ValueError):
    """A release lacks the object a rollout needs (permanent: never retried)."""


class ReleaseRouting(BaseModel):
    release: str
    ingress: str | None
    service: str
    version: str


def _items(response: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return items


def _routing(api: k8s_client.ApiClient, namespace: str, release: str) -> ReleaseRouting:
    selector = f"{INSTANCE}={release}"
    opts: dict[str, Any] = {"label_selector": selector, "_preload_content": False}
    opts["_request_timeout"] = REQUEST_TIMEOUT_SECONDS
    deployments = _items(k8s_client.AppsV1Api(api).list_namespaced_deployment(namespace, **opts))
    if not deployments:
        raise RoutingNotFound(f"release {release!r}: no Deployment labelled {selector} in namespace {namespace!r}")
    services = _items(k8s_client.CoreV1Api(api).list_namespaced_service(namespace, **opts))
    if len(services) != 1:
        raise RoutingNotFound(f"release {release!r}: expected one Service labelled {selector}, found {len(services)}")
    ingresses = [
        i
        for i in _items(k8s_client.NetworkingV1Api(api).list_namespaced_ingress(namespace, **opts))
        if (i["metadata"].get("annotations") or {}).get(CANARY) != "true"
    ]
    if len(ingresses) > 1:
        raise RoutingNotFound(f"release {release!r}: more than one (non-canary) Ingress labelled {selector}")
    meta = deployments[0]["spec"]["template"]["metadata"]
    return ReleaseRouting(
        release=release,
        ingress=ingresses[0]["metadata"]["name"] if ingresses else None,
        service=services[0]["metadata"]["name"],
        version=(meta.get("labels") or {}).get(VERSION, ""),
    )


@task(**KUBE_API)
def release_routing(cluster: KubernetesCluster, namespace: str, release: str) -> ReleaseRouting:
    with cluster.api_client() as api:
        return _routing(api, namespace, release)


@task(**KUBE_API)
def label_release_deployments(
    cluster: KubernetesCluster, namespace: str, release: str, labels: dict[str, str]
) -> list[str]:
    """Merge `labels` into the metadata of the release's Deployments (not the pod template: no rollout).

    The release's Deployments are the ones `annotate_release_deployments` annotates (helm's ownership
    annotations), so a label and an audit annotation always land on the same objects."""
    return patch_release_deployments(cluster, namespace, release, {"labels": labels})


@task(**HELM_CHANGE)
def uninstall_release(
    cluster: KubernetesCluster, namespace: str, release: str, helm: str = DEFAULT_HELM, timeout_seconds: int = 300
) -> bool:
    """`helm uninstall --wait`; False if the release was already gone (a retry after success is harmless)."""

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> bool:
        try:
            await command.uninstall(release, namespace=namespace, wait=True, timeout=f"{timeout_seconds}s")
        except pyhelm3.errors.ReleaseNotFoundError:
            return False
        return True

    try:
        return run_pyhelm3(cluster, helm, timeout_seconds + 30, work)
    except pyhelm3.errors.Error as exc:
        raise classify(exc, "uninstall", release, namespace) from None
    except TimeoutError:
        raise HelmUnavailable(
            f"uninstall: helm did not finish within {timeout_seconds + 30}s", release, namespace
        ) from None
