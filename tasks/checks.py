"""The pre-deploy checklist's checks: read-only tasks, each returning a `CheckResult`.

A check answers for itself: what it found is a pass/warn/fail with a reason and evidence; only trouble that
may heal (API server unreachable, throttled) is raised and retried, and the flow records a check that still
raises as `error`. Everything listed from the API is read page by page (limit/continue) as raw JSON, and only
the few fields a check needs are kept from each page, so a 2,000-node cluster is never held in memory at once.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import yaml
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from prefect import task
from pydantic import BaseModel

from blocks import ContainerRegistry, KubernetesCluster
from rollbook import revisions
from rollbook.helm_releases import parse_manifest
from tasks.checks_model import CheckResult, Status, one_line
from tasks.cluster import REQUEST_TIMEOUT_SECONDS, namespace_exists
from tasks.helm import NAMESPACE_ANNOTATION, RELEASE_ANNOTATION, helm_argv, kubeconfig_file
from tasks.listing import Node, Pod, PodSpec, Quantity, Raw, pages
from tasks.policies import retry_transient
from tasks.scanners import SCANNERS, ScannerUnavailable, severity_rank
from tasks.signing import SignatureError, verify_image, write_docker_config

NAMES_SHOWN = 20  # bad nodes/pods named in evidence; the count is always complete
HELM_TIMEOUT_SECONDS = 120
INSTANCE_LABEL = "app.kubernetes.io/instance"
JSON = dict[str, Any]
PodNeed = tuple[str, int, int]  # (workload, cpu_m, memory) of one pod

_RETRY: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [1, 3], "retry_condition_fn": retry_transient}


def _named(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else "")


@lru_cache(maxsize=4096)
def _quantity(value: Quantity) -> Decimal:
    """Quantity strings repeat across thousands of pods and nodes ("100m", "128Mi"): parse each once."""
    return Decimal(parse_quantity(str(value)))


# ---------------------------------------------------------------- cluster health


class NodeFacts(BaseModel):
    name: str
    ready: bool
    cordoned: bool
    cpu_m: int  # allocatable CPU, millicores
    memory: int  # allocatable memory, bytes
    pods: int


def node_facts(node: Node) -> NodeFacts:
    alloc = node.status.allocatable
    return NodeFacts(
        name=node.metadata.name,
        ready=any(c.type == "Ready" and c.status == "True" for c in node.status.conditions),
        cordoned=node.spec.unschedulable,
        cpu_m=int(_quantity(alloc.get("cpu", "0")) * 1000),
        memory=int(_quantity(alloc.get("memory", "0"))),
        pods=int(_quantity(alloc.get("pods", "0"))),
    )


def iter_nodes(api: k8s_client.ApiClient) -> Iterator[NodeFacts]:
    for page in pages(k8s_client.CoreV1Api(api).list_node, Node):
        for node in page:
            yield node_facts(node)


@task(timeout_seconds=300, **_RETRY)
def list_nodes(cluster: KubernetesCluster) -> list[NodeFacts]:
    """Every node, reduced to what the health and capacity checks need; listed once for both."""
    with cluster.api_client() as api:
        return list(iter_nodes(api))


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


@task(timeout_seconds=300, **_RETRY)
def check_cluster_health(cluster: KubernetesCluster, nodes: list[NodeFacts]) -> CheckResult:
    """NotReady and cordoned nodes by name, and the API server's /readyz checks."""
    started = time.monotonic()
    with cluster.api_client() as api:
        api_ready, failing = readyz(api)
    total = len(nodes)
    not_ready = [n.name for n in nodes if not n.ready]
    cordoned = [n.name for n in nodes if n.cordoned]
    problems = []
    if not api_ready:
        problems.append(f"API server not ready ({', '.join(failing) or 'readyz failed'})")
    if not_ready:
        problems.append(f"{len(not_ready)} node(s) NotReady: {_named(not_ready)}")
    if cordoned:
        problems.append(f"{len(cordoned)} node(s) cordoned (SchedulingDisabled): {_named(cordoned)}")
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
        check="cluster-health",
        status=status,
        reason=one_line(reason),
        evidence=evidence,
        seconds=time.monotonic() - started,
    )


