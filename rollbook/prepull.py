"""The rules of an image pre-pull (cache-warmer) DaemonSet (pure, unit-tested): which images to keep warm, the
DaemonSet that keeps them on every node, and what a run would change on the live one.

The pattern is kubernetes-image-puller's and kube-fledged's: one pod per node, one container per image, each
container running a tiny `sleep` so the kubelet pulls the image and keeps it (an image a running container uses
is never garbage-collected). The warmed images may have no shell or `sleep` of their own, so an init container
copies a static `sleep` from `sleep_image` into a shared emptyDir and every container runs that copy. When the
registry goes down, the nodes already hold the images, so pods that start (reschedules, scale-ups, a fallback)
need no pull.

Images are kept as the workloads write them (a digest-pinned reference stays pinned, a tag stays a tag), so the
node holds exactly what the workload's pods will ask for; duplicates are the same reference written the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rollbook import revisions
from rollbook.change import ANNOTATION_PREFIX
from rollbook.image_refs import BadImageReference, ImageReference
from rollbook.revisions import JSON

DEFAULT_NAME = "rollbook-image-cache"
IMAGES_ANNOTATION = "rollbook.dev/prepull-images"  # the images, a JSON list, sorted
SPEC_HASH_ANNOTATION = "rollbook.dev/prepull-spec"  # a hash of the spec rollbook wrote: "is it still ours as written"
ROLE_LABEL = "rollbook.dev/role"
ROLE = "image-prepull"
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "rollbook"

SLEEP_VOLUME = "rollbook-sleep"
SLEEP_DIR = "/rollbook-sleep"
SLEEP_COPY = f"{SLEEP_DIR}/sleep"
# seconds, the largest a 32-bit sleep takes: coreutils and busybox `sleep` both read plain seconds
SLEEP_SECONDS = "2147483647"
COPY_CONTAINER = "copy-sleep"
NOBODY = 65534
# a container that only sleeps: next to nothing reserved on each node, and a small ceiling
REQUESTS = {"cpu": "1m", "memory": "4Mi"}
LIMITS = {"cpu": "10m", "memory": "16Mi"}
# one pod holds every image: beyond this many containers a pod is unwieldy (and slow to start on every node);
# split the sources over several DaemonSets (`name`) instead
MAX_IMAGES = 200
_NAME_HASH = 10  # hex digits of the reference's sha256 in a container name: unique, short, stable
_NAME_SLUG = 63 - _NAME_HASH - 1


class PrepullRefused(ValueError):
    """The request cannot be done as asked (no images, a bad reference, a DaemonSet rollbook does not own);
    nothing changed."""


@dataclass(frozen=True)
class PrepullDiff:
    """The live DaemonSet against the desired one: which images a write adds and removes."""

    create: bool  # no DaemonSet of that name yet
    added: list[str]
    removed: list[str]
    kept: list[str]
    settings_changed: bool  # same images, but other settings differ (sleep image, node selector, template)
    resource_version: str | None  # the live object's, to guard the write; None to create

    @property
    def unchanged(self) -> bool:
        return not (self.create or self.added or self.removed or self.settings_changed)


def workload_images(workload: JSON) -> list[str]:
    """The images of a workload's pod template, init containers included, in template order."""
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [str(c.get("image") or "") for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]]


def desired_images(workloads: Iterable[JSON]) -> list[str]:
    """Every image the workloads run, each once, sorted; a reference a runtime would refuse is refused here,
    naming the workload, so the DaemonSet never holds a container that can only fail."""
    found: set[str] = set()
    for workload in workloads:
        for image in workload_images(workload):
            try:
                ImageReference.parse(image)
            except BadImageReference:
                meta = revisions.meta(workload)
                raise PrepullRefused(
                    f"{str(workload.get('kind') or 'workload').lower()} {meta.get('namespace')}/{meta.get('name')} "
                    f"has an image {image!r} that is no valid image reference; nothing changed"
                ) from None
            found.add(image)
    return sorted(found)


def container_name(image: str) -> str:
    """A DNS-label container name for `image`, the same for the same reference on every run: its repository's
    last part and tag, readable, then a hash of the whole reference, so two images never share a name."""
    ref = ImageReference.parse(image)
    readable = ref.repository.rsplit("/", 1)[-1] + (f"-{ref.tag}" if ref.tag else "")
    slug = re.sub(r"[^a-z0-9]+", "-", readable.lower()).strip("-")[:_NAME_SLUG].strip("-") or "image"
    return f"{slug}-{hashlib.sha256(image.encode()).hexdigest()[:_NAME_HASH]}"


def selector_labels(name: str) -> dict[str, str]:
    return {NAME_LABEL: name, ROLE_LABEL: ROLE}


def labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), MANAGED_BY_LABEL: MANAGED_BY}


def _mount() -> JSON:
    return {"name": SLEEP_VOLUME, "mountPath": SLEEP_DIR}


def _hardened() -> JSON:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def _resources() -> JSON:
    return {"requests": dict(REQUESTS), "limits": dict(LIMITS)}


