"""Image pre-pull (prevention for a registry outage): keep the images of chosen Deployments on every node, with a
cache-warmer DaemonSet (kubernetes-image-puller's and kube-fledged's pattern), so that when the registry goes
down, pods that start on any node find their image already there.

1. Sources: each is a namespace and a label selector (matchLabels; empty: every Deployment of the namespace).
   The images of the Deployments they match, init containers included, are the images to keep warm
   (`rollbook.prepull.desired_images`: deduplicated, sorted, each a valid reference, digests kept as written).
   Helm releases are covered through their labels (`app.kubernetes.io/instance=<release>` in most charts).
2. The DaemonSet (`rollbook.prepull.daemonset_manifest`): one container per image running a static `sleep`
   that an init container copies from `sleep_image` (the warmed images may have no shell), tiny requests,
   tolerating every taint so every node pulls, optional node selector.
3. Plan (the exact images added and removed; nothing changed), approval, one write guarded by the
   resourceVersion of the plan with rollbook's change annotations, then the rollout on every node.
A re-run with nothing new is `unchanged`, writes nothing, and still checks that every node is ready.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field

from blocks import KubernetesCluster
from flows._cluster_source import ClusterSource
from rollbook import prepull as rules
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, Outcome, change_annotations, not_approved_state, request_approval
from rollbook.reports.prepull import PrepullResult, SourceRow, plan_markdown, result_markdown
from rollbook.types import ContainerPath, DnsLabel, ImageRef, LabelKey, LabelValue, Namespace
from tasks.cluster import resolve_cluster
from tasks.daemonsets import DaemonSetNotReady, read_daemonset, read_deployments, write_daemonset
from tasks.daemonsets import wait_for_daemonset as wait_for_daemonset_task

__all__ = ["DaemonSetNotReady", "NoImages", "PrepullRequest", "PrepullResult", "PrepullSource", "image_prepull"]


class NoImages(ValueError):
    """No source matched a Deployment, or they run no image: nothing to keep warm; nothing changed."""


class PrepullSource(BaseModel):
    """Deployments whose images to keep warm: those of `namespace` whose labels match `selector`."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    namespace: Namespace = Field(description="Namespace of the Deployments.")
    selector: dict[LabelKey, LabelValue] = Field(
        default={},
        max_length=20,
        description="Labels the Deployments must carry (matchLabels); empty: every Deployment of the namespace.",
    )


class PrepullRequest(ClusterSource):
    namespace: Namespace = Field(description="Namespace of the pre-pull DaemonSet.")
    name: DnsLabel = Field(default=rules.DEFAULT_NAME, description="Name of the pre-pull DaemonSet.")
    sources: list[PrepullSource] = Field(
        min_length=1, max_length=50, description="Deployments (namespace + label selector) whose images to keep warm."
    )
    sleep_image: ImageRef = Field(
        description="Image with `cp` and a static `sleep` (busybox is both), copied for the warmed images to run."
    )
    sleep_binary: ContainerPath = Field(default="/bin/sleep", description="Path of `sleep` inside sleep_image.")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default={}, max_length=20, description="Only nodes with these labels keep the images; empty: every node."
    )
    rollout_timeout_seconds: int = Field(
        default=600, ge=10, le=6 * 3600, description="How long every node may take to pull the images."
    )


