"""kubeadm's static pods, on one control-plane node. Tested against a simulated kubelet (a thread that opens a
port while a manifest is in the directory, tests/unit/test_kubeadm_driver.py); never run on a real kubeadm node,
so the kubelet's own timing, the components' bind addresses and the paths below are the documented ones, unproven.

kubeadm runs etcd and the API server as static pods: the kubelet starts whatever manifest is in
`/etc/kubernetes/manifests` and stops a pod whose manifest goes away. So, on the node (the flow must run there,
as root, with etcdutl, and `etcd_member.data_dir` is the hostPath in etcd.yaml, /var/lib/etcd by default):
- stop the controllers: move `kube-controller-manager.yaml` and `kube-scheduler.yaml` away (restart the
  kubelets of every node after the restore by hand: `systemctl restart kubelet`, as the Kubernetes guide says);
- stop the API server: move `kube-apiserver.yaml` to a holding directory, wait until nothing listens on its port;
- stop etcd: move `etcd.yaml` the same way, wait until its client port is closed;
- (the flow swaps the data directories: the restored one takes /var/lib/etcd's place);
- start etcd, then the API server: move the manifests back; the kubelet starts them (the flow waits for /readyz).
Every step is safe to run again: a manifest already where the step would put it (a previous run moved it, then
died or timed out waiting) is left there and only the port is waited for.
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
CONTROLLERS = ("kube-controller-manager", "kube-scheduler")


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class KubeadmDriver:
    kind = "kubeadm"

    def __init__(
        self,
        *,
        manifests_dir: Path,
        holding_dir: Path,
        api_server_port: int,
        etcd_port: int,
        timeout_seconds: int,
        controller_manager_port: int = 10257,
        scheduler_port: int = 10259,
    ) -> None:
        self._manifests, self._holding = manifests_dir, holding_dir
        self._ports = {
            "kube-apiserver": api_server_port,
            "etcd": etcd_port,
            "kube-controller-manager": controller_manager_port,
            "kube-scheduler": scheduler_port,
        }
        self._timeout = timeout_seconds

    def _wait(self, component: str, *, listening: bool) -> None:
        deadline = time.monotonic() + self._timeout
        while _port_open(self._ports[component]) != listening:
            if time.monotonic() >= deadline:
                state = "start" if listening else "stop"
                raise ControlPlaneError(f"the kubelet did not {state} {component} within {self._timeout}s")
            time.sleep(POLL_SECONDS)

    def _move(self, component: str, *, into_manifests: bool) -> None:
        """Move the manifest to the other directory; one already there (moved by an earlier run) is left alone.

        Found in both directories is refused: the driver cannot tell which copy is the node's real manifest.
        """
        source, target = (self._holding, self._manifests) if into_manifests else (self._manifests, self._holding)
        manifest, moved = source / f"{component}.yaml", target / f"{component}.yaml"
        if manifest.exists() and moved.exists():
            raise ControlPlaneError(f"both {manifest} and {moved} exist: keep the right one, remove the other")
        if moved.exists():
            return
        if not manifest.exists():
            raise ControlPlaneError(f"{manifest} not found (nor {moved}): is this a kubeadm control-plane node?")
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(manifest, moved)

    def _stop(self, component: str) -> None:
        self._move(component, into_manifests=False)
        self._wait(component, listening=False)

    def _start(self, component: str) -> None:
        self._move(component, into_manifests=True)
        self._wait(component, listening=True)

    def stop_controllers(self) -> None:
        """Stop kube-controller-manager and kube-scheduler; already stopped (manifest held) is fine."""
        for component in CONTROLLERS:
            self._stop(component)

    def start_controllers(self) -> None:
        """Start them again; a manifest already back in the manifests directory is only waited for."""
        for component in CONTROLLERS:
            self._start(component)

    def stop_api_servers(self) -> None:
        """Stop this node's API server; already stopped (manifest held) is fine."""
        self._stop("kube-apiserver")

    def start_api_servers(self) -> None:
        """Start it again; a manifest already back in the manifests directory is only waited for."""
        self._start("kube-apiserver")

    def stop_etcd(self) -> None:
        """Stop this node's etcd; already stopped (manifest held) is fine."""
        self._stop("etcd")

    def start_etcd(self) -> None:
        """Start it again; a manifest already back (the flow's retry after a failed start) is only waited for."""
        self._start("etcd")
