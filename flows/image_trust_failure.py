"""The guide's cosign-failure runbook: a Deployment runs (or was just given) an image whose signature does not
verify. Do not run it, check it is not the network, try the mirror, fall back to the last known-good signed
image, and tell security.

1. Classify each image's failure with cosign's own answer (`rollbook.signature_failures`): the registry could
   not be reached, no signature, a signature that does not verify (another key or an altered payload), one made
   for another image, no such image.
2. Try each mirror's copy of the same digest: a copy that verifies proves the content is ours.
3. Decide (`rollbook.image_trust`): trusted; trusted on a mirror (security told); a registry outage (nothing
   rolled back: it is not a trust failure); a trust failure: deployment-undo to the last known-good revision
   whose images verify, with this run's controls (plan, approval, audit); or cannot tell (the run fails).
4. Notify through a Prefect notification block with the evidence; the same evidence is the run's artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from blocks import ContainerRegistry
from flows._deployment_target import DeploymentTarget
from flows.deployment_undo import UndoRequest, deployment_undo
from rollbook import image_trust
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, Outcome, subflow_result
from rollbook.image_refs import ImageReference, registry_host
from rollbook.registry_fallback import known_digests, template_containers
from rollbook.reports.image_trust import CopyCheck, ImageCheck, ImageTrustResult, evidence_markdown
from rollbook.types import BlockName, BlockRef, FormOptional
from tasks.cluster import resolve_cluster
from tasks.kube import read_deployment
from tasks.notify import notify
from tasks.registry import manifest_digest, public_key_file, resolve_registry, verify_signature
from tasks.workload_images import read_namespace_workloads

__all__ = ["ImageTrustRequest", "ImageTrustResult", "UntrustedImage", "image_trust_failure"]


class UntrustedImage(RuntimeError):
    """The flow could not establish whether an image is ours (or could not fall back): a person must act."""


class ImageTrustRequest(DeploymentTarget):
    registry_block: BlockName = Field(
        description="'Rollbook Container Registry' block: its cosign public key, login and mirrors."
    )
    notify_block: FormOptional[BlockRef] = Field(
        default=None, description="Notification block for security, as <block-type-slug>/<name>."
    )
    fall_back: bool = Field(
        default=True, description="On a trust failure, roll back to the last known-good signed revision."
    )
    wait_timeout_seconds: FormOptional[int] = Field(
        default=None, ge=1, le=6 * 3600, description="The fallback's rollout wait; default as deployment-undo."
    )
    probe_timeout_seconds: int = Field(default=5, ge=1, le=60, description="Per manifest request to a registry.")


def _kind(answer: dict[str, Any]) -> str:
    return "verified" if answer["verified"] else str(answer.get("failure") or "unknown")


def _check(
    request: ImageTrustRequest, registry: ContainerRegistry, container: str, image: str, pod_digests: dict[str, str]
) -> ImageCheck:
    """cosign on the image as the Deployment names it, then on every other registry's copy of the same digest."""
    ref = ImageReference.parse(image)
    answer = verify_signature(registry, image)
    primary = CopyCheck(reference=image, kind=_kind(answer), detail=str(answer["detail"]))
    digest = ref.digest or pod_digests.get(image)
    if digest is None and primary.kind != "registry-unreachable":
        digest = manifest_digest(registry, ref.registry, image, request.probe_timeout_seconds)["digest"]
    mirrors = []
    if primary.kind != "verified" and digest:
        hosts = [registry_host(a) for a in registry.pull_order()]
        for host in [h for h in hosts if h != ref.registry]:
            copy = ref.pinned(digest, registry=host)
            # cosign asked for a digest a registry lacks says "no signatures found": look for the copy first
            served = manifest_digest(registry, host, copy, request.probe_timeout_seconds)
            if served["digest"] != digest:
                kind = "image-not-found" if served["reachable"] else "registry-unreachable"
                mirrors.append(CopyCheck(reference=copy, kind=kind, detail=str(served["detail"])))
                continue
            checked = verify_signature(registry, copy)
            mirrors.append(CopyCheck(reference=copy, kind=_kind(checked), detail=str(checked["detail"])))
    verdict = image_trust.image_verdict(primary.kind, [m.kind for m in mirrors])
    return ImageCheck(
        container=container, image=image, digest=digest, primary=primary, mirrors=mirrors, verdict=verdict
    )


