"""Read-only discovery for progressive rollouts: which Ingress, Service and version belong to a Helm release.

Objects are found by the standard Helm chart label `app.kubernetes.io/instance=<release>`, so an unknown
release or one without an Ingress or Service is a clear error before anything changes.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client as k8s_client
from prefect import task
from pydantic import BaseModel

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.policies import retry_transient
from tasks.traffic import CANARY

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


@task(retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient, timeout_seconds=60)
def release_routing(cluster: KubernetesCluster, namespace: str, release: str) -> ReleaseRouting:
    with cluster.api_client() as api:
        return _routing(api, namespace, release)


@task(retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient, timeout_seconds=60)
def label_release_deployments(
    cluster: KubernetesCluster, namespace: str, release: str, labels: dict[str, str]
) -> list[str]:
    """Merge `labels` into the metadata of the release's Deployments (not the pod template: no rollout)."""
    names = []
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        opts: dict[str, Any] = {"label_selector": f"{INSTANCE}={release}", "_preload_content": False}
        for dep in _items(apps.list_namespaced_deployment(namespace, **opts)):
            name = dep["metadata"]["name"]
            apps.patch_namespaced_deployment(
                name, namespace, {"metadata": {"labels": labels}}, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
            names.append(name)
    return names


@task(retries=1, retry_delay_seconds=5, timeout_seconds=660)
def uninstall_release(
    cluster: KubernetesCluster, namespace: str, release: str, helm: str = "helm", timeout_seconds: int = 300
) -> bool:
    """`helm uninstall --wait`; False if the release was already gone (a retry after success is harmless)."""
    import pyhelm3

    from tasks.helm import _run_pyhelm3

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> bool:
        try:
            await command.uninstall(release, namespace=namespace, wait=True, timeout=f"{timeout_seconds}s")
        except pyhelm3.errors.ReleaseNotFoundError:
            return False
        return True

    return _run_pyhelm3(cluster, helm, timeout_seconds + 30, work)
