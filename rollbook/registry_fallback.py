"""The rules of a registry-outage fallback (pure, unit-tested): which workloads are stuck on the unreachable
registry, when a mirror may stand in for it, and how the detour is recorded so it can be undone.

A workload moves to a mirror only by digest: the mirror must serve the very digest the workload runs (known
from the reference itself, the primary, a pod that pulled it, or the operator), never "the same tag", which a
mirror may hold with other content. The original references are recorded on the workload in the same patch
that moves it, so a re-run, a colleague or the switch-back reads the detour from the cluster, not from memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from rollbook import pods, revisions
from rollbook.image_refs import BadImageReference, ImageReference, digest_of_image_id
from rollbook.revisions import JSON

FALLBACK_ANNOTATION = "rollbook.dev/registry-fallback"
PULL_FAILURE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff"})

DigestSource = Literal["reference", "primary", "pod", "operator"]
# The controllers whose pods pull images and which rollbook can point at a mirror (and back).
WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet"]
WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("Deployment", "StatefulSet", "DaemonSet")
WorkloadState = Literal["stuck", "on-mirror", "changed-since-fallback", "record-unreadable", "healthy"]


@dataclass(frozen=True)
class StuckPod:
    pod: str
    container: str
    image: str
    reason: str
    message: str


@dataclass
class Workload:
    """One Deployment, StatefulSet or DaemonSet with images on the primary registry, as found."""

    kind: WorkloadKind
    namespace: str
    name: str
    resource_version: str
    images: dict[str, str]  # container -> image, every container of the pod template (init containers too)
    primary_images: dict[str, str]  # the containers pulling from the primary registry
    stuck: list[StuckPod] = field(default_factory=list)
    since: str = ""
    record: dict[str, Any] | None = None

    @property
    def state(self) -> WorkloadState:
        if self.record is not None:
            mirrored = self.record.get("mirrored") or {}
            if not mirrored or not isinstance(mirrored, dict):
                return "record-unreadable"
            on_mirror = all(self.images.get(c) == ref for c, ref in mirrored.items())
            return "on-mirror" if on_mirror else "changed-since-fallback"
        return "stuck" if self.stuck else "healthy"


def _containers(pod_spec: JSON) -> dict[str, str]:
    """container name -> image, init containers included, of a pod spec."""
    return {
        str(c.get("name")): str(c.get("image") or "")
        for c in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    }


def template_containers(workload: JSON) -> dict[str, str]:
    """container name -> image of a Deployment's, StatefulSet's or DaemonSet's pod template."""
    return _containers(((workload.get("spec") or {}).get("template") or {}).get("spec") or {})


def on_registry(image: str, host: str) -> bool:
    try:
        return ImageReference.parse(image).registry == host
    except BadImageReference:
        return False


def read_record(workload: JSON) -> dict[str, Any] | None:
    """The detour rollbook recorded on this workload, or None; an unreadable record counts as a record
    (with nothing mirrored), so it is reported rather than overwritten."""
    text = revisions.annotations_of(workload).get(FALLBACK_ANNOTATION)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}
    return data if isinstance(data, dict) else {"unreadable": text[:200]}


def record_text(*, primary: str, mirror: str, originals: dict[str, str], mirrored: dict[str, str]) -> str:
    return json.dumps(
        {"primary": primary, "mirror": mirror, "originals": originals, "mirrored": mirrored},
        sort_keys=True,
        separators=(",", ":"),
    )


def _controlled_by_any(pod: JSON, owner_uids: set[str]) -> bool:
    return any(revisions.is_controlled_by(pod, uid) for uid in owner_uids)


