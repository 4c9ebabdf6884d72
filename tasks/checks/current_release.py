"""Current release: the pods of the release's live workloads are Running and Ready, none crash-looping.

Membership and pods come from tasks/release_workloads.py (helm's ownership annotations), the problem words from
rollbook/pods.py, so this check names a pod's trouble as every other flow does."""

from __future__ import annotations

import time

from prefect import task

from blocks import KubernetesCluster
from rollbook import pods, revisions
from rollbook.checklist import CheckResult, Status, one_line
from tasks.checks.common import JSON, NAMES_SHOWN, connected
from tasks.policies import CHECK_KUBE_LIST
from tasks.release_workloads import release_pods, release_workloads


def pod_issue(pod: JSON) -> str:
    """Why a pod of the current release is not healthy ('' if it is Running and Ready, or Succeeded)."""
    return pods.issue(pod)


def pod_issues(found: list[JSON]) -> tuple[dict[str, str], int]:
    """(unhealthy pod -> its problems, how many are healthy)."""
    bad: dict[str, str] = {}
    healthy = 0
    for pod in found:
        issue = pod_issue(pod)
        if issue:
            bad[str(revisions.meta(pod).get("name"))] = issue
        else:
            healthy += 1
    return bad, healthy


def release_result(
    release: str, namespace: str, workloads: list[str], bad: dict[str, str], healthy: int, seconds: float = 0.0
) -> CheckResult:
    evidence = {"workloads": workloads, "healthy_pods": healthy, "bad_pods": dict(list(bad.items())[:NAMES_SHOWN])}
    if not workloads:
        reason = f"no live workload of release {release!r} in {namespace!r} (first install)"
        status = Status.PASS
    elif bad:
        first = "; ".join(f"{pod}: {issue}" for pod, issue in list(bad.items())[:3])
        reason = f"{len(bad)} of {len(bad) + healthy} pod(s) unhealthy: {first}"
        status = Status.FAIL
    else:
        reason = f"all {healthy} pod(s) of {', '.join(workloads)} Running and Ready"
        status = Status.PASS
    return CheckResult(
        check="current-release", status=status, reason=one_line(reason), evidence=evidence, seconds=seconds
    )


@task(**CHECK_KUBE_LIST)
def check_current_release(cluster: KubernetesCluster, namespace: str, release: str) -> CheckResult:
    """The release's live pods: all Running and Ready, none in CrashLoopBackOff or ImagePullBackOff."""
    started = time.monotonic()
    with connected(cluster) as api:
        workloads = release_workloads(api, namespace, release)
        bad, healthy = pod_issues(release_pods(api, namespace, workloads))
    names = [f"{kind}/{revisions.meta(obj).get('name')}" for kind, obj in workloads]
    return release_result(release, namespace, names, bad, healthy, time.monotonic() - started)