# ---------------------------------------------------------------- current release


_BAD_WAITING = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "InvalidImageName",
)


def pod_issue(pod: JSON) -> str:
    """Why a pod of the current release is not healthy ('' if it is Running and Ready, or Succeeded)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    problems = revisions.pod_problems(pod)
    if problems:
        return "; ".join(problems)
    if phase == "Succeeded":
        return ""
    if phase != "Running":
        return f"phase {phase or 'unknown'}"
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return "" if ready else "not Ready"


_WORKLOAD_LISTERS = (
    ("Deployment", "list_namespaced_deployment"),
    ("StatefulSet", "list_namespaced_stateful_set"),
    ("DaemonSet", "list_namespaced_daemon_set"),
)


@task(timeout_seconds=300, **_RETRY)
def check_current_release(cluster: KubernetesCluster, namespace: str, release: str) -> CheckResult:
    """The release's live pods: all Running and Ready, none in CrashLoopBackOff or ImagePullBackOff."""
    started = time.monotonic()
    bad: dict[str, str] = {}
    healthy = 0
    workloads: list[str] = []
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        core = k8s_client.CoreV1Api(api)
        selectors: list[str] = []
        try:
            for kind, lister in _WORKLOAD_LISTERS:
                for page in pages(getattr(apps, lister), Raw, namespace):
                    for obj in page:
                        notes = revisions.annotations_of(obj)
                        if notes.get(RELEASE_ANNOTATION) == release and (
                            notes.get(NAMESPACE_ANNOTATION, namespace) == namespace
                        ):
                            workloads.append(f"{kind}/{revisions.meta(obj).get('name')}")
                            selectors.append(revisions.label_selector_string((obj.get("spec") or {}).get("selector")))
        except ApiException as exc:
            if exc.status != 404:
                raise
        seen: set[str] = set()
        for selector in selectors:
            for page in pages(core.list_namespaced_pod, Raw, namespace, label_selector=selector):
                for pod in page:
                    name = str(revisions.meta(pod).get("name"))
                    if name in seen or revisions.meta(pod).get("deletionTimestamp"):
                        continue
                    seen.add(name)
                    issue = pod_issue(pod)
                    if issue:
                        bad[name] = issue
                    else:
                        healthy += 1
    evidence = {"workloads": workloads, "healthy_pods": healthy, "bad_pods": dict(list(bad.items())[:NAMES_SHOWN])}
    if not workloads:
        reason = f"no live workload of release {release!r} in {namespace!r} (first install)"
        return CheckResult(
            check="current-release", status=Status.PASS, reason=reason, evidence=evidence,
            seconds=time.monotonic() - started,
        )  # fmt: skip
    if bad:
        first = "; ".join(f"{pod}: {issue}" for pod, issue in list(bad.items())[:3])
        reason = f"{len(bad)} of {len(bad) + healthy} pod(s) unhealthy: {first}"
        status = Status.FAIL
    else:
        reason = f"all {healthy} pod(s) of {', '.join(workloads)} Running and Ready"
        status = Status.PASS
    return CheckResult(
        check="current-release", status=status, reason=one_line(reason), evidence=evidence,
        seconds=time.monotonic() - started,
    )  # fmt: skip


# ---------------------------------------------------------------- image signature


def _load_registry(block_name: str) -> ContainerRegistry:
    block = ContainerRegistry.load(block_name)
    if not isinstance(block, ContainerRegistry):
        raise TypeError(f"block {block_name!r} is not a Rollbook Container Registry")
    return block


