"""registry-outage on the sandbox: the primary registry really stopped and pods really stuck pulling from it
(kwok's pull fault), the mirror serving the same digests with real cosign signatures."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from flows.registry_outage import FallbackIncomplete, RegistryOutageRequest, RegistryOutageResult, registry_outage
from rollbook import registry_fallback as rules
from rollbook.change import ChangeControls, subflow_result
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries, _layer, run_tool
from sandbox.services import wait_until

CONTROLS = ChangeControls(reason="registry outage drill", requested_by="pytest")


@pytest.fixture
def outage(sandbox: Sandbox) -> Iterator[None]:
    """Whatever a test breaks, the primary registry is back for the next one."""
    try:
        yield
    finally:
        heal(sandbox)


def break_primary(sandbox: Sandbox) -> None:
    """The primary registry stopped, and pods pulling from it held in ImagePullBackOff (kwok's pull fault)."""
    sandbox.stop_service("registry")
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])


def heal(sandbox: Sandbox) -> None:
    sandbox.set_unreachable_registries([])
    try:
        up = sandbox.service_spec("registry").ready()
    except httpx.HTTPError:
        up = False
    if not up:
        sandbox.start_registry()


def _request(sandbox: Sandbox, block: str, namespace: str, **kw: Any) -> RegistryOutageRequest:
    return RegistryOutageRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        registry_block=block,
        namespaces=[namespace],
        rollout_timeout_seconds=120,
        **kw,
    )


def _run(request: RegistryOutageRequest, controls: ChangeControls) -> RegistryOutageResult:
    return subflow_result(registry_outage(request, controls))


def _deploy(sandbox: Sandbox, namespace: str, name: str, image: str, *, wait: bool = True) -> None:
    sandbox.kubectl("create", "deployment", name, f"--image={image}", "--replicas=2", "-n", namespace)
    if wait:
        sandbox.kubectl("rollout", "status", f"deployment/{name}", "--timeout=90s", "-n", namespace)


def _images(apps: client.AppsV1Api, namespace: str, name: str) -> list[str]:
    return [c.image for c in apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers]


def _annotations(apps: client.AppsV1Api, namespace: str, name: str) -> dict[str, str]:
    return apps.read_namespaced_deployment(name, namespace).metadata.annotations or {}


def _stuck(core: client.CoreV1Api, namespace: str, count: int) -> None:
    def enough() -> bool:
        pods = core.list_namespaced_pod(namespace).items
        waiting = [
            cs.state.waiting.reason
            for p in pods
            for cs in (p.status.container_statuses or [])
            if cs.state and cs.state.waiting
        ]
        return waiting.count("ImagePullBackOff") >= count

    wait_until(enough, timeout=60, what=f"{count} pods in ImagePullBackOff in {namespace}")


def _all_ready(apps: client.AppsV1Api, namespace: str, name: str) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    status = d.status
    return (
        (status.updated_replicas or 0) == d.spec.replicas
        and (status.ready_replicas or 0) == d.spec.replicas
        and (status.replicas or 0) == d.spec.replicas
        and status.observed_generation == d.metadata.generation
    )


