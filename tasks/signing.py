"""Image signature checks with the cosign binary (key-based, offline: no transparency log)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from prefect import task

from tasks.policies import retry_transient

COSIGN_TIMEOUT_SECONDS = 60


class SignatureError(ValueError):
    """cosign is missing or the key is unusable (permanent: never retried)."""


def cosign_binary() -> str:
    """$ROLLBOOK_COSIGN, else cosign on PATH, else the one the sandbox toolchain built."""
    explicit = os.environ.get("ROLLBOOK_COSIGN")
    if explicit:
        return explicit
    found = shutil.which("cosign")
    if found:
        return found
    try:
        from sandbox import toolchain
    except ImportError:
        raise SignatureError("cosign not found: install it on PATH or set ROLLBOOK_COSIGN") from None
    candidate = toolchain.bin_dir() / "cosign"
    if not candidate.is_file():
        raise SignatureError("cosign not found: install it on PATH or set ROLLBOOK_COSIGN")
    return str(candidate)


@task(
    retries=2,
    retry_delay_seconds=[2, 5],
    retry_condition_fn=retry_transient,
    timeout_seconds=3 * COSIGN_TIMEOUT_SECONDS,
)
def verify_image(image: str, public_key: str, allow_http_registry: bool = True) -> dict[str, object]:
    """Whether `image` carries a signature made with the key `public_key`; {"image", "verified", "detail"}.

    A signature that does not verify is an answer (verified=False), not an error; a missing key file is."""
    if not Path(public_key).expanduser().is_file():
        raise SignatureError(f"cosign public key not found: {public_key}")
    argv = [cosign_binary(), "verify", "--key", str(Path(public_key).expanduser()), "--insecure-ignore-tlog=true"]
    if allow_http_registry:
        argv.append("--allow-http-registry")
    argv.append(image)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=COSIGN_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"cosign verify {image} timed out after {COSIGN_TIMEOUT_SECONDS}s") from None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    detail = lines[-1][:300] if lines else ""
    return {"image": image, "verified": proc.returncode == 0, "detail": detail}
