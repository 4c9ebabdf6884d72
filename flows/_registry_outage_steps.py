"""registry-outage's steps: each asks the tasks and applies `rollbook.registry_fallback`'s rules; the flow
(flows/registry_outage.py) decides in which order and whether to ask a person."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger
from pydantic import Field

from blocks import ContainerRegistry, KubernetesCluster
from flows._cluster_source import ClusterSource
from rollbook import registry_fallback as rules
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations
from rollbook.image_refs import ImageReference, registry_host
from rollbook.reports.registry import ImageRow, WorkloadRow
from rollbook.types import BlockName, ImageDigest, ImageRef, Namespace
from tasks.kube import wait_for_rollout as wait_for_deployment_rollout
from tasks.registry import manifest_digest, probe_registry, verify_signature
from tasks.workload_images import (
    delete_pods,
    read_namespace_workloads,
    read_workload,
    restart_workload,
    set_workload_images,
    wait_for_workload_rollout,
)

# Pauses between looks at the primary while waiting for it to come back: soon at first, then every 15 s.
PRIMARY_WATCH_BACKOFF = (2.0, 4.0, 8.0, 15.0)


class RegistryOutageRequest(ClusterSource):
    registry_block: BlockName = Field(
        description="'Rollbook Container Registry' block: url is the failing registry, mirrors the fallbacks."
    )
    namespaces: list[Namespace] = Field(min_length=1, max_length=50, description="Namespaces to look in.")
    expected_digests: dict[ImageRef, ImageDigest] = Field(
        default={},
        max_length=200,
        description="image -> sha256 digest, for images whose digest cannot be learnt while the registry is down.",
    )
    verify_signatures: bool = Field(default=True, description="Move only to mirror copies whose signature verifies.")
    switch_back: bool = Field(default=True, description="Wait for the registry and put the original images back.")
    approve_switch_back: bool = Field(default=False, description="Ask for approval again before switching back.")
    recovery_timeout_seconds: int = Field(
        default=600, ge=0, le=24 * 3600, description="How long to watch the registry for its return (0: look once)."
    )
    rollout_timeout_seconds: int = Field(default=300, ge=10, le=3600, description="Wait per workload's rollout.")
    probe_timeout_seconds: int = Field(default=5, ge=1, le=60, description="Per request to a registry.")


@dataclass
class Move:
    """One workload this run moves, its report row (updated as the run goes) and its mirror references."""

    workload: rules.Workload
    row: WorkloadRow
    images: dict[str, str]


class Run:
    """What one run resolved once (the cluster, the registry block, its hosts), its clock and its troubles."""

    def __init__(self, request: RegistryOutageRequest, cluster: KubernetesCluster, registry: ContainerRegistry) -> None:
        self.request, self.cluster, self.registry = request, cluster, registry
        self.primary = registry_host(registry.url)
        self.mirrors = [registry_host(m) for m in registry.mirrors]
        self.started = self.mark = time.monotonic()
        self.phases: dict[str, float] = {}
        self.failures: list[str] = []
        self.approved_in_run = False

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self.mark, 2)
        self.mark = now

    def failed(self, row: WorkloadRow, why: str) -> None:
        row.reason = why
        self.failures.append(f"{row.kind} {row.namespace}/{row.name}: {why}")

    @property
    def key(self) -> str:
        return artifact_key("registry-outage", self.primary.replace(":", "-"))


def detect(run: Run) -> tuple[list[dict[str, Any]], list[rules.Workload], dict[str, str]]:
    """Each registry's /v2/ answer, the workloads on the primary (or on a detour), and the digests pods report."""
    timeout = run.request.probe_timeout_seconds
    probes = [probe_registry(run.registry, host, timeout) for host in [run.primary, *run.mirrors]]
    workloads: list[rules.Workload] = []
    pods: list[dict[str, Any]] = []
    for namespace in run.request.namespaces:
        found = read_namespace_workloads(run.cluster, namespace)
        pods += found["pods"]
        workloads += _workloads_in(run, found)
    run.phase("detect")
    return probes, workloads, rules.known_digests(pods)


def _workloads_in(run: Run, found: dict[str, list[Any]]) -> list[rules.Workload]:
    controllers: list[tuple[rules.WorkloadKind, Any]] = [
        *(("Deployment", d) for d in found["deployments"]),
        *(("StatefulSet", s) for s in found["statefulsets"]),
        *(("DaemonSet", d) for d in found["daemonsets"]),
    ]
    return rules.find_workloads(controllers, found["replica_sets"], found["pods"], found["events"], primary=run.primary)