@task(timeout_seconds=600, **_RETRY)
def check_image_signature(images: list[str], public_key_path: str | None, registry_block: str | None) -> CheckResult:
    """cosign verify (key-based, no transparency log) of every image; unsigned or tampered images fail.

    With a 'Rollbook Container Registry' block, its key and its login (for the registry and its mirrors) are
    used; the block is loaded here so its password never travels as a task parameter or result."""
    started = time.monotonic()
    registry = _load_registry(registry_block) if registry_block else None
    key_pem = registry.cosign_public_key if registry else None
    if not images:
        return CheckResult(check="image-signature", status=Status.ERROR, reason="no image to verify")
    if not public_key_path and not key_pem:
        return CheckResult(
            check="image-signature",
            status=Status.ERROR,
            reason="no cosign public key: give cosign_public_key or a registry block with one",
        )
    with tempfile.TemporaryDirectory(prefix="rollbook-cosign-") as tmp:
        key = public_key_path
        if not key:
            key = str(Path(tmp) / "cosign.pub")
            Path(key).write_text(str(key_pem))
        login = registry.credentials() if registry else None
        config = None
        if registry and login:
            config = str(write_docker_config(Path(tmp) / "docker", registry.pull_order(), *login))
        try:
            answers = [verify_image.fn(image, key, docker_config=config) for image in images]
        except SignatureError as exc:
            return CheckResult(check="image-signature", status=Status.ERROR, reason=one_line(str(exc)))
    failed = [a for a in answers if not a["verified"]]
    evidence = {
        "verified": [a["image"] for a in answers if a["verified"]],
        "failed": {a["image"]: a["detail"] for a in failed},
    }
    if failed:
        first = failed[0]
        reason = f"{len(failed)} of {len(answers)} image(s) failed verification: {first['image']}: {first['detail']}"
        status = Status.FAIL
    else:
        reason = f"all {len(answers)} image(s) signed with the given key"
        status = Status.PASS
    return CheckResult(
        check="image-signature", status=status, reason=one_line(reason), evidence=evidence,
        seconds=time.monotonic() - started,
    )  # fmt: skip


# ---------------------------------------------------------------- vulnerabilities


@task(timeout_seconds=1800, retries=0)
def check_vulnerabilities(
    images: list[str], scanner: str, threshold: str, unavailable_status: str, executable: str | None = None
) -> CheckResult:
    """Scan every image; fail when a finding is at or above `threshold`. A scan that cannot run answers
    `unavailable_status` (the policy's choice: warn or fail) and says why."""
    started = time.monotonic()
    tool = SCANNERS[scanner](executable) if executable else SCANNERS[scanner]()
    above: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for image in images:
        try:
            report = tool.scan(image)
        except ScannerUnavailable as exc:
            return CheckResult(
                check="vulnerabilities",
                status=Status(unavailable_status),
                reason=one_line(f"scan not possible: {exc}"),
                evidence={"scanner": scanner, "unavailable": str(exc), "scanned": list(counts)},
                seconds=time.monotonic() - started,
            )
        counts[image] = report.counts()
        hits = report.at_or_above(threshold)
        if hits:
            above[image] = [f"{f.id} {f.severity} {f.package}@{f.version}" for f in hits][:NAMES_SHOWN]
    return vulnerability_result(above, counts, threshold, time.monotonic() - started)


def vulnerability_result(
    above: dict[str, list[str]], counts: dict[str, dict[str, int]], threshold: str, seconds: float = 0.0
) -> CheckResult:
    evidence = {"threshold": threshold, "counts": counts, "at_or_above_threshold": above}
    if above:
        image, hits = next(iter(above.items()))
        n = sum(len(v) for v in above.values())
        reason = f"{n} finding(s) at or above {threshold} in {len(above)} image(s); {image}: {', '.join(hits[:3])}"
        return CheckResult(
            check="vulnerabilities", status=Status.FAIL, reason=one_line(reason), evidence=evidence, seconds=seconds
        )
    reason = f"no finding at or above {threshold} in {len(counts)} image(s)"
    return CheckResult(check="vulnerabilities", status=Status.PASS, reason=reason, evidence=evidence, seconds=seconds)


