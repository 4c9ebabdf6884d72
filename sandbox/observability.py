"""Observability services of the sandbox: a real Prometheus server, the traffic simulator it scrapes, and the
Alertmanager it sends alerts to.

Prometheus and Alertmanager come from the Debian packages (`make system-deps`); the sandbox runs its own
instances on its own ports and data directories, scraping the simulator every second so a rollout step can be
judged within seconds. A missing binary fails `up` with the command that installs it.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

import httpx

from sandbox.config import SandboxConfig
from sandbox.services import ServiceError, ServiceSpec

PROMETHEUS_INSTALL = "apt-get install -y --no-install-recommends prometheus"
ALERTMANAGER_INSTALL = "apt-get install -y --no-install-recommends prometheus-alertmanager"
ALERTMANAGER_BINARY = "prometheus-alertmanager"  # the Debian package's name for it
ALERT_RECEIVER = "rollbook"
SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise ServiceError(f"prometheus: binary not found on PATH; install it with `{PROMETHEUS_INSTALL}`")
    return found


def alertmanager_binary() -> str:
    found = shutil.which(ALERTMANAGER_BINARY)
    if not found:
        raise ServiceError(
            f"alertmanager: {ALERTMANAGER_BINARY} not found on PATH; install it with `{ALERTMANAGER_INSTALL}`"
        )
    return found


def prometheus_config_file(cfg: SandboxConfig) -> Path:
    return cfg.work_dir / "prometheus" / "prometheus.yml"


def alertmanager_config_file(cfg: SandboxConfig) -> Path:
    return cfg.work_dir / "alertmanager" / "alertmanager.yml"


def prometheus_rules_dir(cfg: SandboxConfig) -> Path:
    """Alerting rule files (`*.yml`) Prometheus loads; `Sandbox.set_alert_rules` writes one and reloads."""
    return cfg.work_dir / "prometheus" / "rules"


def prometheus_config(cfg: SandboxConfig) -> Path:
    """Write (or rewrite) the scrape configuration, the alerting rule files and where alerts go. The simulator
    stands in for two data planes, scraped every second as a real cluster scrapes them: ingress-nginx's
    controller (`/metrics`) and Envoy Gateway's proxies (`/stats/prometheus`)."""
    path = prometheus_config_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    prometheus_rules_dir(cfg).mkdir(parents=True, exist_ok=True)
    path.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL}\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
        "rule_files:\n"
        f"  - '{prometheus_rules_dir(cfg)}/*.yml'\n"
        "alerting:\n"
        "  alertmanagers:\n"
        "    - static_configs:\n"
        f"        - targets: ['127.0.0.1:{cfg.port('alertmanager')}']\n"
        "scrape_configs:\n"
        "  - job_name: ingress-nginx\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{cfg.port('traffic-simulator')}']\n"
        "  - job_name: envoy-gateway\n"
        "    metrics_path: /stats/prometheus\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{cfg.port('traffic-simulator')}']\n"
    )
    return path


def prometheus_url(cfg: SandboxConfig) -> str:
    return f"http://127.0.0.1:{cfg.port('prometheus')}"


def alertmanager_url(cfg: SandboxConfig) -> str:
    return f"http://127.0.0.1:{cfg.port('alertmanager')}"


def alert_webhook_url(cfg: SandboxConfig) -> str:
    """Where Alertmanager sends every notification: the port reserved for `rollbook webhook`. While nothing
    listens there, Alertmanager only logs the failed delivery and retries; it keeps running."""
    return f"http://127.0.0.1:{cfg.port('alert-webhook')}/alerts"


def alert_webhook_token_file(cfg: SandboxConfig) -> Path:
    """The bearer token Alertmanager sends (`credentials_file`) and `rollbook webhook --token-file` expects;
    made by `up` (when it writes Alertmanager's config), readable by its owner only."""
    return cfg.work_dir / "alertmanager" / "webhook-token"


def ensure_alert_webhook_token(cfg: SandboxConfig) -> Path:
    path = alert_webhook_token_file(cfg)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path


def alertmanager_config(cfg: SandboxConfig) -> Path:
    """Write (or rewrite) the routing: every alert to the `rollbook` webhook receiver with the sandbox's bearer
    token, grouped by alert name, with short waits so a test or a rollout sees a notification within seconds."""
    path = alertmanager_config_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "route:\n"
        f"  receiver: {ALERT_RECEIVER}\n"
        "  group_by: ['alertname']\n"
        "  group_wait: 1s\n"
        "  group_interval: 5s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        f"  - name: {ALERT_RECEIVER}\n"
        "    webhook_configs:\n"
        f"      - url: '{alert_webhook_url(cfg)}'\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        "            type: Bearer\n"
        f"            credentials_file: '{ensure_alert_webhook_token(cfg)}'\n"
    )
    return path


def alertmanager_service(cfg: SandboxConfig) -> ServiceSpec:
    """Cluster mode is off (empty --cluster.listen-address): one instance needs no gossip port."""
    port = cfg.port("alertmanager")
    data = cfg.work_dir / "alertmanager" / "data"
    binary = shutil.which(ALERTMANAGER_BINARY) or ALERTMANAGER_BINARY  # `up` checks with alertmanager_binary()
    argv = [
        binary,
        f"--config.file={alertmanager_config_file(cfg)}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("alertmanager", argv, (port,), ready, dirs=(data,))


def prometheus_service(cfg: SandboxConfig) -> ServiceSpec:
    port = cfg.port("prometheus")
    data = cfg.work_dir / "prometheus" / "data"
    binary = shutil.which("prometheus") or "prometheus"  # `up` checks with prometheus_binary() before starting
    argv = [
        binary,
        f"--config.file={prometheus_config_file(cfg)}",
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
