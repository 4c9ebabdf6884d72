"""The sandbox's Alertmanager, S3 endpoint and PostgreSQL are real services reached over their real protocols."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx

from sandbox import datastores
from sandbox.cluster import Sandbox
from sandbox.config import PORT_BLOCK, SandboxConfig, free_base_port
from sandbox.observability import (
    alertmanager_config,
    alertmanager_service,
    alertmanager_url,
    prometheus_config,
    prometheus_config_file,
    prometheus_service,
    prometheus_url,
)
from sandbox.services import port_open, wait_until


def test_s3_put_and_get_an_object(sandbox: Sandbox) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=datastores.s3_url(sandbox.cfg),
        region_name="us-east-1",
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )
    bucket = f"rollbook-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="runs/1/evidence.json", Body=b'{"ok": true}')
    assert s3.get_object(Bucket=bucket, Key="runs/1/evidence.json")["Body"].read() == b'{"ok": true}'
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["runs/1/evidence.json"]


def test_alertmanager_keeps_a_posted_alert_for_the_rollbook_receiver(sandbox: Sandbox) -> None:
    url, name = alertmanager_url(sandbox.cfg), f"RollbookTest{uuid.uuid4().hex[:8]}"
    alert = {"labels": {"alertname": name, "severity": "warning"}, "annotations": {"summary": "from a test"}}
    assert httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).status_code == 200
    listed = httpx.get(f"{url}/api/v2/alerts", params={"filter": f'alertname="{name}"'}, timeout=5).json()
    assert [a["labels"]["alertname"] for a in listed] == [name]
    assert listed[0]["annotations"]["summary"] == "from a test"
    assert listed[0]["receivers"] == [{"name": "rollbook"}] and listed[0]["status"]["state"] == "active"


def test_prometheus_lists_the_sandbox_alertmanager_as_active(sandbox: Sandbox) -> None:
    expected = f"{alertmanager_url(sandbox.cfg)}/api/v2/alerts"
    wait_until(lambda: expected in _active_alertmanagers(sandbox.cfg), 30, f"Prometheus to list {expected}")
    assert _active_alertmanagers(sandbox.cfg) == [expected]


def test_up_reloads_a_running_prometheus_whose_config_changed(tmp_path: Path, sandbox: Sandbox) -> None:
    """A sandbox started before Prometheus sent alerts: the next `up` makes its running Prometheus reload."""
    other = Sandbox(SandboxConfig(tmp_path / "other", free_base_port(sandbox.cfg.base_port + 2 * PORT_BLOCK)))
    path = prometheus_config_file(other.cfg)
    path.parent.mkdir(parents=True)
    path.write_text("global:\n  scrape_interval: 1s\n")  # what an older sandbox ran with: no alerting section
    try:
        pid = other.supervisor.start(prometheus_service(other.cfg))
        assert _active_alertmanagers(other.cfg) == []
        assert other.write_config("prometheus", path, prometheus_config)
        expected = [f"{alertmanager_url(other.cfg)}/api/v2/alerts"]
        wait_until(lambda: _active_alertmanagers(other.cfg) == expected, 30, "Prometheus to reload its config")
        assert not other.write_config("prometheus", path, prometheus_config)  # unchanged: no reload
        assert other.supervisor.pid("prometheus") == pid  # reloaded, not restarted
    finally:
        other.purge()


def test_alertmanager_notifies_the_webhook_on_its_reserved_port(sandbox: Sandbox) -> None:
    """What a flow's webhook listener will receive: the route and receiver really deliver to the reserved port."""
    name = f"RollbookWebhook{uuid.uuid4().hex[:8]}"
    with _webhook_listener(sandbox.cfg.port("alert-webhook")) as received:
        alert = {"labels": {"alertname": name}}
        httpx.post(f"{alertmanager_url(sandbox.cfg)}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()

        def delivered() -> bool:
            return any(b.get("groupLabels", {}).get("alertname") == name for _, b in list(received))

        wait_until(delivered, 30, f"Alertmanager to deliver {name} to the webhook")
    path, body = next((p, b) for p, b in received if b.get("groupLabels", {}).get("alertname") == name)
    assert path == "/alerts" and body["receiver"] == "rollbook" and body["status"] == "firing"


def test_postgres_create_insert_select(sandbox: Sandbox) -> None:
    table = f"runs_{uuid.uuid4().hex[:8]}"
    sql = (
        f"CREATE TABLE {table} (id serial PRIMARY KEY, outcome text NOT NULL);"
        f"INSERT INTO {table} (outcome) VALUES ('rolled-back'), ('promoted');"
        f"SELECT outcome FROM {table} ORDER BY id;"
    )
    assert _psql(sandbox.cfg, sql) == ["rolled-back", "promoted"]  # --command prints the last result only
    assert _psql(sandbox.cfg, "SHOW listen_addresses; SELECT current_user, current_database();") == [
        "127.0.0.1",
        "rollbook|rollbook",
    ]


def test_postgres_data_belongs_to_the_postgres_user_and_the_password_to_root_only(sandbox: Sandbox) -> None:
    data = datastores.postgres_data_dir(sandbox.cfg)
    assert data.owner() == "postgres" and (data / "PG_VERSION").exists()
    secret = datastores.postgres_password_file(sandbox.cfg)
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    assert secret.read_text().strip() not in (sandbox.supervisor.log_file("postgres").read_text())


def test_sandbox_env_exports_the_data_service_urls(sandbox: Sandbox) -> None:
    env = {**os.environ, "ROLLBOOK_SANDBOX_DIR": str(sandbox.cfg.work_dir)}
    env["ROLLBOOK_SANDBOX_BASE_PORT"] = str(sandbox.cfg.base_port)
    argv = [str(Path(sys.executable).parent / "rollbook"), "sandbox", "env"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=True).stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert exports["ROLLBOOK_SANDBOX_S3_URL"] == datastores.s3_url(sandbox.cfg)
    assert exports["ROLLBOOK_SANDBOX_ALERTMANAGER_URL"] == alertmanager_url(sandbox.cfg)
    assert exports["ROLLBOOK_SANDBOX_DATABASE_URL"] == datastores.database_url(sandbox.cfg)


def test_down_frees_the_data_service_ports_and_purge_deletes_the_database(tmp_path: Path, sandbox: Sandbox) -> None:
    """On a second sandbox (two blocks up, clear of the lifecycle test's), only these three services."""
    other = Sandbox(SandboxConfig(tmp_path / "other", free_base_port(sandbox.cfg.base_port + 2 * PORT_BLOCK)))
    cfg, pg_bins = other.cfg, datastores.postgres_bin_dir()
    alertmanager_config(cfg)
    assert datastores.ensure_postgres_cluster(cfg, pg_bins)
    specs = [alertmanager_service(cfg), datastores.s3_service(cfg), datastores.postgres_service(cfg, pg_bins)]
    for spec in specs:
        other.supervisor.start(spec)
    ports = [p for spec in specs for p in spec.ports]
    assert all(port_open(p) for p in ports)
    with _idle_psql(cfg):  # an open connection must not hold up `down`
        started = time.monotonic()
        other.purge()
        assert time.monotonic() - started < 10
    assert not any(port_open(p) for p in ports)
    assert not cfg.work_dir.exists()
    assert sandbox.is_up()  # the session's sandbox was not touched


def _active_alertmanagers(cfg: SandboxConfig) -> list[str]:
    data = httpx.get(f"{prometheus_url(cfg)}/api/v1/alertmanagers", timeout=5).json()["data"]
    return [a["url"] for a in data["activeAlertmanagers"]]


def _psql(cfg: SandboxConfig, sql: str) -> list[str]:
    argv = [str(datastores.postgres_bin_dir() / "psql"), *datastores.psql_connection_args(cfg)]
    argv += ["--tuples-only", "--no-align", "--quiet", "--set=ON_ERROR_STOP=1", f"--command={sql}"]
    env = {**os.environ, **datastores.psql_env(cfg)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


@contextmanager
def _idle_psql(cfg: SandboxConfig) -> Iterator[None]:
    """A psql session that stays connected, doing nothing, until the block ends."""
    argv = [str(datastores.postgres_bin_dir() / "psql"), *datastores.psql_connection_args(cfg)]
    env = {**os.environ, **datastores.psql_env(cfg)}
    client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql'"
    try:
        wait_until(lambda: int(_psql(cfg, count)[0]) >= 2, 10, "the idle psql to connect")  # it and this query
        yield
    finally:
        client.kill()
        client.wait(timeout=10)


@contextmanager
def _webhook_listener(port: int) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    received: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