@flow(name="image-trust-failure")
def image_trust_failure(
    request: ImageTrustRequest, controls: ChangeControls
) -> ImageTrustResult | State[ImageTrustResult]:
    """Classify a Deployment's signature failures and, for a real trust failure, fall back to the last
    known-good signed revision and notify security."""
    registry = resolve_registry(request.registry_block)
    if not registry.cosign_public_key:
        raise ValueError(f"registry block {request.registry_block!r} has no cosign_public_key; nothing checked")
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    hosts = {registry_host(a) for a in registry.pull_order()}
    images = {
        c: i
        for c, i in template_containers(read_deployment(cluster, namespace, request.deployment)).items()
        if ImageReference.parse(i).registry in hosts
    }
    if not images:
        raise ValueError(
            f"no image of deployment {request.deployment!r} in namespace {namespace!r} comes from "
            f"{', '.join(sorted(hosts))} (registry block {request.registry_block!r}); nothing checked or changed"
        )
    pod_digests = known_digests(read_namespace_workloads(cluster, namespace)["pods"])
    checks = [_check(request, registry, c, i, pod_digests) for c, i in images.items()]
    verdict = image_trust.workload_verdict([c.verdict for c in checks])
    get_run_logger().info("image trust of %s/%s: %s", namespace, request.deployment, verdict)

    outcome: Outcome = "planned" if controls.plan else "unchanged"
    fallback: dict[str, Any] | None = None
    failure = ""
    if verdict == "trust-failure" and request.fall_back:
        try:
            undone = _fall_back(request, registry, namespace, controls)
            fallback = undone.model_dump(
                include={"outcome", "summary", "from_revision", "to_revision", "target_images"}
            )
            outcome = undone.outcome
        except Exception as exc:  # the evidence still goes out, then the run fails with the reason
            failure = f"the fallback to the last known-good signed revision failed: {exc}"
    summary = _summary(verdict, fallback, failure, plan=controls.plan, fall_back=request.fall_back)
    result = ImageTrustResult(
        outcome=outcome,
        summary=summary,
        namespace=namespace,
        deployment=request.deployment,
        verdict=verdict,
        images=checks,
        fallback=fallback,
    )
    if request.notify_block and verdict in ("trust-failure", "trusted-on-mirror", "cannot-tell") and not controls.plan:
        subject = f"rollbook: image trust {verdict} for {namespace}/{request.deployment}"
        result.notified = notify(request.notify_block, subject=subject, body=evidence_markdown(result))
    create_markdown_artifact(evidence_markdown(result), key=artifact_key("image-trust", namespace, request.deployment))
    if failure or verdict == "cannot-tell":
        raise UntrustedImage(summary)
    return result


def _fall_back(
    request: ImageTrustRequest, registry: ContainerRegistry, namespace: str, controls: ChangeControls
) -> Any:
    """deployment-undo to the newest revision known good *and* signed, under this run's controls."""
    undo = UndoRequest(
        cluster_block=request.cluster_block,
        kubeconfig_path=request.kubeconfig_path,
        context=request.context,
        namespace=namespace,
        deployment=request.deployment,
        last_known_good=True,
        verify_images=True,
        cosign_public_key=public_key_file(registry),
        wait_timeout_seconds=request.wait_timeout_seconds,
    )
    return subflow_result(deployment_undo(undo, controls))


def _summary(
    verdict: image_trust.Verdict, fallback: dict[str, Any] | None, failure: str, *, plan: bool, fall_back: bool
) -> str:
    text = f"{verdict}: {image_trust.ADVICE[verdict]}"
    if failure:
        return f"{text}. {failure}"
    if fallback:
        return f"{text}. Fallback (deployment-undo to the last known-good signed revision): {fallback['summary']}"
    if verdict == "trust-failure" and not fall_back:
        return f"{text}. fall_back=false: nothing rolled back, the untrusted image still runs"
    return f"plan only: {text}; nothing changed" if plan else text
