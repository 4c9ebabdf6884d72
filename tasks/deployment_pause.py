"""Pausing and resuming a Deployment's rollout, as `kubectl rollout pause|resume` do: `spec.paused`.

A paused Deployment keeps its pods as they are: the controller makes no new ReplicaSet progress, so a release
whose pods crash on a new schema stops replacing healthy pods. One merge patch sets `spec.paused` together with
the run's audit annotations; setting a value the Deployment already has is harmless, so a retry is safe.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from rollbook.revisions import JSON
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.kube import _body, _not_found
from tasks.policies import KUBE_API


def _merge_patch(cluster: KubernetesCluster, namespace: str, name: str, body: dict[str, Any]) -> JSON:
    with cluster.api_client() as api:
        try:
            resp = k8s_client.AppsV1Api(api).patch_namespaced_deployment(
                name, namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found(api, namespace, f"deployment {name!r}") from None
            raise
        return _body(resp)


@task(**KUBE_API)
def set_deployment_paused(
    cluster: KubernetesCluster, namespace: str, name: str, *, paused: bool, annotations: dict[str, str]
) -> JSON:
    """Set `spec.paused` and the metadata annotations in one merge patch; the Deployment as written."""
    return _merge_patch(
        cluster, namespace, name, {"metadata": {"annotations": annotations}, "spec": {"paused": paused}}
    )


@task(**KUBE_API)
def annotate_deployment(cluster: KubernetesCluster, namespace: str, name: str, annotations: dict[str, str]) -> JSON:
    """Metadata annotations only (no rollout starts); the Deployment as written."""
    return _merge_patch(cluster, namespace, name, {"metadata": {"annotations": annotations}})