def daemonset_manifest(
    *,
    namespace: str,
    name: str,
    images: list[str],
    sleep_image: str,
    sleep_binary: str = "/bin/sleep",
    node_selector: Mapping[str, str] | None = None,
) -> JSON:
    """The DaemonSet that keeps `images` on every node: tolerates every taint (so tainted nodes pull too), asks
    for next to nothing, runs as nobody with no token, privileges or writable root."""
    if not images:
        raise PrepullRefused("no images to keep warm; nothing changed")
    if len(images) > MAX_IMAGES:
        raise PrepullRefused(
            f"{len(images)} images are more than one pre-pull DaemonSet keeps (at most {MAX_IMAGES}): split the "
            "sources over several DaemonSets (another name each); nothing changed"
        )
    ImageReference.parse(sleep_image)
    containers = [
        {
            "name": container_name(image),
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": [SLEEP_COPY, SLEEP_SECONDS],
            "resources": _resources(),
            "securityContext": _hardened(),
            "volumeMounts": [{**_mount(), "readOnly": True}],
        }
        for image in images
    ]
    copy_sleep = {
        "name": COPY_CONTAINER,
        "image": sleep_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["cp", sleep_binary, SLEEP_COPY],
        "resources": _resources(),
        "securityContext": _hardened(),
        "volumeMounts": [_mount()],
    }
    pod_spec: JSON = {
        "initContainers": [copy_sleep],
        "containers": containers,
        "volumes": [{"name": SLEEP_VOLUME, "emptyDir": {"sizeLimit": "32Mi"}}],
        "tolerations": [{"operator": "Exists"}],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY},
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(sorted(node_selector.items()))
    spec: JSON = {
        "selector": {"matchLabels": selector_labels(name)},
        # the pods serve nothing and the old images stay on disk until the kubelet collects them, so every
        # node may take its new pod at once: the new images reach every node soonest
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
        "template": {"metadata": {"labels": labels(name)}, "spec": pod_spec},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels(name),
            "annotations": {IMAGES_ANNOTATION: json.dumps(images), SPEC_HASH_ANNOTATION: spec_hash(spec)},
        },
        "spec": spec,
    }


def spec_hash(spec: JSON) -> str:
    """sha256 of the spec as rollbook writes it (the API server adds defaults, so the live spec is not compared)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def live_images(daemonset: JSON) -> list[str]:
    """The images the live DaemonSet's containers keep warm (its init container is the sleep copy)."""
    spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    return sorted({str(c.get("image") or "") for c in spec.get("containers") or []})


def is_managed(daemonset: JSON) -> bool:
    found = revisions.meta(daemonset).get("labels") or {}
    return found.get(MANAGED_BY_LABEL) == MANAGED_BY and found.get(ROLE_LABEL) == ROLE


def diff(live: JSON | None, desired: JSON) -> PrepullDiff:
    """What writing `desired` changes. A DaemonSet of that name that rollbook's image-prepull did not write is
    refused (someone else's, never overwritten)."""
    wanted = live_images(desired)
    if live is None:
        return PrepullDiff(
            create=True, added=wanted, removed=[], kept=[], settings_changed=False, resource_version=None
        )
    meta = revisions.meta(live)
    if not is_managed(live):
        raise PrepullRefused(
            f"daemonset {meta.get('namespace')}/{meta.get('name')} exists and is not rollbook's image pre-pull "
            f"(no {MANAGED_BY_LABEL}={MANAGED_BY}, {ROLE_LABEL}={ROLE} labels): choose another name; nothing changed"
        )
    have = live_images(live)
    same_spec = revisions.annotations_of(live).get(SPEC_HASH_ANNOTATION) == revisions.annotations_of(desired).get(
        SPEC_HASH_ANNOTATION
    )
    return PrepullDiff(
        create=False,
        added=sorted(set(wanted) - set(have)),
        removed=sorted(set(have) - set(wanted)),
        kept=sorted(set(wanted) & set(have)),
        settings_changed=set(wanted) == set(have) and not same_spec,
        resource_version=str(meta.get("resourceVersion") or "") or None,
    )


def written_as_desired(live: JSON | None, desired: JSON) -> bool:
    """Whether the live DaemonSet is the desired one as rollbook wrote it (a retry finding its own write)."""
    return live is not None and is_managed(live) and diff(live, desired).unchanged


def replacement(live: JSON, desired: JSON, audit: Mapping[str, str]) -> JSON:
    """The body that replaces `live` with `desired`, guarded by the live resourceVersion: the desired spec and
    rollbook's labels and annotations (with the audit of this change); others' labels and annotations are kept,
    rollbook's old ones are not."""
    old = revisions.meta(live)
    kept_notes = {k: v for k, v in (old.get("annotations") or {}).items() if not k.startswith(ANNOTATION_PREFIX)}
    body = json.loads(json.dumps(desired))
    body["metadata"]["labels"] = {**(old.get("labels") or {}), **desired["metadata"]["labels"]}
    body["metadata"]["annotations"] = {**kept_notes, **desired["metadata"]["annotations"], **audit}
    body["metadata"]["resourceVersion"] = old.get("resourceVersion")
    return body


def with_audit(desired: JSON, audit: Mapping[str, str]) -> JSON:
    """The body that creates `desired`, with the audit of this change."""
    body = json.loads(json.dumps(desired))
    body["metadata"]["annotations"] = {**desired["metadata"]["annotations"], **audit}
    return body


@dataclass(frozen=True)
class Readiness:
    """A DaemonSet's rollout as `kubectl rollout status daemonset` reads it."""

    desired: int
    updated: int
    ready: int
    observed_current: bool

    @property
    def done(self) -> bool:
        return self.observed_current and self.desired == self.updated == self.ready

    @property
    def message(self) -> str:
        if not self.observed_current:
            return "the controller has not seen the latest spec yet"
        return f"{self.updated}/{self.desired} nodes updated, {self.ready}/{self.desired} ready"


def readiness(daemonset: JSON) -> Readiness:
    status = daemonset.get("status") or {}
    generation = int(revisions.meta(daemonset).get("generation") or 0)
    return Readiness(
        desired=int(status.get("desiredNumberScheduled") or 0),
        updated=int(status.get("updatedNumberScheduled") or 0),
        ready=int(status.get("numberReady") or 0),
        observed_current=int(status.get("observedGeneration") or 0) >= generation,
    )
