"""Pure parts of the sandbox's Alertmanager and S3 endpoint: configs written, argv, ports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from sandbox import datastores, observability
from sandbox.config import SandboxConfig
from sandbox.services import ServiceError


def _cfg(tmp_path: Path) -> SandboxConfig:
    return SandboxConfig(tmp_path / "sb", base_port=30000)


def _flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"{name}="))


def test_prometheus_sends_alerts_to_the_sandbox_alertmanager(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    doc = yaml.safe_load(observability.prometheus_config(cfg).read_text())
    targets = doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{cfg.port('alertmanager')}"]
    assert doc["scrape_configs"][0]["job_name"] == "traffic-simulator"  # scraping unchanged


def test_alertmanager_routes_everything_to_the_rollbook_webhook(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    doc = yaml.safe_load(observability.alertmanager_config(cfg).read_text())
    assert doc["route"]["receiver"] == "rollbook"
    (receiver,) = doc["receivers"]
    assert receiver["name"] == "rollbook"
    assert receiver["webhook_configs"][0]["url"] == f"http://127.0.0.1:{cfg.port('alert-webhook')}/alerts"


def test_alertmanager_argv_listens_on_loopback_without_cluster_gossip(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    spec = observability.alertmanager_service(cfg)
    assert spec.ports == (cfg.port("alertmanager"),)
    assert _flag(spec.argv, "--web.listen-address") == f"127.0.0.1:{cfg.port('alertmanager')}"
    assert "--cluster.listen-address=" in spec.argv  # empty: cluster mode off, no gossip port
    assert _flag(spec.argv, "--config.file") == str(cfg.work_dir / "alertmanager" / "alertmanager.yml")
    assert Path(_flag(spec.argv, "--storage.path")) in spec.dirs
    assert observability.alertmanager_url(cfg) == f"http://127.0.0.1:{cfg.port('alertmanager')}"


def test_missing_alertmanager_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability.shutil, "which", lambda name: None)
    with pytest.raises(ServiceError, match="apt-get install -y --no-install-recommends prometheus-alertmanager"):
        observability.alertmanager_binary()


def test_s3_is_moto_from_this_python_on_loopback(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    spec = datastores.s3_service(cfg)
    assert spec.argv[:3] == [sys.executable, "-m", "moto.server"]
    assert spec.argv[3:] == ["--host", "127.0.0.1", "--port", str(cfg.port("s3"))]
    assert spec.ports == (cfg.port("s3"),)
    assert datastores.s3_url(cfg) == f"http://127.0.0.1:{cfg.port('s3')}"
