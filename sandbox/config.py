"""Where a sandbox lives and which loopback ports it uses.

Every port is an offset from one base port, so a second sandbox (the test suite's) can run beside the
user's demo sandbox by choosing another base port and work directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandbox.services import port_open

PORT_OFFSETS = {
    "etcd": 0,
    "etcd-peer": 1,
    "kube-apiserver": 2,
    "kube-controller-manager": 3,
    "kube-scheduler": 4,
    "kwok": 5,
    "registry": 6,
    "registry-mirror": 7,
    "prometheus": 8,
    "traffic-simulator": 9,
    "alertmanager": 10,
    "alert-webhook": 11,  # `rollbook webhook`, the Alertmanager receiver (started by whoever needs it, not by up)
    "s3": 12,
    "postgres": 13,
    "velero-metrics": 14,  # velero server's --metrics-address (its default :8085 would be on every interface)
    "velero-profiler": 15,  # velero server's --profiler-address
}
# Sandboxes sit PORT_BLOCK ports apart (free_base_port), so one's offsets must stay below it: a test session's
# sandbox and the demo sandbox never share a port.
PORT_BLOCK = 20
DEFAULT_BASE_PORT = 24300


def default_work_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "rollbook" / "sandbox"


@dataclass(frozen=True)
class SandboxConfig:
    work_dir: Path
    base_port: int = DEFAULT_BASE_PORT

    @classmethod
    def from_env(cls) -> SandboxConfig:
        """ROLLBOOK_SANDBOX_DIR and ROLLBOOK_SANDBOX_BASE_PORT select another sandbox (the tests use this)."""
        work = os.environ.get("ROLLBOOK_SANDBOX_DIR")
        port = os.environ.get("ROLLBOOK_SANDBOX_BASE_PORT")
        return cls(Path(work) if work else default_work_dir(), int(port) if port else DEFAULT_BASE_PORT)

    def port(self, service: str) -> int:
        return self.base_port + PORT_OFFSETS[service]

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "kubeconfig"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.port('kube-apiserver')}"

    def ports_free(self) -> bool:
        return not any(port_open(self.port(name)) for name in PORT_OFFSETS)

    def registry_host(self, mirror: bool = False) -> str:
        return f"127.0.0.1:{self.port('registry-mirror' if mirror else 'registry')}"


def free_base_port(start: int, attempts: int = 20, step: int = PORT_BLOCK) -> int:
    """The first base port from `start` whose whole port block is free, so a second sandbox (a parallel test
    session, a benchmark) never collides with one already running."""
    for base in range(start, start + attempts * step, step):
        if SandboxConfig(Path("."), base).ports_free():
            return base
    raise RuntimeError(f"no free block of {PORT_BLOCK} ports from {start} in {attempts} tries")
