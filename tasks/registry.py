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
from rollbook.image_refs import BadImageReference, ImageReference, registry_host
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
    body: bytes = b""  # at most the `limit` asked for, plus one byte (so "too large" can be told)
    content_type: str = ""


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


def _read(
    client: httpx.Client, url: str, headers: dict[str, str], limit: int, auth: tuple[str, str] | None = None
) -> tuple[httpx.Response, bytes]:
    """One GET, its body read only up to `limit` + 1 bytes: a huge or endless answer is never held whole."""
    with client.stream("GET", url, headers=headers, auth=auth) as resp:
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > limit:
                break
        return resp, bytes(body[: limit + 1])


def _get(
    registry: ContainerRegistry,
    url: str,
    *,
    scope: str,
    timeout: float,
    headers: dict[str, str],
    limit: int = MAX_MANIFEST_BYTES,
) -> _Answer:
    try:
        with httpx.Client(timeout=timeout, verify=not registry.insecure, follow_redirects=True) as client:
            resp, body = _read(client, url, headers, limit)
            challenge = resp.headers.get("www-authenticate", "")
            if resp.status_code == 401 and challenge.lower().startswith("bearer"):
                token = _token(client, challenge, registry, scope)
                if token:
                    resp, body = _read(client, url, {**headers, "Authorization": f"Bearer {token}"}, limit)
            elif resp.status_code == 401 and registry.credentials():
                resp, body = _read(client, url, headers, limit, auth=registry.credentials())
            content_type = resp.headers.get("content-type", "").split(";", 1)[0].strip()
            return _Answer(resp.status_code, f"HTTP {resp.status_code}", body, content_type)
    except httpx.HTTPError as exc:
        return _Answer(None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no answer'}")


@dataclass(frozen=True)
class Fetched:
    """A manifest or blob as the registry sent it: `body` is None when it could not be had, and `detail` says why;
    `digest` is the sha256 of the bytes received (never a header), checked against the digest asked for."""

    body: bytes | None
    digest: str
    media_type: str
    detail: str


def _fetch(registry: ContainerRegistry, host: str, repository: str, path: str, want: str | None, **get: Any) -> Fetched:
    url = f"{_base_url(registry, host)}/v2/{repository}/{path}"
    limit = int(get.pop("limit"))
    answer = _get(registry, url, scope=f"repository:{repository}:pull", limit=limit, **get)
    if answer.status != 200:
        detail = "HTTP 404: no such manifest or blob" if answer.status == 404 else answer.detail
        return Fetched(None, "", answer.content_type, f"GET {host}/v2/{repository}/{path}: {detail}")
    if len(answer.body) > limit:
        return Fetched(None, "", answer.content_type, f"{repository}/{path} is larger than {limit} bytes")
    digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
    if want and want.startswith("sha256:") and digest != want:
        return Fetched(None, digest, answer.content_type, f"{host} answered {repository}@{want} with {digest}")
    return Fetched(answer.body, digest, answer.content_type, f"{host} serves {repository}/{path} as {digest}")


def read_manifest(
    registry: ContainerRegistry, host: str, repository: str, reference: str, timeout_seconds: float
) -> Fetched:
    """The manifest (or index) `host` serves for `repository:reference` (a tag or a digest), bounded in size."""
    want = reference if reference.startswith("sha256:") else None
    return _fetch(
        registry,
        host,
        repository,
        f"manifests/{reference}",
        want,
        timeout=timeout_seconds,
        headers={"Accept": MANIFEST_TYPES},
        limit=MAX_MANIFEST_BYTES,
    )


def read_blob(
    registry: ContainerRegistry, host: str, repository: str, digest: str, timeout_seconds: float, max_bytes: int
) -> Fetched:
    """A blob (an image config) by digest, refused past `max_bytes` or when its content has another digest."""
    return _fetch(
        registry, host, repository, f"blobs/{digest}", digest, timeout=timeout_seconds, headers={}, limit=max_bytes
    )


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


@task(**REGISTRY_PROBE)
def locate_image(registry: ContainerRegistry, image: str, timeout_seconds: float) -> dict[str, Any]:
    """Where a node that uses the block's mirrors would pull `image` from: the first host in the block's pull
    order (mirrors, then the registry) that serves it. {"image", "host", "digest", "reference", "tried"}, with
    `reference` pinned by digest on that host, so what is checked is the very content that would run; when no
    host serves it, host, digest and reference are None and `tried` says what each answered. An image from
    another registry is not looked up (the block's login is never sent elsewhere): its reference is itself."""
    ref = ImageReference.parse(image)
    hosts = [registry_host(address) for address in registry.pull_order()]
    if ref.registry not in hosts:
        return {"image": image, "host": ref.registry, "digest": ref.digest, "reference": image, "tried": []}
    tried: list[str] = []
    for host in hosts:
        answer = manifest_digest.fn(registry, host, image, timeout_seconds)
        if answer["digest"]:
            pinned = ref.pinned(answer["digest"], registry=host)
            return {"image": image, "host": host, "digest": answer["digest"], "reference": pinned, "tried": tried}
        detail = str(answer["detail"])
        tried.append(detail if detail.startswith(host) else f"{host}: {detail}")
    return {"image": image, "host": None, "digest": None, "reference": None, "tried": tried}


def pulled_copy(registry: ContainerRegistry | None, image: str, timeout_seconds: float = 10.0) -> str:
    """What to check for `image`: the copy `locate_image` finds in the block's pull order, pinned by digest, or
    the image itself (no block, a malformed reference, or no host serving it: the checking tool then says why)."""
    if registry is None:
        return image
    try:
        located = locate_image.fn(registry, image, timeout_seconds)
    except BadImageReference:
        return image
    return str(located["reference"] or image)


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
