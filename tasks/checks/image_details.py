"""Image details: each image's digest, compressed size and run-time config, against what the rendered chart expects.

Read over the registry's HTTP API (tasks/registry.py: manifest, then the config blob, each bounded in size and
checked against its digest); no image is pulled. The rules live in rollbook/image_config.py. The check informs:
it answers `warn` (which never blocks) for a mismatch and for an image it could not read, `pass` otherwise, and
never `fail`; the image-signature check is the one that stops a release whose image cannot be had.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from blocks import ContainerRegistry
from rollbook.checklist import CheckResult, Status, one_line
from rollbook.image_config import (
    MAX_CONFIG_BYTES,
    ContainerUse,
    ImageConfig,
    NotAnImage,
    choose_platform,
    compressed_size,
    config_digest,
    container_uses,
    human_size,
    is_index,
    load_json,
    mismatches,
    uses_of,
)
from rollbook.image_refs import BadImageReference, ImageReference, registry_host
from tasks.checks.common import JSON, NAMES_SHOWN
from tasks.policies import CHECK_REGISTRY_READ
from tasks.registry import load_registry, locate_image, read_blob, read_manifest

REQUEST_TIMEOUT_SECONDS = 20.0
LOOPBACK = ("127.", "localhost", "[::1]")


def registry_for(host: str, block: ContainerRegistry | None) -> ContainerRegistry:
    """The block when `host` is one of its addresses (its login and scheme); else anonymous access, over plain
    HTTP only for a loopback registry (as go-containerregistry, and so crane, cosign and grype, treat it)."""
    if block is not None and host in {registry_host(a) for a in block.pull_order()}:
        return block
    return ContainerRegistry(url=host, insecure=host.startswith(LOOPBACK))


class _Unreadable(Exception):
    """The image's documents could not be had or read; the message says which and why."""


def _json(fetched: Any, what: str) -> JSON:
    if fetched.body is None:
        raise _Unreadable(fetched.detail)
    try:
        return load_json(fetched.body, what)
    except NotAnImage as exc:
        raise _Unreadable(str(exc)) from None


def describe(image: str, block: ContainerRegistry | None, timeout: float = REQUEST_TIMEOUT_SECONDS) -> JSON:
    """{"digest", "platform", "platforms", "served_by", "size", "size_human", "config"} of one image, read from
    where a node would pull it: with a block, the first of its mirrors (then the registry) that serves it."""
    ref = ImageReference.parse(image)
    host, reference = ref.registry, ref.reference
    if block is not None:  # where a node using the block's mirrors would pull it from (tasks.registry)
        located = locate_image.fn(block, image, timeout)
        if located["host"] is None:
            raise _Unreadable("; ".join(located["tried"]) or f"no registry serves {image}")
        host, reference = str(located["host"]), str(located["digest"] or reference)
    registry = registry_for(host, block)
    top = read_manifest(registry, host, ref.repository, reference, timeout)
    manifest = _json(top, f"the manifest of {image}")
    details: JSON = {"digest": top.digest, "platform": "", "platforms": [], "served_by": host}
    if is_index(manifest, top.media_type):
        try:
            chosen, platform, platforms = choose_platform(manifest)
        except NotAnImage as exc:
            raise _Unreadable(str(exc)) from None
        details.update(platform=platform, platforms=platforms)
        entry = read_manifest(registry, host, ref.repository, chosen, timeout)
        manifest = _json(entry, f"the {platform} manifest of {image}")
        details["platform_digest"] = entry.digest
    try:
        size, digest = compressed_size(manifest), config_digest(manifest)
    except NotAnImage as exc:
        raise _Unreadable(str(exc)) from None
    blob = read_blob(registry, host, ref.repository, digest, timeout, MAX_CONFIG_BYTES)
    try:
        config = ImageConfig.parse(_json(blob, f"the config of {image}"))
    except NotAnImage as exc:
        raise _Unreadable(str(exc)) from None
    if not details["platform"]:
        known = config.os or config.architecture
        details["platform"] = f"{config.os or '?'}/{config.architecture or '?'}" if known else "unspecified"
    details.update(size=size, size_human=human_size(size), config=config.summary(), config_digest=digest)
    details["_config"] = config
    return details


def _line(image: str, d: JSON) -> str:
    config = d["config"]
    ports = ",".join(config["exposed_ports"]) or "none"
    platform = f" ({d['platform']} of {len(d['platforms'])} platform(s))" if d["platforms"] else ""
    health = "yes" if config["healthcheck"] else "no"
    compared = "" if d.get("containers") else " (no container of the rendered chart runs it: not compared)"
    served = d.get("served_by")
    source = f" from {served}" if served and served != ImageReference.parse(image).registry else ""
    line = f"{image}{source} {d['digest'][:19]}… {d['size_human']}{platform}, healthcheck {health}, ports {ports}"
    return line + compared


def image_details_result(
    described: dict[str, JSON], unreadable: dict[str, str], warnings: list[str], seconds: float = 0.0
) -> CheckResult:
    evidence: JSON = {
        "images": {image: {k: v for k, v in d.items() if not k.startswith("_")} for image, d in described.items()},
        "unreadable": unreadable,
        "mismatches": warnings[:NAMES_SHOWN],
        "mismatch_count": len(warnings),
    }
    total = len(described) + len(unreadable)
    if not total:
        return CheckResult(check="image-details", status=Status.WARN, reason="no image to inspect", evidence=evidence)
    problems = []
    if unreadable:
        image, why = next(iter(unreadable.items()))
        problems.append(f"{len(unreadable)} of {total} image(s) could not be read: {image}: {why}")
    if warnings:
        problems.append(f"{len(warnings)} mismatch(es) with the chart: {warnings[0]}")
    if problems:
        reason, status = "; ".join(problems), Status.WARN
    else:
        compared = sum(1 for d in described.values() if d.get("containers"))
        lead = f"{compared} of {len(described)} image(s) compared, no mismatch with the chart: "
        reason = lead + "; ".join(_line(i, d) for i, d in described.items())
        status = Status.PASS
    return CheckResult(
        check="image-details", status=status, reason=one_line(reason, 500), evidence=evidence, seconds=seconds
    )


@task(**CHECK_REGISTRY_READ)
def check_image_details(images: list[str], manifests: list[JSON], registry_block: str | None) -> CheckResult:
    """Digest, size and config of every image, compared with the containers of the rendered chart (`manifests`,
    empty when it did not render: then only the images are described). The block is loaded here so its password
    never travels as a task parameter."""
    started = time.monotonic()
    block = load_registry(registry_block) if registry_block else None
    uses: list[ContainerUse] = container_uses(manifests)
    described: dict[str, JSON] = {}
    unreadable: dict[str, str] = {}
    warnings: list[str] = []
    for image in images:
        try:
            details = describe(image, block)
        except (_Unreadable, BadImageReference) as exc:
            unreadable[image] = one_line(str(exc))
            continue
        mine = uses_of(image, uses)
        details["containers"] = [use.where for use in mine]  # empty: no container of the chart runs it
        described[image] = details
        warnings += mismatches(image, details["_config"], mine)
    return image_details_result(described, unreadable, warnings, time.monotonic() - started)
