"""Pure parts of the sandbox's S3 endpoint: argv, ports."""

from __future__ import annotations

import sys
from pathlib import Path

from sandbox import datastores
from sandbox.config import SandboxConfig


def _cfg(tmp_path: Path) -> SandboxConfig:
    return SandboxConfig(tmp_path / "sb", base_port=30000)


def test_s3_is_moto_from_this_python_on_loopback(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    spec = datastores.s3_service(cfg)
    assert spec.argv[:3] == [sys.executable, "-m", "moto.server"]
    assert spec.argv[3:] == ["--host", "127.0.0.1", "--port", str(cfg.port("s3"))]
    assert spec.ports == (cfg.port("s3"),)
    assert datastores.s3_url(cfg) == f"http://127.0.0.1:{cfg.port('s3')}"
