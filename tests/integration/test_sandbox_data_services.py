"""The sandbox's S3 endpoint is a real service reached over its real protocol."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3

from sandbox import datastores
from sandbox.cluster import Sandbox
from sandbox.config import PORT_BLOCK, SandboxConfig, free_base_port
from sandbox.services import port_open


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


def test_sandbox_env_exports_the_data_service_urls(sandbox: Sandbox) -> None:
    env = {**os.environ, "ROLLBOOK_SANDBOX_DIR": str(sandbox.cfg.work_dir)}
    env["ROLLBOOK_SANDBOX_BASE_PORT"] = str(sandbox.cfg.base_port)
    argv = [str(Path(sys.executable).parent / "rollbook"), "sandbox", "env"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=True).stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert exports["ROLLBOOK_SANDBOX_S3_URL"] == datastores.s3_url(sandbox.cfg)


def test_down_frees_the_data_service_ports(tmp_path: Path, sandbox: Sandbox) -> None:
    """On a second sandbox (two blocks up, clear of the lifecycle test's), only the data services."""
    other = Sandbox(SandboxConfig(tmp_path / "other", free_base_port(sandbox.cfg.base_port + 2 * PORT_BLOCK)))
    cfg = other.cfg
    specs = [datastores.s3_service(cfg)]
    for spec in specs:
        other.supervisor.start(spec)
    ports = [p for spec in specs for p in spec.ports]
    assert all(port_open(p) for p in ports)
    other.purge()
    assert not any(port_open(p) for p in ports)
    assert sandbox.is_up()  # the session's sandbox was not touched
