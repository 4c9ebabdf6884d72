"""The Kubernetes tasks on their own: optimistic concurrency on the rollback patch, safe retries, markers."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from blocks import KubernetesCluster
from flows.rollout_history import HistoryRequest, rollout_history
from rollbook import revisions
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries
from tasks.kube import (
    ConcurrentChange,
    ObjectNotFound,
    list_replica_sets,
    mark_rollout_complete,
    patch_deployment_rollback,
    read_deployment,
)

MARKER = ("rollbook.dev/flow-run-id", "run-1")


@pytest.fixture
def two_revisions(sandbox: Sandbox, namespace: str) -> tuple[KubernetesCluster, dict[str, Any], list[dict[str, Any]]]:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    ns = ("-n", namespace)
    sandbox.kubectl("create", "deployment", "web", f"--image={registries.image('1.0.0')}", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", *ns)
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={registries.image('1.1.0')}", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", *ns)
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    deployment = read_deployment.fn(cluster, namespace, "web")
    return cluster, deployment, list_replica_sets.fn(cluster, deployment)


def test_patch_refuses_a_stale_read_but_recognises_its_own_write(
    namespace: str, two_revisions: tuple[KubernetesCluster, dict[str, Any], list[dict[str, Any]]]
) -> None:
    cluster, deployment, replica_sets = two_revisions
    target = revisions.rollback_target(deployment, replica_sets, None)
    template = target["spec"]["template"]
    annotations = {**revisions.rollback_annotations(deployment, target), MARKER[0]: MARKER[1]}
    stale = deployment["metadata"]["resourceVersion"]

    patched = patch_deployment_rollback.fn(cluster, namespace, "web", template, annotations, stale, MARKER)
    assert revisions.equal_ignore_hash(patched["spec"]["template"], template)
    assert "pod-template-hash" not in patched["spec"]["template"]["metadata"]["labels"]
    # a retry after a lost response: the resourceVersion moved, but the write found is ours
    again = patch_deployment_rollback.fn(cluster, namespace, "web", template, annotations, stale, MARKER)
    assert again["metadata"]["generation"] == patched["metadata"]["generation"]
    # someone else's run with the same stale read: refused, nothing written
    with pytest.raises(ConcurrentChange, match="deployment 'web' .* changed after it was read"):
        patch_deployment_rollback.fn(cluster, namespace, "web", template, annotations, stale, ("x", "other"))
    assert read_deployment.fn(cluster, namespace, "web")["metadata"]["generation"] == patched["metadata"]["generation"]


def test_marker_is_bound_to_the_replica_set_uid(
    apps: client.AppsV1Api,
    namespace: str,
    two_revisions: tuple[KubernetesCluster, dict[str, Any], list[dict[str, Any]]],
) -> None:
    cluster, _, replica_sets = two_revisions
    rs = replica_sets[0]
    name, uid = rs["metadata"]["name"], rs["metadata"]["uid"]
    mark_rollout_complete.fn(cluster, namespace, name, uid)
    marked = apps.read_namespaced_replica_set(name, namespace).metadata.annotations
    assert marked[revisions.ROLLOUT_COMPLETE_ANNOTATION].startswith(uid + " ")
    with pytest.raises(ObjectNotFound, match=f"replicaset '{name}'"):
        mark_rollout_complete.fn(cluster, namespace, name, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(ObjectNotFound):
        mark_rollout_complete.fn(cluster, namespace, "no-such-rs", uid)


def test_history_of_an_unknown_revision_names_the_known_ones(
    sandbox: Sandbox, namespace: str, two_revisions: tuple[KubernetesCluster, dict[str, Any], list[dict[str, Any]]]
) -> None:
    request = HistoryRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig), namespace=namespace, deployment="web", revision=5
    )
    with pytest.raises(revisions.RevisionNotFound, match=r"revision 5 not found .*\(revisions: 1, 2\)"):
        rollout_history(request)