def test_outage_drill_moves_stuck_pods_to_the_mirror_by_digest_and_back_once_the_registry_returns(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    good, new = registries.image("1.0.0"), registries.image("1.1.0")
    _deploy(sandbox, namespace, "web", good)
    digest = registries.digest(new)
    break_primary(sandbox)
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={new}", "-n", namespace)
    _stuck(core, namespace, 1)

    # plan: the exact change, nothing written
    planned = _run(
        _request(sandbox, registry_block, namespace, expected_digests={new: digest}),
        CONTROLS.model_copy(update={"plan": True}),
    )
    mirror_ref = f"{sandbox.cfg.registry_host(mirror=True)}/rollbook/demo-app@{digest}"
    assert planned.outcome == "planned"
    [row] = planned.workloads
    assert (row.action, row.images[0].mirror_ref, row.images[0].digest_source) == (
        "would-switch-to-mirror",
        mirror_ref,
        "operator",
    )
    assert row.stuck_pods >= 1 and row.since
    assert [p["up"] for p in planned.probes] == [False, True]
    assert _images(apps, namespace, "web") == [new]

    # the fallback, with the registry still down: the watch ends at once and leaves the detour in place
    first = _run(
        _request(sandbox, registry_block, namespace, expected_digests={new: digest}, recovery_timeout_seconds=0),
        CONTROLS,
    )
    assert first.outcome == "changed" and first.primary_recovered is False
    assert first.workloads[0].action == "switched-to-mirror"
    assert "run the same request again" in first.summary
    assert _images(apps, namespace, "web") == [mirror_ref]
    assert _all_ready(apps, namespace, "web")
    notes = _annotations(apps, namespace, "web")
    record = json.loads(notes[rules.FALLBACK_ANNOTATION])
    assert record["originals"] == {"demo-app": new} and record["mirrored"] == {"demo-app": mirror_ref}
    assert notes["rollbook.dev/action"] == "registry-fallback" and notes["rollbook.dev/requested-by"] == "pytest"
    assert {"detect", "decide", "fallback"} <= set(first.phases)

    # the same request again, the registry back after a few seconds: it watches, then switches back
    healer = threading.Timer(8, heal, args=(sandbox,))
    healer.start()
    try:
        second = _run(_request(sandbox, registry_block, namespace, recovery_timeout_seconds=180), CONTROLS)
    finally:
        healer.join()
    assert second.outcome == "changed" and second.primary_recovered is True
    assert second.workloads[0].action == "switched-back"
    assert second.phases["primary-wait"] >= 5
    assert _images(apps, namespace, "web") == [new]
    assert _all_ready(apps, namespace, "web")
    notes = _annotations(apps, namespace, "web")
    assert rules.FALLBACK_ANNOTATION not in notes and notes["rollbook.dev/action"] == "registry-switch-back"

    third = _run(_request(sandbox, registry_block, namespace), CONTROLS)
    assert third.outcome == "unchanged" and third.workloads == []


def test_a_mirror_without_the_digest_a_retagged_mirror_an_unsigned_copy_and_an_unknown_digest_are_refused(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    tag = f"drill-{uuid.uuid4().hex[:6]}"
    primary_only = registries.push(f"{tag}-only", f"only on the primary {tag}\n")
    retagged = registries.push(f"{tag}-retag", f"primary content {tag}\n")
    registries._push_layer(registries.image(f"{tag}-retag", mirror=True), _layer(f"other content {tag}\n"))
    unsigned = registries.push(f"{tag}-unsigned", f"copied, never signed {tag}\n")
    run_tool([registries.crane, "copy", unsigned, registries.image(f"{tag}-unsigned", mirror=True)])
    unknown = registries.push(f"{tag}-unknown", f"digest never told {tag}\n")
    images = {"lacking": primary_only, "retagged": retagged, "unsigned": unsigned, "unknown": unknown}
    digests = {image: registries.digest(image) for name, image in images.items() if name != "unknown"}
    break_primary(sandbox)
    for name, image in images.items():
        _deploy(sandbox, namespace, name, image, wait=False)
    _stuck(core, namespace, 8)

    request = _request(sandbox, registry_block, namespace, expected_digests=digests, recovery_timeout_seconds=0)
    planned = _run(request, CONTROLS.model_copy(update={"plan": True}))  # a plan reports its refusals, it does not fail
    assert planned.outcome == "planned" and [w.action for w in planned.workloads] == ["refused"] * 4
    assert all(w.reason for w in planned.workloads)
    with pytest.raises(FallbackIncomplete) as failed:
        _run(request, CONTROLS)
    message = str(failed.value)
    assert "4 workload(s) stuck" in message
    assert f"does not serve rollbook/demo-app@{digests[primary_only]}" in message
    other = registries.digest(registries.image(f"{tag}-retag", mirror=True))
    assert f"its tag {tag}-retag is {other}" in message
    assert "does not verify with the registry's cosign key" in message
    assert f"the digest of {unknown} is unknown" in message and "expected_digests" in message
    for name, image in images.items():  # refused means untouched
        assert _images(apps, namespace, name) == [image]
        assert rules.FALLBACK_ANNOTATION not in _annotations(apps, namespace, name)


def test_bad_input_and_a_rejected_gate_change_nothing(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    break_primary(sandbox)
    with pytest.raises(ValueError, match="no 'Rollbook Container Registry' block named 'no-such-registry'"):
        _run(_request(sandbox, "no-such-registry", namespace), CONTROLS)
    elsewhere = _run(_request(sandbox, registry_block, namespace), CONTROLS)
    assert elsewhere.outcome == "unchanged" and "runs an image from" in elsewhere.summary
    with pytest.raises(ValueError, match="not-a-namespace-here"):
        _run(
            _request(sandbox, registry_block, namespace).model_copy(update={"namespaces": ["not-a-namespace-here"]}),
            CONTROLS,
        )

    new = registries.image("1.1.0")
    digest = json.loads((sandbox.cfg.work_dir / "demo-images.json").read_text())["1.1.0"]
    _deploy(sandbox, namespace, "web", new, wait=False)
    _stuck(core, namespace, 2)
    gate = CONTROLS.model_copy(update={"require_approval": True, "approval_timeout_seconds": 10})
    refused = _run(_request(sandbox, registry_block, namespace, expected_digests={new: digest}), gate)
    assert refused.outcome == "not-approved"
    assert _images(apps, namespace, "web") == [new]
    assert rules.FALLBACK_ANNOTATION not in _annotations(apps, namespace, "web")


def test_pods_still_stuck_on_the_mirror_get_one_restart_and_the_run_fails_naming_them(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    new = registries.image("1.1.0")
    digest = json.loads((sandbox.cfg.work_dir / "demo-images.json").read_text())["1.1.0"]
    break_primary(sandbox)
    # the nodes cannot pull from the mirror either (the flow, on the worker, still can: it checks and moves)
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host(), sandbox.cfg.registry_host(mirror=True)])
    _deploy(sandbox, namespace, "web", new, wait=False)
    _stuck(core, namespace, 2)
    request = _request(sandbox, registry_block, namespace, expected_digests={new: digest}, recovery_timeout_seconds=0)
    with pytest.raises(FallbackIncomplete, match="did not roll out, even after unsticking it"):
        _run(request.model_copy(update={"rollout_timeout_seconds": 10}), CONTROLS)
    deployment = apps.read_namespaced_deployment("web", namespace)
    assert deployment.spec.template.spec.containers[0].image.endswith(f"@{digest}")
    assert "kubectl.kubernetes.io/restartedAt" in (deployment.spec.template.metadata.annotations or {})
    assert rules.FALLBACK_ANNOTATION in (deployment.metadata.annotations or {})  # the detour stays recorded


def _controller(kind: str, name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "demo-app", "image": image}]}}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": pod}
    if kind == "StatefulSet":
        spec |= {"replicas": 2, "serviceName": name}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _template_image(apps: client.AppsV1Api, kind: str, namespace: str, name: str) -> str:
    read = apps.read_namespaced_stateful_set if kind == "StatefulSet" else apps.read_namespaced_daemon_set
    return str(read(name, namespace).spec.template.spec.containers[0].image)