@flow(name="image-prepull")
def image_prepull(request: PrepullRequest, controls: ChangeControls) -> PrepullResult | State[PrepullResult]:
    """Keep the images of the chosen Deployments on every node with a pre-pull DaemonSet."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    key = artifact_key("image-prepull", request.namespace, request.name)
    sources, workloads = _read_sources(cluster, request)
    images = rules.desired_images(workloads)
    if not images:
        raise NoImages(f"the Deployments of {_described(request)} run no image; nothing changed")
    desired = rules.daemonset_manifest(
        namespace=request.namespace,
        name=request.name,
        images=images,
        sleep_image=request.sleep_image,
        sleep_binary=request.sleep_binary,
        node_selector=request.node_selector,
    )
    live = read_daemonset(cluster, request.namespace, request.name)
    change = rules.diff(live, desired)

    def result(outcome: Outcome, summary: str, **extra: Any) -> PrepullResult:
        return PrepullResult(
            outcome=outcome,
            summary=summary,
            namespace=request.namespace,
            name=request.name,
            images=images,
            added=change.added,
            removed=change.removed,
            created=change.create,
            sources=sources,
            **extra,
        )

    where = f"daemonset {request.namespace}/{request.name}"
    if controls.plan:
        state = rules.readiness(live) if live is not None else None
        now = {"nodes_desired": state.desired, "nodes_ready": state.ready} if state else {}
        return _publish(result("planned", f"plan only: {_would(change, where)}; nothing changed", **now), key)
    if change.unchanged:
        status = _wait(cluster, request)
        summary = f"{where} already keeps these {len(images)} image(s) warm; {status['ready']} node(s) ready"
        return _publish(result("unchanged", summary, **_nodes(status)), key)

    decision = request_approval(controls, plan_markdown(result("planned", ""), f"{_would(change, where)}?"))
    if not decision.approved:
        refused = result("not-approved", f"not approved: nothing changed ({decision.comment})")
        return not_approved_state(_publish(refused, key), decision)
    write_daemonset(cluster, desired, change_annotations(controls, "image-prepull"), change.resource_version)
    get_run_logger().info("%s written (%s); waiting for every node", where, _would(change, where))
    status = _wait(cluster, request)
    summary = (
        f"{'created' if change.create else 'updated'} {where}: +{len(change.added)} -{len(change.removed)} image(s), "
        f"{len(images)} kept warm on {status['ready']} node(s)"
    )
    return _publish(result("changed", summary, approval=decision.comment, **_nodes(status)), key)


def _read_sources(cluster: KubernetesCluster, request: PrepullRequest) -> tuple[list[SourceRow], list[Any]]:
    rows: list[SourceRow] = []
    workloads: list[Any] = []
    for source in request.sources:
        found = read_deployments(cluster, source.namespace, dict(source.selector))
        rows.append(
            SourceRow(
                namespace=source.namespace,
                selector=dict(source.selector),
                deployments=[str((d.get("metadata") or {}).get("name")) for d in found],
            )
        )
        workloads += found
        if not found:
            get_run_logger().warning("source %s matched no Deployment", _described_source(source))
    if not workloads:
        raise NoImages(f"no Deployment matched {_described(request)}; nothing changed")
    return rows, workloads


def _described_source(source: PrepullSource) -> str:
    selector = ",".join(f"{k}={v}" for k, v in sorted(source.selector.items()))
    return f"{source.namespace} ({selector or 'every Deployment'})"


def _described(request: PrepullRequest) -> str:
    return ", ".join(_described_source(s) for s in request.sources)


def _would(change: rules.PrepullDiff, where: str) -> str:
    if change.unchanged:
        return f"nothing would change on {where}"
    verb = "create" if change.create else "update"
    parts = [
        f"add {', '.join(change.added)}" if change.added else "",
        f"remove {', '.join(change.removed)}" if change.removed else "",
        "apply changed settings (same images)" if change.settings_changed else "",
    ]
    return f"{verb} {where}: " + "; ".join(p for p in parts if p)


def _wait(cluster: KubernetesCluster, request: PrepullRequest) -> dict[str, Any]:
    """The rollout on every node; a DaemonSet that no node runs keeps nothing warm, which is an error too."""
    seconds = request.rollout_timeout_seconds
    waiter = wait_for_daemonset_task.with_options(timeout_seconds=seconds + 60)
    status: dict[str, Any] = waiter(cluster, request.namespace, request.name, float(seconds))
    if status["desired"] == 0:
        selector = ",".join(f"{k}={v}" for k, v in sorted(request.node_selector.items()))
        raise DaemonSetNotReady(
            f"daemonset {request.namespace}/{request.name} runs on no node"
            + (f": no node matches node_selector {selector}" if selector else "")
            + "; nothing is kept warm"
        )
    return status


def _nodes(status: dict[str, Any]) -> dict[str, Any]:
    return {"nodes_desired": status["desired"], "nodes_ready": status["ready"], "rollout_seconds": status["seconds"]}


def _publish(result: PrepullResult, key: str) -> PrepullResult:
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(result_markdown(result), key=key)
    return result
