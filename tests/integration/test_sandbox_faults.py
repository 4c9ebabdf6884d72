"""Switchable faults: unreachable registries, crash loops and NotReady nodes, as a kubelet would report them."""

from __future__ import annotations

from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.faults import FAULT_LABEL
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until


def _container_waiting_reason(core: client.CoreV1Api, namespace: str, selector: str) -> set[str]:
    reasons = set()
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        for status in pod.status.container_statuses or []:
            if status.state.waiting:
                reasons.add(status.state.waiting.reason)
    return reasons


def _ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> int:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return sum(1 for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []))


def test_unreachable_registry_then_mirror(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    ns = ["-n", namespace]
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    try:
        sandbox.kubectl("create", "deployment", "web", f"--image={registries.image('1.0.0')}", "--replicas=2", *ns)
        wait_until(
            lambda: _container_waiting_reason(core, namespace, "app=web") == {"ImagePullBackOff"},
            60,
            "pods to report ImagePullBackOff",
        )
        assert _ready_pods(core, namespace, "app=web") == 0

        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={registries.image('1.0.0', mirror=True)}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=60s", *ns)
        wait_until(lambda: _ready_pods(core, namespace, "app=web") == 2, 60, "2 Ready pods from the mirror")
    finally:
        sandbox.set_unreachable_registries([])


def test_pending_pods_recover_when_registry_returns(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    registries = SandboxRegistries(sandbox.cfg, sandbox.bins)
    sandbox.set_unreachable_registries([sandbox.cfg.registry_host()])
    try:
        sandbox.kubectl("run", "one", f"--image={registries.image('1.1.0')}", "-n", namespace)
        wait_until(
            lambda: _container_waiting_reason(core, namespace, "run=one") == {"ImagePullBackOff"},
            60,
            "ImagePullBackOff",
        )
    finally:
        sandbox.set_unreachable_registries([])
    sandbox.kubectl("wait", "--for=condition=Ready", "pod/one", "--timeout=60s", "-n", namespace)


def test_crashloop_restart_count_climbs(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    image = SandboxRegistries(sandbox.cfg, sandbox.bins).image("1.0.0")
    sandbox.kubectl(
        "run", "crashy", f"--image={image}", f"--labels=run=crashy,{FAULT_LABEL}=CrashLoopBackOff", "-n", namespace
    )

    def restarts() -> int:
        statuses = core.read_namespaced_pod("crashy", namespace).status.container_statuses or []
        return statuses[0].restart_count if statuses else -1

    wait_until(lambda: restarts() >= 2, 60, "restartCount to reach 2")
    assert _container_waiting_reason(core, namespace, "run=crashy") == {"CrashLoopBackOff"}


def test_crashloop_by_image(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    image = SandboxRegistries(sandbox.cfg, sandbox.bins).image("1.1.0", mirror=True)
    sandbox.set_crashing_images([image])
    try:
        sandbox.kubectl("run", "bad", f"--image={image}", "-n", namespace)
        wait_until(
            lambda: _container_waiting_reason(core, namespace, "run=bad") == {"CrashLoopBackOff"},
            60,
            "CrashLoopBackOff",
        )
    finally:
        sandbox.set_crashing_images([])


def test_node_not_ready_and_back(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    node = "kwok-node-2"
    image = SandboxRegistries(sandbox.cfg, sandbox.bins).image("1.0.0")
    pinned = f'{{"spec": {{"nodeName": "{node}"}}}}'
    sandbox.kubectl("run", "pinned", f"--image={image}", f"--overrides={pinned}", "-n", namespace)
    sandbox.kubectl("wait", "--for=condition=Ready", "pod/pinned", "--timeout=60s", "-n", namespace)

    def node_ready() -> str:
        conditions = core.read_node(node).status.conditions or []
        return next(c.status for c in conditions if c.type == "Ready")

    sandbox.set_node_not_ready(node)
    try:
        wait_until(lambda: node_ready() == "False", 60, f"{node} to be NotReady")
        wait_until(lambda: _ready_pods(core, namespace, "run=pinned") == 0, 60, "its pod to be marked not ready")
    finally:
        sandbox.set_node_not_ready(node, not_ready=False)
    assert node_ready() == "True"
    wait_until(lambda: _ready_pods(core, namespace, "run=pinned") == 1, 60, "its pod to be Ready again")
