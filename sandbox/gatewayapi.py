"""Gateway API CRDs for the sandbox, taken from the `sigs.k8s.io/gateway-api` Go module (standard channel).

The module is fetched through the Go module proxy like the rest of the toolchain and cached by Go, so a
second `up` applies the same files in a second without network access.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

GATEWAY_API_VERSION = "v1.4.0"
MODULE = "sigs.k8s.io/gateway-api"


def crd_dir(version: str = GATEWAY_API_VERSION) -> Path:
    env = {**os.environ, "GOFLAGS": "", "GOTOOLCHAIN": "local"}
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE}@{version} failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    path = Path(json.loads(proc.stdout)["Dir"]) / "config" / "crd" / "standard"
    if not path.is_dir():
        raise RuntimeError(f"{MODULE}@{version} has no {path}")
    return path
