"""image-prepull on the sandbox: a real DaemonSet on the 3 kwok nodes (kwok makes its pods Ready), its images
those of labelled Deployments, kept in step with them run after run."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.image_prepull import NoImages, PrepullRequest, PrepullResult, PrepullSource, image_prepull
from rollbook import prepull as rules
from rollbook.change import ChangeControls, subflow_result
from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries

CONTROLS = ChangeControls(reason="keep the shop's images on every node", requested_by="pytest")
LABEL = "rollbook.dev/test-prepull"
NODES = 3  # the sandbox's kwok nodes (tests/integration/conftest.py: sb.up(nodes=3))


@pytest.fixture
def registries(sandbox: Sandbox) -> SandboxRegistries:
    return SandboxRegistries(sandbox.cfg, sandbox.bins)


def _deployment(
    apps: client.AppsV1Api, namespace: str, name: str, image: str, init: str | None = None, *, selected: bool = True
) -> None:
    labels = {"app": name, LABEL: "yes" if selected else "no"}
    spec: dict[str, Any] = {"containers": [{"name": "demo-app", "image": image}]}
    if init:
        spec["initContainers"] = [{"name": "setup", "image": init}]
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        },
    )


def _request(sandbox: Sandbox, registries: SandboxRegistries, namespace: str, **kw: Any) -> PrepullRequest:
    return PrepullRequest(
        kubeconfig_path=str(sandbox.cfg.kubeconfig),
        namespace=namespace,
        sources=kw.pop("sources", [PrepullSource(namespace=namespace, selector={LABEL: "yes"})]),
        # kwok runs no container, so any image the sandbox registry serves stands in for busybox here
        sleep_image=registries.image("1.2.0"),
        rollout_timeout_seconds=120,
        **kw,
    )


def _run(request: PrepullRequest, controls: ChangeControls) -> PrepullResult:
    return subflow_result(image_prepull(request, controls))


def _daemonset(apps: client.AppsV1Api, namespace: str) -> client.V1DaemonSet | None:
    try:
        return apps.read_namespaced_daemon_set(rules.DEFAULT_NAME, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _warm_images(apps: client.AppsV1Api, namespace: str) -> list[str]:
    daemonset = _daemonset(apps, namespace)
    assert daemonset is not None
    return [c.image for c in daemonset.spec.template.spec.containers]


def test_the_daemonset_keeps_the_sources_images_on_every_node_and_follows_them(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, registries: SandboxRegistries
) -> None:
    old, new, other = registries.image("1.0.0"), registries.image("1.1.0"), registries.scan_image("1.0.0")
    _deployment(apps, namespace, "web", old, init=other)
    _deployment(apps, namespace, "worker", old)
    _deployment(apps, namespace, "not-selected", registries.scan_image("2.0.0"), selected=False)
    request = _request(sandbox, registries, namespace)

    # plan: the exact images, nothing written
    planned = _run(request, CONTROLS.model_copy(update={"plan": True}))
    assert planned.outcome == "planned" and planned.created
    assert planned.added == sorted([old, other]) and planned.removed == []
    assert {d for s in planned.sources for d in s.deployments} == {"web", "worker"}
    assert _daemonset(apps, namespace) is None

    # first run: one container per image (init containers' too, each image once), Ready on every node
    first = _run(request, CONTROLS)
    assert first.outcome == "changed" and first.created
    assert first.images == sorted([old, other]) and first.added == first.images
    assert (first.nodes_desired, first.nodes_ready) == (NODES, NODES)
    daemonset = _daemonset(apps, namespace)
    assert daemonset is not None
    assert _warm_images(apps, namespace) == sorted([old, other])
    pod = daemonset.spec.template.spec
    assert [t.operator for t in pod.tolerations] == ["Exists"]
    assert [c.image for c in pod.init_containers] == [registries.image("1.2.0")]
    notes = daemonset.metadata.annotations
    assert notes["rollbook.dev/action"] == "image-prepull" and notes["rollbook.dev/requested-by"] == "pytest"
    assert daemonset.metadata.labels[rules.MANAGED_BY_LABEL] == rules.MANAGED_BY
    pods = core.list_namespaced_pod(namespace, label_selector=f"{rules.ROLE_LABEL}={rules.ROLE}").items
    assert len({p.spec.node_name for p in pods}) == NODES

    # the same request again: nothing new, nothing written
    version = daemonset.metadata.resource_version
    second = _run(request, CONTROLS)
    assert second.outcome == "unchanged" and second.added == second.removed == []
    assert second.nodes_ready == NODES
    again = _daemonset(apps, namespace)
    assert again is not None and again.metadata.resource_version == version

    # a source's image changes: the new image is added, the old one (no longer used by any source) dropped
    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={new}", "-n", namespace)
    sandbox.kubectl("set", "image", "deployment/worker", f"demo-app={new}", "-n", namespace)
    third = _run(request, CONTROLS)
    assert third.outcome == "changed" and not third.created
    assert (third.added, third.removed) == ([new], [old])
    assert _warm_images(apps, namespace) == sorted([new, other])
    assert third.nodes_ready == NODES


def test_an_unanswered_approval_changes_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, registries: SandboxRegistries
) -> None:
    _deployment(apps, namespace, "web", registries.image("1.0.0"))
    request = _request(sandbox, registries, namespace)
    assert _run(request, CONTROLS).outcome == "changed"
    before = _daemonset(apps, namespace)
    assert before is not None

    sandbox.kubectl("set", "image", "deployment/web", f"demo-app={registries.image('1.1.0')}", "-n", namespace)
    gate = CONTROLS.model_copy(update={"require_approval": True, "approval_timeout_seconds": 10})
    refused = _run(request, gate)
    assert refused.outcome == "not-approved"
    assert refused.added == [registries.image("1.1.0")] and refused.removed == [registries.image("1.0.0")]
    after = _daemonset(apps, namespace)
    assert after is not None and after.metadata.resource_version == before.metadata.resource_version
    assert _warm_images(apps, namespace) == [registries.image("1.0.0")]


def test_a_source_that_matches_nothing_is_refused_and_creates_nothing(
    sandbox: Sandbox, apps: client.AppsV1Api, namespace: str, registries: SandboxRegistries
) -> None:
    request = _request(
        sandbox, registries, namespace, sources=[PrepullSource(namespace=namespace, selector={"app": "nothing"})]
    )
    with pytest.raises(NoImages, match="no Deployment matched"):
        _run(request, CONTROLS)
    assert _daemonset(apps, namespace) is None
