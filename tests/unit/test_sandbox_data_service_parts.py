"""Pure parts of the sandbox's Alertmanager, S3 endpoint and PostgreSQL: configs written, argv, ports."""

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
    # the simulator is scraped as the two data planes whose metrics it exports
    assert [job["job_name"] for job in doc["scrape_configs"]] == ["ingress-nginx", "envoy-gateway"]


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


def test_postgres_bin_dir_is_the_newest_installed_major(tmp_path: Path) -> None:
    for major in ("9", "15", "13", "extra"):
        (tmp_path / major / "bin").mkdir(parents=True)
        (tmp_path / major / "bin" / "postgres").touch()
    assert datastores.postgres_bin_dir(tmp_path) == tmp_path / "15" / "bin"
    with pytest.raises(ServiceError, match="apt-get install -y --no-install-recommends postgresql"):
        datastores.postgres_bin_dir(tmp_path / "none")


def test_postgres_runs_as_the_postgres_user_on_loopback_in_the_work_dir(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    bins = Path("/usr/lib/postgresql/15/bin")
    argv = datastores.postgres_service(cfg, bins).argv
    assert argv[0] == "setpriv" and "--reuid=postgres" in argv and "--regid=postgres" in argv
    server = argv[argv.index("--") + 1 :]
    assert server[:3] == [str(bins / "postgres"), "-D", str(cfg.work_dir / "postgres" / "data")]
    settings = dict(s.split("=", 1) for s in server[4::2])
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["port"] == str(cfg.port("postgres"))
    assert settings["unix_socket_directories"] == str(cfg.work_dir / "postgres" / "run")


def test_database_url_and_psql_take_the_password_from_the_work_dir(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    datastores.postgres_password_file(cfg).parent.mkdir(parents=True)
    datastores.postgres_password_file(cfg).write_text("s3cret\n")
    port = cfg.port("postgres")
    assert datastores.database_url(cfg) == f"postgresql://rollbook:s3cret@127.0.0.1:{port}/rollbook"
    assert datastores.psql_env(cfg)["PGPASSWORD"] == "s3cret"
    assert not any("s3cret" in a for a in datastores.psql_connection_args(cfg))  # never in argv (ps shows argv)
