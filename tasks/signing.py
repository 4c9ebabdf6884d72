"""Image signature checks with the cosign binary (key-based, offline: no transparency log)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from prefect import task

from rollbook.signature_failures import classify
from tasks.policies import REGISTRY_TOOL

COSIGN_TIMEOUT_SECONDS = 60


class SignatureError(ValueError):
    """cosign is missing or the key is unusable (permanent: never retried)."""


def cosign_binary() -> str:
    """$ROLLBOOK_COSIGN (`rollbook sandbox env` exports the sandbox's), else cosign on PATH."""
    explicit = os.environ.get("ROLLBOOK_COSIGN")
    if explicit:
        return explicit
    found = shutil.which("cosign")
    if not found:
        raise SignatureError("cosign not found: install it on PATH or set ROLLBOOK_COSIGN")
    return found


@task(**REGISTRY_TOOL)
def verify_image(
    image: str, public_key: str, allow_http_registry: bool = True, docker_config: str | None = None
) -> dict[str, object]:
    """Whether `image` carries a signature made with the key `public_key`; {"image", "verified", "detail", "failure"}.

    "failure" is None when verified, else why not (rollbook.signature_failures.Kind: the registry could not be
    reached, no such image, no signature, a bad or foreign signature...), so an outage is not reported as forgery.

    `docker_config` is a directory holding the registry login (see `write_docker_config`): cosign reads it
    from $DOCKER_CONFIG, so no password is ever on a command line.
    A signature that does not verify is an answer (verified=False), not an error; a missing key file is."""
    if not Path(public_key).expanduser().is_file():
        raise SignatureError(f"cosign public key not found: {public_key}")
    argv = [cosign_binary(), "verify", "--key", str(Path(public_key).expanduser()), "--insecure-ignore-tlog=true"]
    if allow_http_registry:
        argv.append("--allow-http-registry")
    argv.append(image)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COSIGN_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_CONFIG": docker_config} if docker_config else None,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"cosign verify {image} timed out after {COSIGN_TIMEOUT_SECONDS}s") from None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    detail = lines[-1][:300] if lines else ""
    verified = proc.returncode == 0
    failure = None if verified else classify(proc.returncode, f"{proc.stderr or ''}\n{proc.stdout or ''}")
    return {"image": image, "verified": verified, "detail": detail, "failure": failure}


def write_docker_config(directory: Path, hosts: list[str], username: str, password: str) -> Path:
    """A Docker client config (config.json, owner-only) logging in to each registry host; returns `directory`.

    This is the file every OCI client (cosign, crane, grype) reads for credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths = {host.split("://", 1)[-1].split("/", 1)[0]: {"auth": token} for host in hosts}
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"auths": auths}, fh)
    return directory
