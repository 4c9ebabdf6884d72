"""OCI registries over their HTTP API (the distribution spec): is it up, and which digest does it serve.

During an outage "unreachable" is the answer a runbook needs, so these tasks return it instead of raising, and
each request has its own short timeout. A manifest's digest is computed from the bytes the registry sent (the
sha256 a runtime checks), never taken from a header, so a mirror is trusted only for content it really holds.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prefect import task

from blocks import ContainerRegistry
from rollbook.image_refs import ImageReference
from tasks.policies import LOCAL_FILE, PREFECT_API, REGISTRY_PROBE, REGISTRY_TOOL
from tasks.signing import SignatureError, verify_image, write_docker_config

# Every manifest kind a runtime pulls: image indexes first, so a multi-arch image's digest is the index's.
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def load_registry(block_name: str) -> ContainerRegistry:
    """A saved 'Rollbook Container Registry' block (inside a task: its password never travels as a parameter)."""
    try:
        block = ContainerRegistry.load(block_name)
    except ValueError as exc:
        if "Unable to find" not in str(exc):
            raise
        raise ValueError(
            f"no 'Rollbook Container Registry' block named {block_name!r}: create it in the Prefect UI (Blocks) "
            f"or with ContainerRegistry(url=..., mirrors=[...]).save({block_name!r})"
        ) from None
    if not isinstance(block, ContainerRegistry):
        raise TypeError(f"block {block_name!r} is not a Rollbook Container Registry")
    return block


@task(**PREFECT_API)
def resolve_registry(block_name: str) -> ContainerRegistry:
    return load_registry(block_name)


@dataclass(frozen=True)
class _Answer:
    status: int | None  # None: no HTTP answer at all
    detail: str
    body: bytes = b""


def _base_url(registry: ContainerRegistry, host: str) -> str:
    """The address as the block writes it (its scheme if given), else https, or http for an insecure registry."""
    for address in registry.pull_order():
        if address.split("://", 1)[-1].split("/", 1)[0] == host and "://" in address:
            return f"{address.split('://', 1)[0]}://{host}"
    return f"{'http' if registry.insecure else 'https'}://{host}"


def _token(client: httpx.Client, challenge: str, registry: ContainerRegistry, scope: str) -> str | None:
    """A bearer token for `scope` from the realm a 401's challenge names (anonymous or with the block's login)."""
    params = dict(part.split("=", 1) for part in challenge.removeprefix("Bearer ").split(",") if "=" in part)
    params = {k.strip(): v.strip().strip('"') for k, v in params.items()}
    realm = params.pop("realm", "")
    if not realm:
        return None
    login = registry.credentials()
    resp = client.get(realm, params={**params, "scope": scope}, auth=login)
    if resp.status_code != 200:
        return None
    data = resp.json()
    return str(data.get("token") or data.get("access_token") or "") or None


def _get(registry: ContainerRegistry, url: str, *, scope: str, timeout: float, headers: dict[str, str]) -> _Answer:
    try:
        with httpx.Client(timeout=timeout, verify=not registry.insecure, follow_redirects=True) as client:
            resp = client.get(url, headers=headers)
            challenge = resp.headers.get("www-authenticate", "")
            if resp.status_code == 401 and challenge.lower().startswith("bearer"):
                token = _token(client, challenge, registry, scope)
                if token:
                    resp = client.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
            elif resp.status_code == 401 and registry.credentials():
                resp = client.get(url, headers=headers, auth=registry.credentials())
            body = resp.content[: MAX_MANIFEST_BYTES + 1]
            return _Answer(resp.status_code, f"HTTP {resp.status_code}", body)
    except httpx.HTTPError as exc:
        return _Answer(None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no answer'}")


@task(**REGISTRY_PROBE)
def probe_registry(registry: ContainerRegistry, host: str, timeout_seconds: float) -> dict[str, Any]:
    """`GET /v2/`, like the guide's `curl https://registry/v2/`: {"registry", "up", "status", "detail", "seconds"}.
    A 401 is up (it answered and wants a login); no answer, 5xx and 429 are down."""
    started = time.monotonic()
    answer = _get(registry, f"{_base_url(registry, host)}/v2/", scope="", timeout=timeout_seconds, headers={})
    up = answer.status is not None and (answer.status < 500 and answer.status != 429)
    return {
        "registry": host,
        "up": up,
        "status": answer.status,
        "detail": answer.detail,
        "seconds": round(time.monotonic() - started, 3),
    }


@task(**REGISTRY_PROBE)
def manifest_digest(registry: ContainerRegistry, host: str, image: str, timeout_seconds: float) -> dict[str, Any]:
    """The digest `host` serves for `image`'s repository and tag (or digest): {"image", "registry", "digest",
    "reachable", "detail"}. `digest` is None when the registry has no such manifest (404) or did not answer
    (`reachable` False); asked by digest, a body whose sha256 differs is refused, not reported as that digest."""
    ref = ImageReference.parse(image)
    url = f"{_base_url(registry, host)}/v2/{ref.repository}/manifests/{ref.reference}"
    answer = _get(
        registry,
        url,
        scope=f"repository:{ref.repository}:pull",
        timeout=timeout_seconds,
        headers={"Accept": MANIFEST_TYPES},
    )
    result: dict[str, Any] = {"image": image, "registry": host, "digest": None, "detail": answer.detail}
    result["reachable"] = answer.status is not None and answer.status < 500 and answer.status != 429
    if answer.status != 200:
        if answer.status == 404:
            result["detail"] = f"{host} has no manifest {ref.repository}:{ref.reference} (HTTP 404)"
        return result
    if len(answer.body) > MAX_MANIFEST_BYTES:
        result["detail"] = f"manifest larger than {MAX_MANIFEST_BYTES} bytes: not an image manifest"
        return result
    digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
    if ref.digest and digest != ref.digest:
        result["detail"] = f"{host} answered {ref.repository}@{ref.digest} with content of digest {digest}"
        return result
    result.update(digest=digest, detail=f"{host} serves {ref.repository}:{ref.reference} as {digest}")
    return result


@task(**LOCAL_FILE)
def public_key_file(registry: ContainerRegistry) -> str:
    """The block's cosign public key as a file, for what wants a path (deployment-undo's verify_images), under
    the user's cache and named by its content, so runs reuse it (a public key is not a secret)."""
    if not registry.cosign_public_key:
        raise SignatureError("the registry block has no cosign_public_key")
    pem = registry.cosign_public_key
    directory = Path.home() / ".cache" / "rollbook" / "keys"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"cosign-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pub"
    if not path.exists() or path.read_text() != pem:
        path.write_text(pem)
    return str(path)


@task(**REGISTRY_TOOL)
def verify_signature(registry: ContainerRegistry, image: str) -> dict[str, Any]:
    """cosign verify of `image` with the block's key and login (written to a private temporary directory, so
    neither travels as a parameter nor sits on a command line): {"image", "verified", "detail"}."""
    if not registry.cosign_public_key:
        raise SignatureError("the registry block has no cosign_public_key to verify with")
    with tempfile.TemporaryDirectory(prefix="rollbook-cosign-") as tmp:
        key = Path(tmp) / "cosign.pub"
        key.write_text(registry.cosign_public_key)
        login = registry.credentials()
        config = str(write_docker_config(Path(tmp) / "docker", registry.pull_order(), *login)) if login else None
        return verify_image.fn(image, str(key), allow_http_registry=registry.insecure, docker_config=config)