# ---------------------------------------------------------------- chart


class Rendered(BaseModel):
    """`helm template` output, or why the chart did not render (lint and template stderr)."""

    ok: bool
    manifests: list[JSON] = []
    error: str = ""


def _run_helm(argv: list[str], values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, input=json.dumps(values), capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"helm {argv[1]} did not answer in {HELM_TIMEOUT_SECONDS}s") from None


def _helm_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if "error" in ln.lower()]
    return one_line(" ".join(lines) or proc.stderr or proc.stdout or f"exit {proc.returncode}", 500)


@task(timeout_seconds=300, **_RETRY)
def render_chart(
    cluster: KubernetesCluster, namespace: str, release: str, chart: str, values: dict[str, Any], helm: str
) -> Rendered:
    """`helm template` of the release (values on stdin); a chart that does not render is an answer, not an error."""
    with kubeconfig_file(cluster) as kubeconfig:
        argv = helm_argv(cluster, helm, kubeconfig, "template", release, chart, "--namespace", namespace, "-f", "-")
        proc = _run_helm(argv, values)
    if proc.returncode != 0:
        return Rendered(ok=False, error=f"helm template: {_helm_error(proc)}")
    return Rendered(ok=True, manifests=parse_manifest(proc.stdout))


def server_dry_run(api: k8s_client.ApiClient, namespace: str, manifests: list[JSON]) -> tuple[list[str], int]:
    """Server-side apply of every manifest with dryRun=All: (the API server's objections, one per object;
    how many namespaced objects could not be sent because `namespace` does not exist yet).

    A dry run cannot create the namespace for the objects that follow, so for a first install into a new
    namespace only the namespace's creation and the cluster-scoped objects reach the server."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dyn = DynamicClient(api)
    errors: list[str] = []
    skipped = 0
    exists = namespace_exists(api, namespace)
    if not exists:
        namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        errors += _dry_apply(namespaces, body, None)
    for obj in manifests:
        kind, name = obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?")
        try:
            resource = dyn.resources.get(api_version=obj.get("apiVersion"), kind=kind)
        except ResourceNotFoundError:
            errors.append(f"{kind}/{name}: the cluster does not serve {obj.get('apiVersion')} {kind}")
            continue
        if resource.namespaced and not exists:
            skipped += 1
            continue
        ns = namespace if resource.namespaced else None
        body = dict(obj)
        if ns:
            body["metadata"] = {**(obj.get("metadata") or {}), "namespace": ns}
        errors += _dry_apply(resource, body, ns)
    return errors, skipped


def _dry_apply(resource: Any, body: JSON, namespace: str | None) -> list[str]:
    """The API server's objection to one object ([] if none); server trouble is raised (and retried)."""
    from kubernetes.dynamic.exceptions import DynamicApiError

    name = body["metadata"].get("name", "?")
    try:
        resource.server_side_apply(
            body=body,
            name=name,
            namespace=namespace,
            field_manager="rollbook-checklist",
            dry_run="All",
            force_conflicts=True,
        )
    except DynamicApiError as exc:
        if exc.status >= 500 or exc.status in (408, 429):
            raise
        try:
            message = json.loads(exc.body or "").get("message", exc.summary())
        except (TypeError, ValueError):
            message = exc.summary()
        return [f"{body.get('kind', '?')}/{name}: {message}"]
    return []


