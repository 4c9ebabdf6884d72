"""Image signature: every image the release runs carries a cosign signature made with the expected key."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import task

from rollbook.checklist import CheckResult, Status, one_line
from rollbook.signature_failures import explain
from tasks.policies import CHECK_REGISTRY_TOOL
from tasks.registry import load_registry, pulled_copy
from tasks.signing import SignatureError, verify_image, write_docker_config


def signature_result(
    answers: list[dict[str, Any]], seconds: float = 0.0, *, served_by: dict[str, str] | None = None
) -> CheckResult:
    failed = [a for a in answers if not a["verified"]]
    evidence = {
        "verified": [a["image"] for a in answers if a["verified"]],
        "failed": {a["image"]: a["detail"] for a in failed},
        "failure_kinds": {a["image"]: a.get("failure") or "unknown" for a in failed},
        "served_by": served_by or {},
    }
    if failed:
        first = failed[0]
        kind = first.get("failure") or "unknown"
        reason = (
            f"{len(failed)} of {len(answers)} image(s) failed verification: {first['image']}: {kind} "
            f"({explain(kind)}): {first['detail']}"
        )
        status = Status.FAIL
    else:
        reason = f"all {len(answers)} image(s) signed with the given key"
        status = Status.PASS
    return CheckResult(
        check="image-signature", status=status, reason=one_line(reason), evidence=evidence, seconds=seconds
    )


@task(**CHECK_REGISTRY_TOOL)
def check_image_signature(images: list[str], public_key_path: str | None, registry_block: str | None) -> CheckResult:
    """cosign verify (key-based, no transparency log) of every image; unsigned or tampered images fail.

    With a 'Rollbook Container Registry' block, its key and its login (for the registry and its mirrors) are
    used, and each image is verified where a node using its mirrors would pull it from (`locate_image`: the
    first mirror serving it, else the registry), pinned by that copy's digest, so a mirror's content is what is
    checked when it is what would run. The block is loaded here so its password never travels as a task
    parameter or result."""
    started = time.monotonic()
    registry = load_registry(registry_block) if registry_block else None
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
        sources = {image: pulled_copy(registry, image) for image in images}
        try:
            answers = [
                {**verify_image.fn(sources[image], key, docker_config=config), "image": image} for image in images
            ]
        except SignatureError as exc:
            return CheckResult(check="image-signature", status=Status.ERROR, reason=one_line(str(exc)))
    served_by = {image: source for image, source in sources.items() if source != image}
    return signature_result(answers, time.monotonic() - started, served_by=served_by)
