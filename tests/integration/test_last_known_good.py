"""Last known good: the newest revision with evidence of a complete rollout, optionally with verified images."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from flows.deployment_undo import UndoRequest, deployment_undo
from flows.last_known_good import LastKnownGoodRequest, NoKnownGoodRevision, last_known_good
from rollbook import revisions
from rollbook.change import ChangeControls
from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until

CONTROLS = ChangeControls(reason="integration test: last known good", requested_by="pytest")


def _image_of(apps: client.AppsV1Api, namespace: str) -> str:
    return apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers[0].image  # type: ignore[no-any-return]


def _status(sandbox: Sandbox, namespace: str) -> None:
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)


def _set_image(sandbox: Sandbox, namespace: str, image: str) -> None:
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={image}", "-n", namespace)


def test_last_known_good_with_and_without_signatures(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    signed_old, signed_new = registries.image("1.0.0", mirror=True), registries.image("1.1.0", mirror=True)
    crashing = registries.image("1.2.0", mirror=True)
    unsigned = registries.push("9.9.9-unsigned", "unsigned build")
    where: dict[str, Any] = {
        "kubeconfig_path": str(sandbox.cfg.kubeconfig),
        "namespace": namespace,
        "deployment": "web",
    }

    sandbox.kubectl("create", "deployment", "web", f"--image={signed_old}", "--replicas=2", "-n", namespace)
    _status(sandbox, namespace)  # revision 1
    _set_image(sandbox, namespace, signed_new)
    _status(sandbox, namespace)  # revision 2
    # Nothing records that revision 1 was ever available once it is scaled to zero: not known good.
    assert last_known_good(LastKnownGoodRequest(**where))["revision"] == 2  # live and rolled out

    undo = deployment_undo(UndoRequest(**where, wait_timeout_seconds=90), CONTROLS)  # revision 3 = 1.0.0, marked
    assert undo.rollout is not None and undo.rollout["done"]
    _set_image(sandbox, namespace, unsigned)
    _status(sandbox, namespace)  # revision 4: runs fine, but unsigned
    # revision 5 crash-loops and its rollout is stuck. The crash comes from the sandbox's label stage, which
    # kwok has loaded since the sandbox started: a per-image stage created just now can reach kwok after the pod
    # was already made Ready (kwok does not look at a settled pod again), and then revision 5 would complete.
    patch = {"spec": {"template": {"metadata": {"labels": {FAULT_LABEL: "CrashLoopBackOff"}},
                                   "spec": {"containers": [{"name": "demo-app", "image": crashing}]}}}}  # fmt: skip
    apps.patch_namespaced_deployment("web", namespace, patch)

    def crash_looping() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=f"app=web,{FAULT_LABEL}=CrashLoopBackOff").items
        return any(
            s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff"
            for p in pods
            for s in p.status.container_statuses or []
        )

    wait_until(crash_looping, 120, "the new pod to crash-loop")
    plain = last_known_good(LastKnownGoodRequest(**where))
    assert plain["revision"] == 4 and plain["images"] == [unsigned]  # the old side, still fully available
    verified = last_known_good(
        LastKnownGoodRequest(**where, verify_images=True, cosign_public_key=str(registries.public_key))
    )
    assert verified["revision"] == 3 and verified["images"] == [signed_old]
    assert [c["revision"] for c in verified["candidates"]] == [4, 3]
    assert verified["candidates"][0]["signatures"].startswith("NOT verified")

    result = deployment_undo(
        UndoRequest(
            **where,
            last_known_good=True,
            verify_images=True,
            cosign_public_key=str(registries.public_key),
            wait_timeout_seconds=90,
        ),
        CONTROLS,
    )
    assert result.changed and result.rollout is not None and result.rollout["done"] and result.to_revision == 3
    assert _image_of(apps, namespace) == signed_old
    live = apps.read_namespaced_deployment("web", namespace)
    assert live.metadata.annotations["rollbook.dev/rolled-back-to-revision"] == "3"
    assert revisions.ROLLOUT_COMPLETE_ANNOTATION not in live.metadata.annotations


def test_no_known_good_revision_is_a_clear_error(sandbox: Sandbox, apps: client.AppsV1Api, namespace: str) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    try:
        sandbox.kubectl("create", "deployment", "web", f"--image={registries.image('1.0.0')}", "-n", namespace)
        # the deployment controller writes the revision annotation right after the create: compare from then on
        wait_until(
            lambda: (
                revisions.REVISION_ANNOTATION
                in (apps.read_namespaced_deployment("web", namespace).metadata.annotations or {})
            ),
            30,
            "the deployment controller to record revision 1",
        )
        before = apps.read_namespaced_deployment("web", namespace)
        where = {"kubeconfig_path": str(sandbox.cfg.kubeconfig), "namespace": namespace, "deployment": "web"}
        with pytest.raises(NoKnownGoodRevision, match=f"deployment 'web' in namespace '{namespace}'"):
            deployment_undo(UndoRequest(**where, last_known_good=True), CONTROLS)
        after = apps.read_namespaced_deployment("web", namespace)  # status moves on; spec and metadata must not
        assert after.metadata.generation == before.metadata.generation
        assert after.metadata.annotations == before.metadata.annotations
    finally:
        sandbox.set_unreachable_registries([])