@task(timeout_seconds=600, **_RETRY)
def check_chart(
    cluster: KubernetesCluster,
    namespace: str,
    chart: str,
    values: dict[str, Any],
    rendered: Rendered,
    helm: str,
) -> CheckResult:
    """helm lint, helm template (already done: `rendered`), and a server-side dry-run apply of the result."""
    started = time.monotonic()
    steps: dict[str, str] = {}
    with kubeconfig_file(cluster) as kubeconfig:
        lint = _run_helm(
            helm_argv(cluster, helm, kubeconfig, "lint", chart, "--namespace", namespace, "-f", "-"), values
        )
    steps["lint"] = "ok" if lint.returncode == 0 else _helm_error(lint)
    steps["template"] = "ok" if rendered.ok else rendered.error
    errors: list[str] = []
    skipped = 0
    if rendered.ok:
        with cluster.api_client() as api:
            errors, skipped = server_dry_run(api, namespace, rendered.manifests)
        steps["server-dry-run"] = "ok" if not errors else f"{len(errors)} object(s) rejected"
        if skipped:
            steps["server-dry-run"] += f"; {skipped} namespaced object(s) not sent: namespace {namespace} is new"
    evidence = {"steps": steps, "objects": len(rendered.manifests), "rejected": errors[:NAMES_SHOWN]}
    problems = []
    if lint.returncode != 0:
        problems.append(f"helm lint: {steps['lint']}")
    if not rendered.ok:
        problems.append(rendered.error)
    if errors:
        problems.append(f"server-side dry run rejected {errors[0]}")
    if problems:
        status, reason = Status.FAIL, "; ".join(problems)
    elif skipped:
        status = Status.WARN
        reason = (
            f"lint and template passed; namespace {namespace!r} does not exist yet: its creation passed a "
            f"server-side dry run, but the {skipped} namespaced object(s) could not be (a dry run cannot create "
            "the namespace they need), so the API server has not validated them"
        )
    else:
        status = Status.PASS
        reason = f"lint, template and server-side dry run of {len(rendered.manifests)} object(s) passed"
    return CheckResult(
        check="chart", status=status, reason=one_line(reason, 500), evidence=evidence,
        seconds=time.monotonic() - started,
    )  # fmt: skip


# ---------------------------------------------------------------- capacity


class Need(BaseModel):
    """One workload's request: `replicas` pods, each asking for cpu_m millicores and `memory` bytes.

    `surge` pods are started on top while a rolling update replaces running pods (an upgrade, not a first
    install); a `per_node` workload (DaemonSet) runs one pod on every schedulable node instead of `replicas`."""

    workload: str
    replicas: int
    cpu_m: int
    memory: int
    surge: int = 0
    per_node: bool = False


def pod_request(spec: PodSpec) -> tuple[int, int]:
    """The scheduler's view of a pod's request: sum of containers, or the largest init container if larger,
    plus the pod overhead. (cpu millicores, memory bytes)."""
    out = []
    for key in ("cpu", "memory"):
        main = sum((_quantity(c.resources.requests.get(key, "0")) for c in spec.containers), Decimal(0))
        init = max((_quantity(c.resources.requests.get(key, "0")) for c in spec.init_containers), default=Decimal(0))
        out.append(max(main, init) + _quantity(spec.overhead.get(key, "0")))
    return int(out[0] * 1000), int(out[1])


