"""The sandbox's own promises: `up` twice is harmless, `down` frees its ports, tokens carry real RBAC."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig, free_base_port
from sandbox.services import port_open


def test_up_twice_keeps_processes(sandbox: Sandbox) -> None:
    before = {s.name: s.pid for s in sandbox.status()}
    report = sandbox.up(nodes=3)
    assert {s.name: s.pid for s in sandbox.status()} == before
    assert report.seconds < 30
    assert sandbox.is_up()


def test_down_stops_exactly_its_processes_and_frees_ports(tmp_path: Path, sandbox: Sandbox) -> None:
    other = Sandbox(
        SandboxConfig(tmp_path / "other", base_port=free_base_port(sandbox.cfg.base_port + 20)), bins=sandbox.bins
    )
    other.up(nodes=1)
    ports = [p for s in other.status() for p in s.ports]
    assert all(port_open(p) for p in ports)
    stopped = other.down()
    # velero starts last when its toolchain set is built (then two velero servers ran side by side)
    assert stopped[0] == ("velero" if other.runs_velero() else "registry-mirror") and stopped[-1] == "etcd"
    assert not any(port_open(p) for p in ports)
    assert other.down() == []  # nothing left to stop
    assert sandbox.is_up()  # the session's sandbox was not touched


def test_service_account_token_has_only_its_rbac(sandbox: Sandbox, namespace: str) -> None:
    kubeconfig = sandbox.service_account_kubeconfig(namespace, "reader")
    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    with pytest.raises(ApiException) as denied:
        core.list_namespaced_pod(namespace)
    assert denied.value.status == 403

    rbac = client.RbacAuthorizationV1Api(sandbox.api_client())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    assert core.list_namespaced_pod(namespace).items == []
    with pytest.raises(ApiException):
        core.list_namespaced_secret(namespace)