def stuck_now(
    run: Run, kind: rules.WorkloadKind, namespace: str, name: str
) -> tuple[rules.Workload | None, dict[str, str]]:
    """The workload as it is now, with its pods stuck pulling from the primary, and those pods' uids."""
    found = read_namespace_workloads(run.cluster, namespace)
    workload = next((w for w in _workloads_in(run, found) if (w.kind, w.name) == (kind, name)), None)
    stuck = {s.pod for s in workload.stuck} if workload else set()
    uids = {
        str(p["metadata"]["name"]): str(p["metadata"].get("uid") or "")
        for p in found["pods"]
        if p["metadata"]["name"] in stuck and not p["metadata"].get("deletionTimestamp")
    }
    return workload, uids


def row_for(
    workload: rules.Workload, action: Any, reason: str = "", switches: Sequence[rules.ImageSwitch] = ()
) -> WorkloadRow:
    images = [
        ImageRow(
            container=s.container,
            original=s.original,
            digest=s.digest,
            digest_source=s.digest_source,
            mirror_ref=s.mirror_ref,
            refused=s.refused,
        )
        for s in switches
    ]
    return WorkloadRow(
        kind=workload.kind,
        namespace=workload.namespace,
        name=workload.name,
        action=action,
        stuck_pods=len({s.pod for s in workload.stuck}),
        since=workload.since,
        reason=reason,
        images=images,
    )


def _digest(run: Run, image: str, pod_digests: dict[str, str], primary_up: bool) -> tuple[str | None, Any]:
    """The digest `image` stands for, from the most direct evidence there is (rules.DigestSource)."""
    ref = ImageReference.parse(image)
    if ref.digest:
        return ref.digest, "reference"
    if image in run.request.expected_digests:
        return run.request.expected_digests[image], "operator"
    if image in pod_digests:
        return pod_digests[image], "pod"
    if primary_up:
        answer = manifest_digest(run.registry, run.primary, image, run.request.probe_timeout_seconds)
        if answer["digest"]:
            return answer["digest"], "primary"
    return None, None


def _on_mirror(run: Run, mirror: str, image: str, digest: str) -> tuple[str | None, str, tuple[bool, str] | None]:
    """What `mirror` serves for `image`'s digest (and, when it differs, what its tag points to), and whether
    that copy's signature verifies (None: not checked)."""
    ref = ImageReference.parse(image)
    timeout = run.request.probe_timeout_seconds
    answer = manifest_digest(run.registry, mirror, ref.pinned(digest, registry=mirror), timeout)
    if answer["digest"] != digest:
        detail = str(answer["detail"])
        if ref.tag and answer["reachable"]:
            tagged = manifest_digest(run.registry, mirror, f"{mirror}/{ref.repository}:{ref.tag}", timeout)
            if tagged["digest"] and tagged["digest"] != digest:
                detail += f"; its tag {ref.tag} is {tagged['digest']} (other content under the same tag)"
        return None, detail, None
    if not run.request.verify_signatures:
        return digest, str(answer["detail"]), None
    checked = verify_signature(run.registry, ref.pinned(digest, registry=mirror))
    return digest, str(answer["detail"]), (bool(checked["verified"]), str(checked["detail"]))


def plan_switches(
    run: Run, workload: rules.Workload, pod_digests: dict[str, str], primary_up: bool
) -> list[rules.ImageSwitch]:
    """For each of the workload's containers on the primary: the first mirror (in the block's priority order)
    that may serve it, or the first mirror's refusal."""
    switches = []
    for container, image in workload.primary_images.items():
        digest, source = _digest(run, image, pod_digests, primary_up)
        first: rules.ImageSwitch | None = None
        for mirror in run.mirrors:
            served, detail, signature = _on_mirror(run, mirror, image, digest) if digest else (None, "", None)
            switch = rules.mirror_switch(
                container,
                image,
                mirror=mirror,
                digest=digest,
                source=source,
                mirror_digest=served,
                mirror_detail=detail,
                signature=signature,
            )
            first = first or switch
            if switch.mirror_ref:
                first = switch
                break
        assert first is not None  # the flow refuses a block without mirrors
        switches.append(first)
    return switches