def _surge(spec: JSON, replicas: int) -> int:
    """Extra pods a Deployment's rolling update starts (maxSurge, 25% by default, rounded up like Kubernetes)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(value, str) and value.endswith("%"):
        return -(-replicas * int(value[:-1]) // 100)
    return int(value)


def release_needs(manifests: list[JSON]) -> list[Need]:
    """What the rendered chart's workloads ask for: Deployments (with their rolling-update surge),
    StatefulSets, ReplicaSets, Jobs, and DaemonSets (one pod per schedulable node)."""
    needs = []
    for obj in manifests:
        kind = obj.get("kind")
        if kind not in ("Deployment", "StatefulSet", "ReplicaSet", "Job", "DaemonSet"):
            continue
        spec = obj.get("spec") or {}
        replicas = int((spec.get("parallelism", 1) if kind == "Job" else spec.get("replicas", 1)) or 0)
        cpu, mem = pod_request(msgspec.convert((spec.get("template") or {}).get("spec") or {}, PodSpec))
        needs.append(
            Need(
                workload=f"{kind}/{(obj.get('metadata') or {}).get('name')}",
                replicas=0 if kind == "DaemonSet" else replicas,
                cpu_m=cpu,
                memory=mem,
                surge=_surge(spec, replicas) if kind == "Deployment" else 0,
                per_node=kind == "DaemonSet",
            )
        )
    return needs


def fmt_memory(n: int) -> str:
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def capacity_result(
    free: list[tuple[str, int, int]], needs: list[Need], upgrade: bool = False, seconds: float = 0.0
) -> CheckResult:
    """Compare free room per schedulable node [(node, cpu_m, memory)] with what the release needs.

    `free` already counts the release's own running pods as free (they are being replaced); an upgrade
    (`upgrade`) then also needs room for the rolling update's surge pods. Fails when the total is short
    (naming the resource and by how much) or when the pods do not fit node by node (room spread over many
    nodes is not room for one pod)."""
    pods = [
        (n.workload, n.cpu_m, n.memory)
        for n in needs
        if not n.per_node
        for _ in range(n.replicas + (n.surge if upgrade else 0))
    ]
    daemons = [n for n in needs if n.per_node]
    total_cpu = sum(max(c, 0) for _, c, _ in free)
    total_mem = sum(max(m, 0) for _, _, m in free)
    need_cpu = sum(c for _, c, _ in pods) + sum(d.cpu_m for d in daemons) * len(free)
    need_mem = sum(m for _, _, m in pods) + sum(d.memory for d in daemons) * len(free)
    evidence: dict[str, Any] = {
        "schedulable_nodes": len(free),
        "free_cpu_m": total_cpu,
        "free_memory": fmt_memory(total_mem),
        "need_cpu_m": need_cpu,
        "need_memory": fmt_memory(need_mem),
        "upgrade": upgrade,
        "needs": [n.model_dump() for n in needs],
    }
    short = []
    if need_cpu > total_cpu:
        short.append(f"CPU short by {need_cpu - total_cpu}m (need {need_cpu}m, free {total_cpu}m)")
    if need_mem > total_mem:
        short.append(
            f"memory short by {fmt_memory(need_mem - total_mem)} "
            f"(need {fmt_memory(need_mem)}, free {fmt_memory(total_mem)})"
        )
    if not short:
        unplaced = _first_fit(free, daemons, pods)
        if unplaced:
            evidence["unplaced"] = unplaced
            short.append(
                "enough room in total but not on any single node for "
                + ", ".join(f"{k}: {v} pod(s)" for k, v in unplaced.items())
            )
    if short:
        return CheckResult(
            check="capacity", status=Status.FAIL, reason=one_line("; ".join(short)), evidence=evidence, seconds=seconds
        )
    reason = (
        f"needs {need_cpu}m CPU and {fmt_memory(need_mem)} memory"
        + (" (with rolling-update surge)" if upgrade else "")
        + f"; {len(free)} schedulable node(s) have {total_cpu}m and {fmt_memory(total_mem)} free"
    )
    return CheckResult(check="capacity", status=Status.PASS, reason=reason, evidence=evidence, seconds=seconds)


def _first_fit(
    free: list[tuple[str, int, int]], daemons: list[Need], pods: list[tuple[str, int, int]]
) -> dict[str, int]:
    """Pods per workload that fit on no node: DaemonSet pods on every node first, then the rest first-fit,
    biggest first."""
    room = [[c, m] for _, c, m in free]
    unplaced: dict[str, int] = {}
    for d in daemons:
        for slot in room:
            if slot[0] >= d.cpu_m and slot[1] >= d.memory:
                slot[0] -= d.cpu_m
                slot[1] -= d.memory
            else:
                unplaced[d.workload] = unplaced.get(d.workload, 0) + 1
    for workload, cpu, mem in sorted(pods, key=lambda p: (-p[2], -p[1])):
        fit = next((r for r in room if r[0] >= cpu and r[1] >= mem), None)
        if fit is None:
            unplaced[workload] = unplaced.get(workload, 0) + 1
        else:
            fit[0] -= cpu
            fit[1] -= mem
    return unplaced


class PodRequests(BaseModel):
    """Requested (cpu_m, memory) per node, and how many of the release's own pods were left out."""

    used: dict[str, tuple[int, int]]
    replaced: int
    seconds: float