def _controller_done(apps: client.AppsV1Api, kind: str, namespace: str, name: str) -> bool:
    from rollbook.controller_rollouts import rollout_state

    read = apps.read_namespaced_stateful_set if kind == "StatefulSet" else apps.read_namespaced_daemon_set
    return rollout_state(kind, apps.api_client.sanitize_for_serialization(read(name, namespace))).done


def test_statefulsets_and_daemonsets_move_to_the_mirror_and_back_their_stuck_pods_replaced(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    good, new = registries.image("1.0.0"), registries.image("1.1.0")
    digest = registries.digest(new)
    apps.create_namespaced_stateful_set(namespace, _controller("StatefulSet", "db", good))
    apps.create_namespaced_daemon_set(namespace, _controller("DaemonSet", "agent", good))
    for kind, name in (("StatefulSet", "db"), ("DaemonSet", "agent")):
        wait_until(
            lambda k=kind, n=name: _controller_done(apps, k, namespace, n), timeout=90, what=f"{kind} {name} ready"
        )
    break_primary(sandbox)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "demo-app", "image": new}]}}}}
    apps.patch_namespaced_stateful_set("db", namespace, patch)
    apps.patch_namespaced_daemon_set("agent", namespace, patch)
    _stuck(core, namespace, 2)  # the StatefulSet's highest ordinal and at least one DaemonSet pod

    first = _run(
        _request(sandbox, registry_block, namespace, expected_digests={new: digest}, recovery_timeout_seconds=0),
        CONTROLS,
    )
    mirror_ref = f"{sandbox.cfg.registry_host(mirror=True)}/rollbook/demo-app@{digest}"
    assert {(w.kind, w.name, w.action) for w in first.workloads} == {
        ("StatefulSet", "db", "switched-to-mirror"),
        ("DaemonSet", "agent", "switched-to-mirror"),
    }
    for kind, name in (("StatefulSet", "db"), ("DaemonSet", "agent")):
        assert _template_image(apps, kind, namespace, name) == mirror_ref
        assert _controller_done(apps, kind, namespace, name)  # a stuck StatefulSet pod is never replaced unaided
    pods = core.list_namespaced_pod(namespace).items
    assert {c.image for p in pods if not p.metadata.deletion_timestamp for c in p.spec.containers} == {mirror_ref}

    heal(sandbox)
    back = _run(_request(sandbox, registry_block, namespace, recovery_timeout_seconds=60), CONTROLS)
    assert back.primary_recovered is True
    assert {(w.kind, w.action) for w in back.workloads} == {
        ("StatefulSet", "switched-back"),
        ("DaemonSet", "switched-back"),
    }
    for kind, name in (("StatefulSet", "db"), ("DaemonSet", "agent")):
        assert _template_image(apps, kind, namespace, name) == new
        assert _controller_done(apps, kind, namespace, name)


