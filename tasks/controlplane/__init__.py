"""Control-plane drivers for the full-cluster restore, in the plug-in shape: the `ControlPlaneDriver` Protocol
(base.py), the `ControlPlaneKind` Literal, the registry, one module per implementation (commands.py, the one
proven on the sandbox; kubeadm.py, tested against a simulated kubelet only, never on a real kubeadm node), and
`ControlPlane`, the request's part that chooses and configures one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rollbook.plugins import lookup, registry
from rollbook.types import LocalPath
from tasks.controlplane.base import ControlPlaneDriver, ControlPlaneError, EtcdMember
from tasks.controlplane.commands import CommandsDriver
from tasks.controlplane.kubeadm import KubeadmDriver

ControlPlaneKind = Literal["commands", "kubeadm"]
Argv = list[str]


class ControlPlane(BaseModel):
    """How this cluster's control plane is stopped and started, and the etcd member the restore recreates."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: ControlPlaneKind = Field(
        default="commands", description="commands (argv lists) or kubeadm (never run on a real node)."
    )
    etcd_member: EtcdMember
    stop_controllers: list[Argv] = Field(
        default=[], description="commands: argv lists that stop kube-controller-manager, kube-scheduler (and kubelets)."
    )
    start_controllers: list[Argv] = Field(default=[], description="commands: argv lists that start them again.")
    stop_api_servers: list[Argv] = Field(default=[], description="commands: argv lists that stop every API server.")
    start_api_servers: list[Argv] = Field(default=[], description="commands: argv lists that start them (ready).")
    stop_etcd: list[Argv] = Field(default=[], description="commands: argv lists that stop etcd.")
    start_etcd: list[Argv] = Field(default=[], description="commands: argv lists that start etcd (ready).")
    env: dict[str, str] = Field(default={}, description="commands: extra environment for the commands.")
    manifests_dir: LocalPath = Field(default="/etc/kubernetes/manifests", description="kubeadm: static pod dir.")
    api_server_port: int = Field(default=6443, ge=1, le=65535, description="kubeadm: the API server's port.")
    etcd_port: int = Field(default=2379, ge=1, le=65535, description="kubeadm: etcd's client port.")
    timeout_seconds: int = Field(default=300, ge=5, le=3600, description="Bound of each stop/start step.")

    @field_validator(
        "stop_controllers", "start_controllers", "stop_api_servers", "start_api_servers", "stop_etcd", "start_etcd"
    )
    @classmethod
    def _argv_lists(cls, steps: list[Argv]) -> list[Argv]:
        if any(not argv or not all(arg for arg in argv) for argv in steps):
            raise ValueError(
                "every command is a non-empty argv list of non-empty strings, e.g. ['systemctl', 'stop', 'etcd']"
            )
        return steps

    @model_validator(mode="after")
    def _commands_given(self) -> Self:
        names = ("stop_controllers", "start_controllers", "stop_api_servers", "start_api_servers", "stop_etcd",
                 "start_etcd")  # fmt: skip
        missing = [name for name in names if not getattr(self, name)]
        if self.kind == "commands" and missing:
            raise ValueError(f"kind 'commands' needs commands for {', '.join(missing)}")
        return self


def _commands(cfg: ControlPlane) -> ControlPlaneDriver:
    return CommandsDriver(
        stop_controllers=cfg.stop_controllers,
        start_controllers=cfg.start_controllers,
        stop_api_servers=cfg.stop_api_servers,
        start_api_servers=cfg.start_api_servers,
        stop_etcd=cfg.stop_etcd,
        start_etcd=cfg.start_etcd,
        env=cfg.env,
        timeout_seconds=cfg.timeout_seconds,
    )


def _kubeadm(cfg: ControlPlane) -> ControlPlaneDriver:
    manifests = Path(cfg.manifests_dir)
    return KubeadmDriver(
        manifests_dir=manifests,
        holding_dir=manifests.parent / "manifests-stopped-by-rollbook",
        api_server_port=cfg.api_server_port,
        etcd_port=cfg.etcd_port,
        timeout_seconds=cfg.timeout_seconds,
    )


DRIVERS: dict[str, Callable[[ControlPlane], ControlPlaneDriver]] = registry(
    ControlPlaneKind, {"commands": _commands, "kubeadm": _kubeadm}
)


def make_driver(cfg: ControlPlane) -> ControlPlaneDriver:
    return lookup(DRIVERS, cfg.kind, concern="control-plane driver")(cfg)


__all__ = ["DRIVERS", "ControlPlane", "ControlPlaneDriver", "ControlPlaneError", "ControlPlaneKind", "make_driver"]