def move_to_mirror(run: Run, controls: ChangeControls, move: Move) -> None:
    """One patch: the mirror references and the record of the originals, on the Deployment as planned."""
    workload = move.workload
    record = rules.record_text(
        primary=run.primary, mirror=",".join(run.mirrors), originals=dict(workload.primary_images), mirrored=move.images
    )
    annotations: dict[str, str | None] = {
        **change_annotations(controls, "registry-fallback"),
        rules.FALLBACK_ANNOTATION: record,
    }
    set_workload_images(
        run.cluster,
        workload.kind,
        workload.namespace,
        workload.name,
        images=move.images,
        annotations=annotations,
        resource_version=workload.resource_version,
    )
    move.row.action = "switched-to-mirror"
    get_run_logger().info(
        "%s %s/%s now pulls from the mirror: %s", workload.kind, workload.namespace, workload.name, move.images
    )


def _wait(run: Run, row: WorkloadRow) -> dict[str, Any]:
    wait, bound = float(run.request.rollout_timeout_seconds), run.request.rollout_timeout_seconds + 60
    if row.kind == "Deployment":
        waiter = wait_for_deployment_rollout.with_options(timeout_seconds=bound)
        return waiter(run.cluster, row.namespace, row.name, wait)
    return wait_for_workload_rollout.with_options(timeout_seconds=bound)(
        run.cluster, row.kind, row.namespace, row.name, wait
    )


def _delete_stuck_pods(run: Run, row: WorkloadRow) -> None:
    _, pods = stuck_now(run, row.kind, row.namespace, row.name)
    if pods:
        deleted = delete_pods(run.cluster, row.namespace, pods)
        get_run_logger().info("%s %s/%s: deleted stuck pods %s", row.kind, row.namespace, row.name, deleted)


def wait_ready(run: Run, row: WorkloadRow) -> bool:
    """Wait for the rollout and unstick what stays stuck (the guide's "unstick"), the way each controller needs:
    a Deployment gets one `rollout restart` and a second wait; a StatefulSet never replaces a pod stuck on an
    image it cannot pull (it waits for it to become Ready), so its stuck pods are deleted at once, and again
    after a wait (a DaemonSet the same, which also covers OnDelete). A rollout that still does not complete is
    a failure of the run, named in its message."""
    started = time.monotonic()
    if row.kind != "Deployment":
        _delete_stuck_pods(run, row)
    status = _wait(run, row)
    if not status["done"]:
        get_run_logger().warning("%s %s/%s did not roll out (%s)", row.kind, row.namespace, row.name, status["message"])
        if row.kind == "Deployment":
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            restart_workload(run.cluster, row.kind, row.namespace, row.name, stamp=stamp)
        else:
            _delete_stuck_pods(run, row)
        status = _wait(run, row)
    row.rollout_seconds = round(time.monotonic() - started, 2)
    if not status["done"]:
        run.failed(row, f"did not roll out, even after unsticking it: {status['message']}")
    return bool(status["done"])


def workload_now(run: Run, kind: rules.WorkloadKind, namespace: str, name: str) -> rules.Workload:
    """The workload as it is now (re-read: the plan may be minutes old)."""
    current = read_workload(run.cluster, kind, namespace, name)
    return rules.Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        resource_version=str(current["metadata"].get("resourceVersion") or ""),
        images=rules.template_containers(current),
        primary_images={},
        record=rules.read_record(current),
    )


def primary_serves(run: Run, workload: rules.Workload) -> bool:
    """Whether the primary serves, for each original reference, the digest the workload runs on the mirror."""
    for container, original in rules.switch_back_images(workload).items():
        expected = ImageReference.parse(workload.images[container]).digest
        answer = manifest_digest(run.registry, run.primary, original, run.request.probe_timeout_seconds)
        if not expected or answer["digest"] != expected:
            return False
    return True


def wait_for_primary(run: Run, rows: list[WorkloadRow]) -> bool:
    """Look at the primary, with a growing pause, until it serves every detoured digest or the watch ends."""
    deadline = time.monotonic() + run.request.recovery_timeout_seconds
    attempt = 0
    while True:
        if all(primary_serves(run, workload_now(run, r.kind, r.namespace, r.name)) for r in rows):
            run.phase("primary-wait")
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            run.phase("primary-wait")
            return False
        pause = min(PRIMARY_WATCH_BACKOFF[min(attempt, len(PRIMARY_WATCH_BACKOFF) - 1)], remaining)
        get_run_logger().info("%s does not serve the detoured digests yet; looking again in %.0fs", run.primary, pause)
        time.sleep(pause)
        attempt += 1
