"""Capacity: free room on the nodes the release's pods may use, against what the release needs.

The arithmetic (requests, surge, taints and tolerations, first-fit) is rollbook/capacity.py; this module reads
the cluster for it: every scheduled pod's requests summed per node, page by page.
"""

from __future__ import annotations

import time

from kubernetes import client as k8s_client
from prefect import task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook.capacity import Need, NodeFacts, Pod, fits, pod_request
from rollbook.checklist import CheckResult, Status, one_line
from tasks.checks.common import connected
from tasks.listing import pages
from tasks.policies import CHECK_COMPUTE, CHECK_KUBE_LIST

INSTANCE_LABEL = "app.kubernetes.io/instance"
UNFINISHED_SCHEDULED = "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="


class PodRequests(BaseModel):
    """Requested (cpu_m, memory) per node, and how many of the release's own pods were left out."""

    used: dict[str, tuple[int, int]]
    replaced: int
    seconds: float


@task(**CHECK_KUBE_LIST)
def pod_requests_by_node(cluster: KubernetesCluster, namespace: str, release: str) -> PodRequests:
    """Requests summed per node over every scheduled, unfinished pod, leaving out the release's own pods
    (label app.kubernetes.io/instance, as helm charts set it): they are what the new release replaces.
    Needs no node list, so the flow runs it while the nodes are being listed."""
    started = time.monotonic()
    used: dict[str, tuple[int, int]] = {}
    replaced = 0
    with connected(cluster) as api:
        core = k8s_client.CoreV1Api(api)
        for page in pages(core.list_pod_for_all_namespaces, Pod, field_selector=UNFINISHED_SCHEDULED):
            for pod in page:
                if pod.metadata.namespace == namespace and pod.metadata.labels.get(INSTANCE_LABEL) == release:
                    replaced += 1
                    continue
                cpu, mem = pod_request(pod.spec)
                old_cpu, old_mem = used.get(pod.spec.node_name, (0, 0))
                used[pod.spec.node_name] = (old_cpu + cpu, old_mem + mem)
    return PodRequests(used=used, replaced=replaced, seconds=time.monotonic() - started)


@task(**CHECK_COMPUTE)
def check_capacity(nodes: list[NodeFacts], requested: PodRequests, needs: list[Need]) -> CheckResult:
    """Allocatable minus requested on every node the release's pods may use, against what the release needs.
    Pure arithmetic on what the two listing tasks read (no retries: nothing here can fail transiently)."""
    answer = fits(nodes, requested.used, needs, upgrade=requested.replaced > 0)
    return CheckResult(
        check="capacity",
        status=Status.PASS if answer.fits else Status.FAIL,
        reason=one_line(answer.reason),
        evidence=answer.evidence,
        seconds=requested.seconds,
    )
