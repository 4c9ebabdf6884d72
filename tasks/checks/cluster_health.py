"""Cluster health: the API server's /readyz checks, and NotReady or cordoned nodes by name."""

from __future__ import annotations

import time

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from rollbook.capacity import Node, NodeFacts, node_facts
from rollbook.checklist import CheckResult, Status, one_line
from tasks.checks.common import NAMES_SHOWN, connected, named
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.listing import pages
from tasks.policies import CHECK_KUBE_API, CHECK_KUBE_LIST


@task(**CHECK_KUBE_LIST)
def list_nodes(cluster: KubernetesCluster) -> list[NodeFacts]:
    """Every node, reduced to what the health and capacity checks need; listed once for both."""
    with connected(cluster) as api:
        return [node_facts(node) for page in pages(k8s_client.CoreV1Api(api).list_node, Node) for node in page]


def readyz(api: k8s_client.ApiClient) -> tuple[bool, list[str]]:
    """The API server's /readyz?verbose: (ready, the checks that are not ok)."""
    method, url, headers, body, post = api.param_serialize(
        method="GET",
        resource_path="/readyz",
        query_params=[("verbose", "true")],
        header_params={"Accept": "text/plain"},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(method, url, headers, body, post, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    resp.read()
    status = int(resp.status)
    if status in (401, 403):
        raise PermissionError(f"/readyz answered {status}: not allowed to read the API server's readiness")
    if status >= 500 and not resp.data:
        raise ApiException(status=status, reason="readyz unavailable")
    text = (resp.data or b"").decode("utf-8", "replace")
    failing = [line.strip() for line in text.splitlines() if line.startswith("[-]")]
    return status == 200 and not failing, failing


def health_result(api_ready: bool, failing: list[str], nodes: list[NodeFacts], seconds: float = 0.0) -> CheckResult:
    total = len(nodes)
    not_ready = [n.name for n in nodes if not n.ready]
    cordoned = [n.name for n in nodes if n.cordoned]
    problems = []
    if not api_ready:
        problems.append(f"API server not ready ({', '.join(failing) or 'readyz failed'})")
    if not_ready:
        problems.append(f"{len(not_ready)} node(s) NotReady: {named(not_ready)}")
    if cordoned:
        problems.append(f"{len(cordoned)} node(s) cordoned (SchedulingDisabled): {named(cordoned)}")
    if total == 0:
        problems.append("the cluster has no nodes")
    evidence = {
        "nodes": total,
        "not_ready": not_ready[:NAMES_SHOWN],
        "not_ready_count": len(not_ready),
        "cordoned": cordoned[:NAMES_SHOWN],
        "cordoned_count": len(cordoned),
        "readyz_failing": failing,
    }
    status = Status.FAIL if problems else Status.PASS
    reason = "; ".join(problems) if problems else f"API server ready; all {total} nodes Ready and schedulable"
    return CheckResult(
        check="cluster-health", status=status, reason=one_line(reason), evidence=evidence, seconds=seconds
    )


@task(**CHECK_KUBE_API)
def check_cluster_health(cluster: KubernetesCluster, nodes: list[NodeFacts]) -> CheckResult:
    """NotReady and cordoned nodes by name, and the API server's /readyz checks."""
    started = time.monotonic()
    with connected(cluster) as api:
        api_ready, failing = readyz(api)
    return health_result(api_ready, failing, nodes, time.monotonic() - started)
