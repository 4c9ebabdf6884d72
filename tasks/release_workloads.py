"""A Helm release's workloads and pods on the cluster: are they Ready, what is wrong with them, and the audit
annotations and labels the runbooks put on the release's Deployments.

One membership rule (`release_workloads`): an object belongs to a release when it carries helm's ownership
annotations (`meta.helm.sh/release-name` and `-namespace`), which helm writes on every object it manages,
whatever labels the chart chooses. Pods are found through each workload's own selector (kubectl's rules,
`rollbook.revisions.label_selector_string`); what is wrong with a pod is `rollbook.pods`' one rule. Everything
is read as the API server's JSON, page by page.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client as k8s_client
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook import pods as pod_rules
from rollbook.pods import PodProblem
from rollbook.revisions import label_selector_string
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.listing import Raw, pages
from tasks.policies import KUBE_API, KUBE_API_LONG

RELEASE_ANNOTATION = "meta.helm.sh/release-name"
NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class WorkloadReport(BaseModel):
    kind: str
    name: str
    desired: int
    ready: int
    updated: bool
    images: list[str]


class PodReport(BaseModel):
    name: str
    ready: bool
    phase: str
    images: list[str]
    restarts: int
    problems: list[str]


class PodsReport(BaseModel):
    release: str
    namespace: str
    all_ready: bool
    workloads: list[WorkloadReport]
    pods: list[PodReport]
    problems: list[str]


def _listed(list_fn: Any, namespace: str, **kwargs: Any) -> list[Raw]:
    return [obj for page in pages(list_fn, Raw, namespace, **kwargs) for obj in page]


def _meta(obj: Raw) -> dict[str, Any]:
    return obj.get("metadata") or {}


def belongs_to(obj: Raw, namespace: str, release: str) -> bool:
    """The one membership rule: helm's ownership annotations name this release (in this namespace)."""
    annotations = _meta(obj).get("annotations") or {}
    return bool(
        annotations.get(RELEASE_ANNOTATION) == release and annotations.get(NAMESPACE_ANNOTATION, namespace) == namespace
    )


def release_workloads(api: k8s_client.ApiClient, namespace: str, release: str) -> list[tuple[str, Raw]]:
    """('Deployment', obj)... that helm manages for this release."""
    apps = k8s_client.AppsV1Api(api)
    listers = {
        "Deployment": apps.list_namespaced_deployment,
        "StatefulSet": apps.list_namespaced_stateful_set,
        "DaemonSet": apps.list_namespaced_daemon_set,
    }
    return [
        (kind, obj)
        for kind in WORKLOAD_KINDS
        for obj in _listed(listers[kind], namespace)
        if belongs_to(obj, namespace, release)
    ]


def release_pods(api: k8s_client.ApiClient, namespace: str, workloads: list[tuple[str, Raw]]) -> list[Raw]:
    """The live (not terminating) pods selected by the workloads' selectors."""
    core = k8s_client.CoreV1Api(api)
    found: dict[str, Raw] = {}
    for _, obj in workloads:
        selector = label_selector_string((obj.get("spec") or {}).get("selector"))
        for pod in _listed(core.list_namespaced_pod, namespace, label_selector=selector):
            found[_meta(pod)["name"]] = pod
    return [p for p in found.values() if not _meta(p).get("deletionTimestamp")]


def _is_cause(problem: PodProblem) -> bool:
    """Sampled while helm waits, the pod-level fallbacks of `rollbook.pods` ("phase Pending", "not Ready")
    only say a pod is still starting; the causes worth keeping name a container or the scheduler's reason."""
    return bool(problem.container) or not (problem.reason == "not Ready" or problem.reason.startswith("phase "))


def pod_problems(cluster: KubernetesCluster, namespace: str, release: str) -> list[PodProblem]:
    """What is wrong with the release's pods right now (sampled while helm waits)."""
    with cluster.api_client() as api:
        pods = release_pods(api, namespace, release_workloads(api, namespace, release))
    return [problem for pod in pods for problem in pod_rules.problems(pod) if _is_cause(problem)]