@task(timeout_seconds=600, **_RETRY)
def pod_requests_by_node(cluster: KubernetesCluster, namespace: str, release: str) -> PodRequests:
    """Requests summed per node over every scheduled, unfinished pod, leaving out the release's own pods
    (label app.kubernetes.io/instance, as helm charts set it): they are what the new release replaces.
    Needs no node list, so the flow runs it while the nodes are being listed."""
    started = time.monotonic()
    used: dict[str, tuple[int, int]] = {}
    replaced = 0
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        selector = "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="
        for page in pages(core.list_pod_for_all_namespaces, Pod, field_selector=selector):
            for pod in page:
                if pod.metadata.namespace == namespace and pod.metadata.labels.get(INSTANCE_LABEL) == release:
                    replaced += 1
                    continue
                cpu, mem = pod_request(pod.spec)
                old_cpu, old_mem = used.get(pod.spec.node_name, (0, 0))
                used[pod.spec.node_name] = (old_cpu + cpu, old_mem + mem)
    return PodRequests(used=used, replaced=replaced, seconds=time.monotonic() - started)


@task(timeout_seconds=60)
def check_capacity(nodes: list[NodeFacts], requested: PodRequests, needs: list[Need]) -> CheckResult:
    """Allocatable minus requested on every Ready, schedulable node, against what the release needs."""
    free = []
    for n in nodes:
        if n.ready and not n.cordoned:
            cpu, mem = requested.used.get(n.name, (0, 0))
            free.append((n.name, n.cpu_m - cpu, n.memory - mem))
    return capacity_result(free, needs, upgrade=requested.replaced > 0, seconds=requested.seconds)


# ---------------------------------------------------------------- database migration


MigrationChecker = Callable[[dict[str, Any]], CheckResult]
# The DB-migration work registers its checker here: name -> fn(settings) returning a CheckResult.
MIGRATION_CHECKERS: dict[str, MigrationChecker] = {}


@task(timeout_seconds=300, **_RETRY)
def check_db_migration(checker: str | None, settings: dict[str, Any]) -> CheckResult:
    """No migration running and the schema at the expected revision, via a pluggable checker."""
    if not checker:
        return CheckResult(
            check="db-migration",
            status=Status.WARN,
            reason="not configured: no database migration checker given, migration status was not checked",
            evidence={"available_checkers": sorted(MIGRATION_CHECKERS)},
        )
    fn = MIGRATION_CHECKERS.get(checker)
    if fn is None:
        return CheckResult(
            check="db-migration",
            status=Status.ERROR,
            reason=f"unknown migration checker {checker!r} (known: {', '.join(sorted(MIGRATION_CHECKERS)) or 'none'})",
        )
    return fn(settings)


def images_in(manifests: list[JSON]) -> list[str]:
    """Every container image the rendered chart runs, in order of first appearance."""
    found: list[str] = []
    for obj in manifests:
        spec = obj.get("spec") or {}
        pod = ((spec.get("template") or {}).get("spec")) or (spec if obj.get("kind") == "Pod" else {})
        if obj.get("kind") == "CronJob":
            pod = ((((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
        for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            if c.get("image") and c["image"] not in found:
                found.append(c["image"])
    return found


def load_values(text: str) -> dict[str, Any]:
    """A values document (YAML or JSON) as a mapping, with an error naming the line when it is malformed."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"values are not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"values must be a mapping of keys, got {type(data).__name__}")
    return data


def severity_ok(value: str) -> str:
    if severity_rank(value) < 0:
        raise ValueError("severity threshold must be one of negligible, low, medium, high, critical")
    return value.lower()