def find_workloads(
    controllers: list[tuple[WorkloadKind, JSON]],
    replica_sets: list[JSON],
    pod_list: list[JSON],
    events: list[JSON],
    *,
    primary: str,
) -> list[Workload]:
    """Every workload with a container on `primary` (or a recorded detour from it), with its pods stuck
    pulling from it and since when (the oldest pull-failure event of those pods, else their creation).
    A Deployment's pods belong to its ReplicaSets; a StatefulSet's and a DaemonSet's to the controller itself."""
    rs_by_deployment: dict[str, set[str]] = {}
    for rs in replica_sets:
        for ref in revisions.meta(rs).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == "Deployment":
                rs_by_deployment.setdefault(str(ref.get("uid")), set()).add(str(revisions.meta(rs).get("uid")))
    first_failure: dict[str, str] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Pod" or event.get("reason") not in ("Failed", "BackOff", "ErrImagePull"):
            continue
        when = str(event.get("firstTimestamp") or event.get("eventTime") or "")
        pod_name = str(involved.get("name"))
        if when and (pod_name not in first_failure or when < first_failure[pod_name]):
            first_failure[pod_name] = when
    found = []
    for kind, controller in controllers:
        meta = revisions.meta(controller)
        images = template_containers(controller)
        primary_images = {c: i for c, i in images.items() if on_registry(i, primary)}
        record = read_record(controller)
        if not primary_images and record is None:
            continue
        uid = str(meta.get("uid"))
        owners = rs_by_deployment.get(uid, set()) if kind == "Deployment" else {uid}
        stuck = [
            StuckPod(p.pod, p.container, p.image, p.reason, p.message)
            for pod in pod_list
            if _controlled_by_any(pod, owners)
            for p in pods.problems(pod)
            if p.reason in PULL_FAILURE_REASONS and on_registry(p.image, primary)
        ]
        stuck_pods = {s.pod for s in stuck}
        starts = [first_failure.get(name) for name in stuck_pods] + [
            str(revisions.meta(pod).get("creationTimestamp") or "")
            for pod in pod_list
            if str(revisions.meta(pod).get("name")) in stuck_pods
            and str(revisions.meta(pod).get("name")) not in first_failure
        ]
        found.append(
            Workload(
                kind=kind,
                namespace=str(meta.get("namespace")),
                name=str(meta.get("name")),
                resource_version=str(meta.get("resourceVersion") or ""),
                images=images,
                primary_images=primary_images,
                stuck=stuck,
                since=min((s for s in starts if s), default=""),
                record=record,
            )
        )
    return found


def known_digests(pod_list: list[JSON]) -> dict[str, str]:
    """image reference -> digest, from pods whose runtime reported what it pulled (`imageID`)."""
    spec_images: dict[str, str] = {}
    for pod in pod_list:
        by_name = _containers(pod.get("spec") or {})
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            digest = digest_of_image_id(str(cs.get("imageID") or ""))
            image = by_name.get(str(cs.get("name"))) or ""
            if digest and image:
                spec_images.setdefault(image, digest)
    return spec_images


@dataclass(frozen=True)
class ImageSwitch:
    """One container's move to the mirror (or the reason it may not move)."""

    container: str
    original: str
    digest: str | None
    digest_source: DigestSource | None
    mirror_ref: str | None
    refused: str = ""


def mirror_switch(
    container: str,
    image: str,
    *,
    mirror: str,
    digest: str | None,
    source: DigestSource | None,
    mirror_digest: str | None,
    mirror_detail: str,
    signature: tuple[bool, str] | None,
) -> ImageSwitch:
    """Whether `image` may be served from `mirror`: its digest must be known and served there, and (when
    signatures are checked) the mirror's copy must verify. `mirror_digest` is what the mirror served when
    asked for that digest; `signature` is (verified, detail) or None when not checked."""
    ref = ImageReference.parse(image)
    if digest is None:
        why = (
            f"the digest of {image} is unknown (not pinned, the primary did not answer, no pod reports having pulled "
            "it): give it in expected_digests"
        )
        return ImageSwitch(container, image, None, None, None, why)
    if mirror_digest != digest:
        why = f"mirror {mirror} does not serve {ref.repository}@{digest}: {mirror_detail}"
        return ImageSwitch(container, image, digest, source, None, why)
    target = ref.pinned(digest, registry=mirror)
    if signature is not None and not signature[0]:
        why = f"the mirror's copy {target} does not verify with the registry's cosign key: {signature[1]}"
        return ImageSwitch(container, image, digest, source, None, why)
    return ImageSwitch(container, image, digest, source, target)


def switch_back_images(workload: Workload) -> dict[str, str]:
    """The original references a detour recorded, for the containers still on their mirror copy."""
    record = workload.record or {}
    originals, mirrored = record.get("originals") or {}, record.get("mirrored") or {}
    return {c: str(originals[c]) for c, ref in mirrored.items() if c in originals and workload.images.get(c) == ref}
