"""kubeadm's static pods, on one control-plane node. UNTESTED: no kubelet runs in the sandbox, so this driver has
never run against a real kubeadm node; it encodes the documented procedure and is kept for review.

kubeadm runs etcd and the API server as static pods: the kubelet starts whatever manifest is in
`/etc/kubernetes/manifests` and stops a pod whose manifest goes away. So, on the node (the flow must run there,
as root, with etcdutl, and `etcd_member.data_dir` is the hostPath in etcd.yaml, /var/lib/etcd by default):
- stop the controllers: move `kube-controller-manager.yaml` and `kube-scheduler.yaml` away (restart the
  kubelets of every node after the restore by hand: `systemctl restart kubelet`, as the Kubernetes guide says);
- stop the API server: move `kube-apiserver.yaml` to a holding directory, wait until nothing listens on its port;
- stop etcd: move `etcd.yaml` the same way, wait until its client port is closed;
- (the flow swaps the data directories: the restored one takes /var/lib/etcd's place);
- start etcd, then the API server: move the manifests back; the kubelet starts them (the flow waits for /readyz).
Several control-plane nodes: restore the same snapshot on every member with its own --name and peer URL, each
run with this driver on its node, before any API server starts; that coordination is not automated here.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from tasks.controlplane.base import ControlPlaneError

POLL_SECONDS = 1.0


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class KubeadmDriver:
    kind = "kubeadm"

    def __init__(
        self, *, manifests_dir: Path, holding_dir: Path, api_server_port: int, etcd_port: int, timeout_seconds: int
    ) -> None:
        self._manifests, self._holding = manifests_dir, holding_dir
        self._ports = {
            "kube-apiserver": api_server_port,
            "etcd": etcd_port,
            "kube-controller-manager": 10257,
            "kube-scheduler": 10259,
        }
        self._timeout = timeout_seconds

    def _wait(self, component: str, *, listening: bool) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if _port_open(self._ports[component]) == listening:
                return
            time.sleep(POLL_SECONDS)
        state = "start" if listening else "stop"
        raise ControlPlaneError(f"the kubelet did not {state} {component} within {self._timeout}s")

    def _move(self, component: str, *, into_manifests: bool) -> None:
        source, target = self._holding, self._manifests
        if not into_manifests:
            source, target = target, source
        target.mkdir(parents=True, exist_ok=True)
        manifest = source / f"{component}.yaml"
        if not manifest.exists():
            raise ControlPlaneError(f"{manifest} not found: is this a kubeadm control-plane node?")
        shutil.move(str(manifest), target / manifest.name)

    def stop_controllers(self) -> None:
        for component in ("kube-controller-manager", "kube-scheduler"):
            self._move(component, into_manifests=False)
            self._wait(component, listening=False)

    def start_controllers(self) -> None:
        for component in ("kube-controller-manager", "kube-scheduler"):
            self._move(component, into_manifests=True)
            self._wait(component, listening=True)

    def stop_api_servers(self) -> None:
        self._move("kube-apiserver", into_manifests=False)
        self._wait("kube-apiserver", listening=False)

    def start_api_servers(self) -> None:
        self._move("kube-apiserver", into_manifests=True)
        self._wait("kube-apiserver", listening=True)

    def stop_etcd(self) -> None:
        self._move("etcd", into_manifests=False)
        self._wait("etcd", listening=False)

    def start_etcd(self) -> None:
        self._move("etcd", into_manifests=True)
        self._wait("etcd", listening=True)
