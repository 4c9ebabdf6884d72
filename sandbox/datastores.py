"""Data services of the sandbox: an S3 endpoint (moto's server).

It listens on 127.0.0.1 at the sandbox's port, so integration tests use the real S3 protocol without touching
a cloud account.
"""

from __future__ import annotations

import sys

import httpx

from sandbox.config import SandboxConfig
from sandbox.services import ServiceSpec


def s3_url(cfg: SandboxConfig) -> str:
    return f"http://127.0.0.1:{cfg.port('s3')}"


def s3_service(cfg: SandboxConfig) -> ServiceSpec:
    """moto's server (the `moto[server]` dev dependency), run with this venv's Python. It keeps every bucket and
    object in memory only: `down` (or a crash) loses them, and `--purge` has nothing to delete."""
    port = cfg.port("s3")
    argv = [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("s3", argv, (port,), ready, env={"PYTHONUNBUFFERED": "1"})
