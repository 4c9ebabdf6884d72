"""Observability services of the sandbox: a real Prometheus server and the traffic simulator it scrapes.

Prometheus comes from the Debian package (`apt-get install prometheus`); the sandbox runs its own instance on
its own port and data directory, scraping the simulator every second so a rollout step can be judged within
seconds. A missing binary fails `up` with the command that installs it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx

from sandbox.config import SandboxConfig
from sandbox.services import ServiceError, ServiceSpec

PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus"
SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise ServiceError(f"prometheus: binary not found on PATH; install it with `{PROMETHEUS_INSTALL}`")
    return found


def prometheus_config(cfg: SandboxConfig) -> Path:
    """Write (or rewrite) the scrape configuration: the simulator, every second."""
    path = cfg.work_dir / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "scrape_configs:\n"
        "  - job_name: traffic-simulator\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{cfg.port('traffic-simulator')}']\n"
    )
    return path


def prometheus_url(cfg: SandboxConfig) -> str:
    return f"http://127.0.0.1:{cfg.port('prometheus')}"


def prometheus_service(cfg: SandboxConfig) -> ServiceSpec:
    port = cfg.port("prometheus")
    data = cfg.work_dir / "prometheus" / "data"
    binary = shutil.which("prometheus") or "prometheus"  # `up` checks with prometheus_binary() before starting
    argv = [
        binary,
        f"--config.file={cfg.work_dir / 'prometheus' / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("prometheus", argv, (port,), ready, dirs=(data,))


def traffic_simulator_service(cfg: SandboxConfig, rps: float = 50.0) -> ServiceSpec:
    port = cfg.port("traffic-simulator")
    argv = [
        sys.executable,
        "-m",
        "sandbox.trafficsim",
        f"--kubeconfig={cfg.kubeconfig}",
        f"--port={port}",
        f"--rps={rps}",
    ]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("traffic-simulator", argv, (port,), ready, env={"PYTHONUNBUFFERED": "1"})