def _workload_report(kind: str, obj: Raw, pods: list[Raw]) -> WorkloadReport:
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, _meta(obj)
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0) >= desired
    else:
        desired = int(spec["replicas"]) if spec.get("replicas") is not None else 1
        updated = int(status.get("updatedReplicas") or 0) >= desired and int(
            status.get("observedGeneration") or 0
        ) >= int(meta.get("generation") or 0)
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    mine = [p for p in pods if all((_meta(p).get("labels") or {}).get(k) == v for k, v in selector.items())]
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return WorkloadReport(
        kind=kind,
        name=meta["name"],
        desired=desired,
        ready=sum(1 for p in mine if pod_rules.is_ready(p)),
        updated=updated,
        images=[c.get("image", "") for c in containers],
    )


def _pod_report(pod: Raw) -> PodReport:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    return PodReport(
        name=_meta(pod)["name"],
        ready=pod_rules.is_ready(pod),
        phase=status.get("phase") or "",
        images=[c.get("image", "") for c in spec.get("containers") or []],
        restarts=sum(int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []),
        problems=pod_rules.problem_texts(pod),
    )


def check_pods(cluster: KubernetesCluster, namespace: str, release: str) -> PodsReport:
    with cluster.api_client() as api:
        workloads = release_workloads(api, namespace, release)
        pods = release_pods(api, namespace, workloads)
    reports = [_workload_report(kind, obj, pods) for kind, obj in workloads]
    pod_reports = [_pod_report(p) for p in sorted(pods, key=lambda p: _meta(p)["name"])]
    problems = [] if workloads else ["no Deployment/StatefulSet/DaemonSet of the release found"]
    for w in reports:
        if w.ready < w.desired:
            problems.append(f"{w.kind}/{w.name}: {w.ready}/{w.desired} pods Ready")
        if not w.updated:
            problems.append(f"{w.kind}/{w.name}: rollout not complete")
    problems += [f"pod {p.name} not Ready" for p in pod_reports if not p.ready]
    return PodsReport(
        release=release,
        namespace=namespace,
        all_ready=not problems,
        workloads=reports,
        pods=pod_reports,
        problems=problems,
    )


@task(**KUBE_API_LONG)
def release_pods_ready(
    cluster: KubernetesCluster, namespace: str, release: str, settle_seconds: int = 30
) -> PodsReport:
    """Are all pods of the release's workloads Ready, with each rollout complete?

    Polls for up to `settle_seconds` (at most 120) so pods being replaced right after a `--wait` settle;
    returns the last report either way (the caller decides whether not-ready is a failure).
    """
    deadline = time.monotonic() + min(max(settle_seconds, 0), 120)
    while True:
        report = check_pods(cluster, namespace, release)
        if report.all_ready or time.monotonic() >= deadline:
            return report
        time.sleep(2)


def patch_release_deployments(cluster: KubernetesCluster, namespace: str, release: str, metadata: Raw) -> list[str]:
    """Merge `metadata` (annotations or labels) into the release's Deployments; never the pod template, so
    no rollout starts. A merge patch of the same values is idempotent, so callers may retry it."""
    names = []
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        for kind, obj in release_workloads(api, namespace, release):
            if kind != "Deployment":
                continue
            name = _meta(obj)["name"]
            apps.patch_namespaced_deployment(
                name, namespace, {"metadata": metadata}, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
            names.append(name)
    return names


@task(**KUBE_API)
def annotate_release_deployments(
    cluster: KubernetesCluster, namespace: str, release: str, annotations: dict[str, str]
) -> list[str]:
    """Add audit annotations to the metadata of the release's Deployments."""
    names = patch_release_deployments(cluster, namespace, release, {"annotations": annotations})
    get_run_logger().info("annotated Deployment(s) %s of %s in %s", names, release, namespace)
    return names


@task(**KUBE_API)
def release_deployment_annotations(
    cluster: KubernetesCluster, namespace: str, release: str
) -> dict[str, dict[str, str]]:
    """Each of the release's Deployments' annotations (where the runbooks keep their audit record)."""
    with cluster.api_client() as api:
        return {
            _meta(obj)["name"]: dict(_meta(obj).get("annotations") or {})
            for kind, obj in release_workloads(api, namespace, release)
            if kind == "Deployment"
        }
