"""What a control-plane driver does for a full-cluster restore: stop and start the API servers and etcd, and say
where etcd keeps its data and how its member is named (what `etcdutl snapshot restore` needs).

The restore flow owns the sequence (restore into a new directory, stop the controllers, stop the API servers,
stop etcd, swap the data directories, start etcd, start the API servers, wait for /readyz, start the
controllers); a driver only knows how its kind of cluster runs those services. The controllers
(kube-controller-manager, kube-scheduler, and kubelets where they can be restarted) are stopped too, as the
Kubernetes etcd restore guide asks: their caches hold the cluster as it was after the snapshot, and the garbage
collector acting on that stale view deletes objects the restore just brought back. Each method returns once
the service is stopped or started, or raises ControlPlaneError naming the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from rollbook.types import LocalPath


class ControlPlaneError(RuntimeError):
    """A control-plane step failed; the message names the step and the command's own output."""

    transient = False


class EtcdMember(BaseModel):
    """The etcd member a restore recreates: the same name and peer URLs it runs with."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    data_dir: LocalPath = Field(description="etcd's --data-dir on this host (replaced by the restore).")
    name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$", description="etcd's --name.")
    initial_cluster: str = Field(
        min_length=1, max_length=4096, description="etcd's --initial-cluster, e.g. 'cp-1=https://10.0.0.10:2380'."
    )
    initial_advertise_peer_urls: str = Field(
        min_length=1, max_length=4096, description="etcd's --initial-advertise-peer-urls."
    )

    @property
    def path(self) -> Path:
        return Path(self.data_dir).expanduser()


class ControlPlaneDriver(Protocol):
    kind: str

    def stop_controllers(self) -> None: ...

    def start_controllers(self) -> None: ...

    def stop_api_servers(self) -> None: ...

    def start_api_servers(self) -> None: ...

    def stop_etcd(self) -> None: ...

    def start_etcd(self) -> None: ...
