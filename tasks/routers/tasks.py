"""The router calls flows make, as Prefect tasks: each opens a client, calls one router method, and is safe to
retry (every method reads the cluster first and re-applying a weight already served writes the same value)."""

from __future__ import annotations

from prefect import task

from blocks import KubernetesCluster
from tasks.policies import KUBE_API
from tasks.routers.registry import Router


@task(**KUBE_API)
def ensure_route(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.ensure(api)


@task(**KUBE_API)
def read_weight(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.read_weight(api)


@task(**KUBE_API)
def set_weight(cluster: KubernetesCluster, router: Router, weight: int) -> int:
    """Idempotent: setting the weight already served is a no-op write, so a retried step never shifts twice."""
    with cluster.api_client() as api:
        return router.set_weight(api, weight)


@task(**KUBE_API)
def reset_route(cluster: KubernetesCluster, router: Router) -> int:
    with cluster.api_client() as api:
        return router.reset(api)


@task(**KUBE_API)
def remove_route(cluster: KubernetesCluster, router: Router) -> bool:
    with cluster.api_client() as api:
        return router.remove(api)


@task(**KUBE_API)
def hand_over_route(cluster: KubernetesCluster, router: Router) -> bool:
    """After a full shift, make the canary the route's only backend (blue/green's finish)."""
    with cluster.api_client() as api:
        return router.hand_over(api)
