"""kubectl's rollout commands behave on the sandbox as on a real cluster."""

from __future__ import annotations

from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.registry import SandboxRegistries
from sandbox.services import wait_until


def _image(sandbox: Sandbox, version: str) -> str:
    return SandboxRegistries(sandbox.cfg, sandbox.bins).image(version)


def _deployment_image(apps: client.AppsV1Api, namespace: str) -> str:
    return apps.read_namespaced_deployment("web", namespace).spec.template.spec.containers[0].image


def test_rollout_history_and_undo(
    sandbox: Sandbox, apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    ns = ["-n", namespace]
    sandbox.kubectl("create", "deployment", "web", f"--image={_image(sandbox, '1.0.0')}", "--replicas=3", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=60s", *ns)
    for version in ("1.1.0", "1.2.0"):
        sandbox.kubectl("set", "image", "deployment/web", f"demo-app={_image(sandbox, version)}", *ns)
        sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=60s", *ns)

    history = sandbox.kubectl("rollout", "history", "deployment/web", *ns).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2", "3"]
    replicasets = apps.list_namespaced_replica_set(namespace).items
    revisions = sorted(rs.metadata.annotations["deployment.kubernetes.io/revision"] for rs in replicasets)
    assert revisions == ["1", "2", "3"]

    sandbox.kubectl("rollout", "undo", "deployment/web", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=60s", *ns)
    assert _deployment_image(apps, namespace) == _image(sandbox, "1.1.0")

    sandbox.kubectl("rollout", "undo", "deployment/web", "--to-revision=1", *ns)
    sandbox.kubectl("rollout", "status", "deployment/web", "--timeout=60s", *ns)
    assert _deployment_image(apps, namespace) == _image(sandbox, "1.0.0")

    def all_pods_ready_on_first_image() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        return len(pods) == 3 and all(
            p.spec.containers[0].image == _image(sandbox, "1.0.0")
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in pods
        )

    wait_until(all_pods_ready_on_first_image, 60, "3 Ready pods on 1.0.0")


def test_job_pods_complete(sandbox: Sandbox, namespace: str) -> None:
    ns = ["-n", namespace]
    sandbox.kubectl("create", "job", "migrate", f"--image={_image(sandbox, '1.0.0')}", *ns)
    sandbox.kubectl("wait", "--for=condition=complete", "job/migrate", "--timeout=60s", *ns)


def test_deleted_pods_go_away(sandbox: Sandbox, core: client.CoreV1Api, namespace: str) -> None:
    ns = ["-n", namespace]
    sandbox.kubectl("run", "one", f"--image={_image(sandbox, '1.0.0')}", *ns)
    sandbox.kubectl("wait", "--for=condition=Ready", "pod/one", "--timeout=60s", *ns)
    sandbox.kubectl("delete", "pod", "one", "--wait=true", "--timeout=60s", *ns)
    assert core.list_namespaced_pod(namespace).items == []