def test_a_switch_back_the_nodes_cannot_pull_puts_the_mirror_back(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    outage: None,
) -> None:
    new = registries.image("1.1.0")
    digest = registries.digest(new)
    break_primary(sandbox)
    for name in ("web", "api"):
        _deploy(sandbox, namespace, name, new, wait=False)
    _stuck(core, namespace, 4)
    first = _run(
        _request(sandbox, registry_block, namespace, expected_digests={new: digest}, recovery_timeout_seconds=0),
        CONTROLS,
    )
    assert [w.action for w in first.workloads] == ["switched-to-mirror"] * 2
    mirror_ref = f"{sandbox.cfg.registry_host(mirror=True)}/rollbook/demo-app@{digest}"

    # the registry answers the worker again, but the nodes still cannot reach it (kwok's pull fault stays)
    sandbox.start_registry()
    second = _run(_request(sandbox, registry_block, namespace, recovery_timeout_seconds=30), CONTROLS)
    assert second.primary_recovered is True and second.outcome == "changed"
    failed, rest = second.workloads
    assert failed.action == "switch-back-failed" and "the nodes cannot pull from it" in failed.reason
    assert rest.action == "already-on-mirror" and "not switched back" in rest.reason
    assert "stay on the mirror" in second.summary
    for name in ("web", "api"):
        assert _images(apps, namespace, name) == [mirror_ref]
        wait_until(lambda n=name: _all_ready(apps, namespace, n), timeout=60, what=f"{name} ready on the mirror")
        record = json.loads(_annotations(apps, namespace, name)[rules.FALLBACK_ANNOTATION])
        assert record["originals"] == {"demo-app": new}  # the detour is recorded again: a later run finishes it
    assert _annotations(apps, namespace, failed.name)["rollbook.dev/action"] == "registry-fallback"


def test_the_checklist_reads_and_verifies_images_where_the_nodes_would_pull_them_from(
    sandbox: Sandbox, registries: SandboxRegistries, registry_block: str, outage: None
) -> None:
    from rollbook.checklist import Status
    from tasks.checks.image_details import check_image_details
    from tasks.checks.image_signature import check_image_signature

    new = registries.image("1.1.0")
    mirror = sandbox.cfg.registry_host(mirror=True)
    digest = registries.digest(new)
    pinned = f"{mirror}/rollbook/demo-app@{digest}"
    break_primary(sandbox)  # the block's mirror comes first in its pull order anyway; now it is the only one up
    signed = check_image_signature.fn([new], None, registry_block)
    assert signed.status == Status.PASS and signed.evidence["served_by"] == {new: pinned}
    described = check_image_details.fn([new], [], registry_block)
    assert described.evidence["images"][new]["served_by"] == mirror
    assert described.evidence["images"][new]["digest"] == digest
    assert described.evidence["unreadable"] == {}
    without_block = check_image_signature.fn([new], str(registries.public_key), None)  # no pull order: the primary
    assert without_block.status == Status.FAIL
    assert without_block.evidence["failure_kinds"] == {new: "registry-unreachable"}


def test_last_known_good_proves_signatures_on_the_mirror_while_the_registry_is_down(
    sandbox: Sandbox, registries: SandboxRegistries, registry_block: str, namespace: str, outage: None
) -> None:
    from flows.last_known_good import LastKnownGoodRequest, NoKnownGoodRevision, last_known_good

    new = registries.image("1.1.0")
    digest = registries.digest(new)
    _deploy(sandbox, namespace, "web", registries.image("1.0.0"))
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={new}", "-n", namespace)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)
    sandbox.stop_service("registry")  # the worker cannot reach the primary; the pods keep running
    where: dict[str, Any] = {"kubeconfig_path": str(sandbox.cfg.kubeconfig), "namespace": namespace}
    found = last_known_good(
        LastKnownGoodRequest(**where, deployment="web", verify_images=True, registry_block=registry_block)
    )
    assert found["revision"] == 2 and found["images"] == [new]
    mirror_copy = f"{sandbox.cfg.registry_host(mirror=True)}/rollbook/demo-app@{digest}"
    assert found["candidates"][0]["signatures"] == f"verified (on {mirror_copy})"
    with pytest.raises(NoKnownGoodRevision, match="with verified images"):  # a key file alone: the primary only
        last_known_good(
            LastKnownGoodRequest(
                **where, deployment="web", verify_images=True, cosign_public_key=str(registries.public_key)
            )
        )
