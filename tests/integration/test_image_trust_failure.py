"""image-trust-failure on the sandbox: real cosign against the sandbox's registries, a real notification
webhook, and deployment-undo's last-known-good fallback."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from blocks import KubernetesCluster
from flows.image_trust_failure import ImageTrustRequest, ImageTrustResult, image_trust_failure
from rollbook.change import ChangeControls, subflow_result
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries, run_tool
from tasks.kube import mark_rollout_complete

CONTROLS = ChangeControls(reason="cosign verification failed", requested_by="pytest")


@pytest.fixture
def security_inbox() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver standing in for the security team's channel, and the notification block for it."""
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"security-{uuid.uuid4().hex[:6]}"
    CustomWebhookNotificationBlock(
        name="security",
        url=f"http://127.0.0.1:{server.server_port}/hook",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
    ).save(name, overwrite=True)
    try:
        yield f"custom-webhook/{name}", received
    finally:
        server.shutdown()


def _run(request: ImageTrustRequest, controls: ChangeControls = CONTROLS) -> ImageTrustResult:
    return subflow_result(image_trust_failure(request, controls))


def _request(sandbox: Sandbox, block: str, namespace: str, **kw: Any) -> ImageTrustRequest:
    return ImageTrustRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig), namespace=namespace, deployment="web", registry_block=block, **kw
    )


def _images(apps: client.AppsV1Api, namespace: str) -> list[str]:
    return [c.image for c in apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers]


def _deploy_good_then(sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, good: str, bad: str) -> None:
    """Revision 1 (signed, seen complete by a rollbook flow, as a deploy through rollbook records it), then the
    image under test as revision 2."""
    sandbox.kubectl("create", "deployment", "web", f"--image={good}", "--replicas=2", "-n", namespace)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)
    [rs] = apps.list_namespaced_replica_set(namespace).items
    cluster = KubernetesCluster(kubeconfig_path=str(sandbox.cfg.kubeconfig))
    mark_rollout_complete.fn(cluster, namespace, rs.metadata.name, rs.metadata.uid)
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={bad}", "-n", namespace)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=90s", "-n", namespace)


def test_an_unsigned_image_is_refused_rolled_back_to_the_signed_revision_and_reported_to_security(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    security_inbox: tuple[str, list[dict[str, Any]]],
) -> None:
    good = registries.image("1.0.0")
    unsigned = registries.push(f"unsigned-{uuid.uuid4().hex[:6]}", f"never signed {namespace}\n")
    _deploy_good_then(sandbox, apps, namespace, good, unsigned)
    block_ref, inbox = security_inbox
    request = _request(sandbox, registry_block, namespace, notify_block=block_ref, wait_timeout_seconds=90)

    planned = _run(request, CONTROLS.model_copy(update={"plan": True}))
    assert (planned.verdict, planned.outcome) == ("trust-failure", "planned")
    assert planned.images[0].primary.kind == "unsigned"
    assert planned.images[0].mirrors[0].kind == "image-not-found"  # the mirror never had it
    assert planned.fallback is not None and planned.fallback["to_revision"] == 1
    assert _images(apps, namespace) == [unsigned] and inbox == []  # plan mode: nothing changed, nobody paged

    result = _run(request)
    assert (result.verdict, result.outcome) == ("trust-failure", "changed")
    assert result.fallback is not None and result.fallback["target_images"] == [good]
    assert _images(apps, namespace) == [good]
    deployment = apps.read_namespaced_deployment("web", namespace)
    assert (deployment.metadata.annotations or {}).get("rollbook.dev/action") == "rollback"
    assert result.notified == block_ref
    [message] = inbox
    assert "trust-failure" in message["subject"] and namespace in message["subject"]
    assert unsigned in message["text"] and "unsigned" in message["text"] and "do NOT deploy" in message["text"]


def test_an_image_signed_with_another_key_is_refused_and_a_rejected_gate_changes_nothing(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    tmp_path: Path,
) -> None:
    run_tool([registries.cosign, "generate-key-pair", "--output-key-prefix", "other"], cwd=tmp_path)
    foreign = registries.push(f"foreign-{uuid.uuid4().hex[:6]}", f"signed elsewhere {namespace}\n")
    digest = registries.digest(foreign)
    signed = f"{foreign.rsplit(':', 1)[0]}@{digest}"
    run_tool([registries.cosign, "sign", "--key", str(tmp_path / "other.key"), "--use-signing-config=false",
              "--tlog-upload=false", "--allow-http-registry", "--yes", signed])  # fmt: skip
    _deploy_good_then(sandbox, apps, namespace, registries.image("1.0.0"), foreign)

    gate = CONTROLS.model_copy(update={"require_approval": True, "approval_timeout_seconds": 10})
    result = _run(_request(sandbox, registry_block, namespace), gate)
    assert result.verdict == "trust-failure"
    assert result.images[0].primary.kind == "signature-invalid-or-other-key"
    assert result.outcome == "not-approved"
    assert _images(apps, namespace) == [foreign]


def test_an_unreachable_registry_is_an_outage_not_a_trust_failure_and_rolls_nothing_back(
    sandbox: Sandbox,
    apps: client.AppsV1Api,
    namespace: str,
    registries: SandboxRegistries,
    registry_block: str,
    security_inbox: tuple[str, list[dict[str, Any]]],
) -> None:
    digest = registries.digest(registries.image("1.1.0"))
    pinned = f"{sandbox.cfg.registry_host()}/rollbook/demo-app@{digest}"
    _deploy_good_then(sandbox, apps, namespace, registries.image("1.0.0"), pinned)
    block_ref, inbox = security_inbox
    sandbox.stop_service("registry")
    try:
        result = _run(_request(sandbox, registry_block, namespace, notify_block=block_ref))
    finally:
        sandbox.start_registry()
    assert (result.verdict, result.outcome) == ("registry-outage", "unchanged")
    [image] = result.images
    assert image.primary.kind == "registry-unreachable"
    assert image.mirrors[0].kind == "verified"  # the mirror's copy of the same digest is ours
    assert result.fallback is None and inbox == []
    assert _images(apps, namespace) == [pinned]
    assert httpx.get(f"http://{sandbox.cfg.registry_host()}/v2/", timeout=5).status_code == 200


def test_a_deployment_without_images_from_the_registry_is_refused_with_nothing_checked(
    sandbox: Sandbox, namespace: str, registry_block: str
) -> None:
    sandbox.kubectl("create", "deployment", "web", "--image=docker.io/library/redis:7", "-n", namespace)
    with pytest.raises(ValueError, match="no image of deployment 'web'.*comes from"):
        _run(_request(sandbox, registry_block, namespace))
