"""verify_image says WHY cosign refused an image, checked with the real cosign and crane (no sandbox cluster).

The module runs its own throwaway registry (`crane registry serve` on a free port, killed at teardown), pushes
one-layer images, signs them as the sandbox does (sandbox/registry.py: key pair, empty password, no
transparency log) and breaks them in the ways an attacker or an outage would: no signature, another key, a
signature whose signed statement was rewritten to name another image, a genuine signature re-attached to
another image, a missing tag, a registry that is down or answers 503. Only the toolchain's binaries are needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import toolchain
from sandbox.registry import _layer, run_tool
from tasks.signing import verify_image

BINS = toolchain.bin_dir()
COSIGN, CRANE = BINS / "cosign", BINS / "crane"
pytestmark = pytest.mark.skipif(
    not (COSIGN.exists() and CRANE.exists()),
    reason=f"cosign and crane are not built in {BINS}: run `python -m sandbox.toolchain cosign crane`",
)
REPO = "rollbook/trust"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:<port>
    work: Path

    def ref(self, tag: str) -> str:
        return f"{self.host}/{REPO}:{tag}"

    def url(self, path: str) -> str:
        return f"http://{self.host}/v2/{REPO}/{path}"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("trust-registry")
    host = f"127.0.0.1:{_free_port()}"
    (work / "disk").mkdir()  # crane's --disk storage must exist (the sandbox creates it too)
    log = open(work / "registry.log", "wb")  # noqa: SIM115 (closed at teardown)
    argv = [str(CRANE), "registry", "serve", f"--address={host}", f"--disk={work / 'disk'}"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(host, proc, work / "registry.log")
        yield Registry(host, work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"crane registry serve exited {proc.returncode}: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        threading.Event().wait(0.1)
    pytest.fail(f"crane registry serve did not answer on {host} within 10s")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs: "a" is the one the runbook trusts, "b" anybody else's. Values are key-file prefixes."""
    found = {}
    for name in ("a", "b"):
        directory = tmp_path_factory.mktemp(f"cosign-{name}")
        run_tool([str(COSIGN), "generate-key-pair", "--output-key-prefix", "cosign"], cwd=directory)
        found[name] = directory / "cosign"
    return found


def push(registry: Registry, tag: str) -> str:
    """An unsigned one-layer image (its own content, so its own digest); returns repo@digest."""
    layer = registry.work / f"{tag}.tar"
    layer.write_bytes(_layer(f"rollbook trust test {tag}\n"))
    run_tool([str(CRANE), "append", "--new_layer", str(layer), "--new_tag", registry.ref(tag)])
    return f"{registry.host}/{REPO}@" + run_tool([str(CRANE), "digest", registry.ref(tag)])


def sign(ref: str, key_prefix: Path, *extra: str) -> None:
    """The sandbox's offline signing (sandbox/registry.py SandboxRegistries.sign) with the given key."""
    run_tool(
        [
            str(COSIGN),
            "sign",
            "--key",
            f"{key_prefix}.key",
            "--use-signing-config=false",
            "--tlog-upload=false",
            "--allow-http-registry",
            "--yes",
            *extra,
            ref,
        ]
    )


INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"


def _manifest(registry: Registry, reference: str) -> httpx.Response:
    accept = (
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, "
        + INDEX_MEDIA_TYPE
    )
    response = httpx.get(registry.url(f"manifests/{reference}"), headers={"Accept": accept}, timeout=10)
    response.raise_for_status()
    return response


def _referrers_tag(digest: str) -> str:
    """crane's registry has no referrers API, so cosign uses the OCI fallback: an index tagged sha256-<hex>."""
    return digest.replace(":", "-")


def bundle_of(registry: Registry, digest: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Sigstore bundle cosign attached to `digest` as an OCI referrer: (its manifest, the bundle JSON)."""
    index = _manifest(registry, _referrers_tag(digest)).json()
    (entry,) = [m for m in index["manifests"] if m.get("artifactType") == BUNDLE_MEDIA_TYPE]
    manifest = _manifest(registry, entry["digest"]).json()
    blob = httpx.get(registry.url(f"blobs/{manifest['layers'][0]['digest']}"), timeout=10)
    blob.raise_for_status()
    return manifest, blob.json()


def _put(registry: Registry, reference: str, body: dict[str, Any], media_type: str) -> tuple[str, int]:
    raw = json.dumps(body).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    put = httpx.put(
        registry.url(f"manifests/{reference or digest}"), content=raw, headers={"Content-Type": media_type}, timeout=10
    )
    put.raise_for_status()
    return digest, len(raw)


def attach_bundle(registry: Registry, manifest: dict[str, Any], bundle: dict[str, Any], digest: str) -> None:
    """Attach `bundle` to the image `digest` the way `cosign sign` does on this registry (what it writes, minus
    the signing): the bundle blob, a copy of `manifest` with that layer and the image as its subject, and the
    referrers index tag listing it."""
    body = json.dumps(bundle).encode()
    blob_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    upload = httpx.post(registry.url("blobs/uploads/"), timeout=10)
    upload.raise_for_status()
    location = httpx.URL(registry.url("")).join(upload.headers["Location"])
    httpx.put(location, params={"digest": blob_digest}, content=body, timeout=10).raise_for_status()
    subject = _manifest(registry, digest)
    attached = {
        **manifest,
        "layers": [{**manifest["layers"][0], "digest": blob_digest, "size": len(body)}],
        "subject": {"mediaType": subject.headers["Content-Type"], "digest": digest, "size": len(subject.content)},
    }
    attached_digest, size = _put(registry, "", attached, manifest["mediaType"])
    entry = {
        "mediaType": manifest["mediaType"],
        "digest": attached_digest,
        "size": size,
        "artifactType": manifest.get("artifactType", BUNDLE_MEDIA_TYPE),
    }
    index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [entry]}
    _put(registry, _referrers_tag(digest), index, INDEX_MEDIA_TYPE)


def rewrite_statement(bundle: dict[str, Any], digest: str) -> dict[str, Any]:
    """The forger's edit: the signed in-toto statement now names `digest`; the signature is left as it was."""
    envelope = bundle["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"] = {"sha256": digest.removeprefix("sha256:")}
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return {**bundle, "dsseEnvelope": {**envelope, "payload": payload}}


@dataclass(frozen=True)
class Images:
    signed: str
    unsigned: str
    other_key: str
    forged: str
    replayed: str
    legacy_signed: str
    legacy_other_key: str
    legacy_replayed: str


@pytest.fixture(scope="module")
def images(registry: Registry, keys: dict[str, Path]) -> Images:
    return build_images(registry, keys)


def build_images(registry: Registry, keys: dict[str, Path]) -> Images:
    """Every case's image, pushed and signed (or broken) once for the module."""
    signed, unsigned, other_key, forged, replayed = (
        push(registry, t) for t in ("signed", "unsigned", "other-key", "forged", "replayed")
    )
    sign(signed, keys["a"])
    sign(other_key, keys["b"])
    manifest, bundle = bundle_of(registry, signed.split("@")[1])
    attach_bundle(registry, manifest, rewrite_statement(bundle, forged.split("@")[1]), forged.split("@")[1])
    attach_bundle(registry, manifest, bundle, replayed.split("@")[1])
    # cosign 2's format, still what most signed images in the wild carry: a sha256-<digest>.sig tag.
    legacy_signed, legacy_other_key, legacy_replayed = (
        push(registry, t) for t in ("legacy-signed", "legacy-other-key", "legacy-replayed")
    )
    sign(legacy_signed, keys["a"], "--new-bundle-format=false")
    sign(legacy_other_key, keys["b"], "--new-bundle-format=false")
    sig_tag = lambda ref: registry.ref(ref.split("@")[1].replace(":", "-") + ".sig")  # noqa: E731
    run_tool([str(CRANE), "copy", sig_tag(legacy_signed), sig_tag(legacy_replayed)])
    return Images(signed, unsigned, other_key, forged, replayed, legacy_signed, legacy_other_key, legacy_replayed)


@pytest.fixture(autouse=True)
def toolchain_cosign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLBOOK_COSIGN", str(COSIGN))


def verify(image: str, keys: dict[str, Path]) -> dict[str, object]:
    answer = verify_image.fn(image, f"{keys['a']}.pub")
    print(f"{image}: {answer}")  # the real cosign message, in the test log
    return answer


def test_signed_with_the_trusted_key_is_verified(images: Images, keys: dict[str, Path]) -> None:
    for image in (images.signed, images.legacy_signed):
        answer = verify(image, keys)
        assert answer["verified"] is True and answer["failure"] is None


def test_unsigned_image_is_unsigned(images: Images, keys: dict[str, Path]) -> None:
    answer = verify(images.unsigned, keys)
    assert answer["verified"] is False and answer["failure"] == "unsigned"


def test_signed_with_another_key_is_invalid_or_other_key(images: Images, keys: dict[str, Path]) -> None:
    for image in (images.other_key, images.legacy_other_key):
        answer = verify(image, keys)
        assert answer["verified"] is False and answer["failure"] == "signature-invalid-or-other-key"


def test_rewritten_signed_statement_is_invalid_or_other_key(images: Images, keys: dict[str, Path]) -> None:
    """The signature no longer matches its payload: the same ECDSA failure as another key, so the same kind."""
    answer = verify(images.forged, keys)
    assert answer["verified"] is False and answer["failure"] == "signature-invalid-or-other-key"


def test_genuine_signature_of_another_image_is_for_other_image(images: Images, keys: dict[str, Path]) -> None:
    for image in (images.replayed, images.legacy_replayed):
        answer = verify(image, keys)
        assert answer["verified"] is False and answer["failure"] == "signature-for-other-image"


def test_missing_tag_is_image_not_found(registry: Registry, images: Images, keys: dict[str, Path]) -> None:
    answer = verify(registry.ref("never-pushed"), keys)
    assert answer["verified"] is False and answer["failure"] == "image-not-found"


def test_registry_nobody_listens_on_is_unreachable(keys: dict[str, Path]) -> None:
    answer = verify(f"127.0.0.1:{_free_port()}/{REPO}:signed", keys)
    assert answer["verified"] is False and answer["failure"] == "registry-unreachable"


class _Unavailable(BaseHTTPRequestHandler):
    """A registry behind a load balancer whose backends are all down: every request gets 503."""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


def test_registry_answering_503_is_unreachable(keys: dict[str, Path]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = verify(f"127.0.0.1:{server.server_address[1]}/{REPO}:signed", keys)
    finally:
        server.shutdown()
        server.server_close()
    assert answer["verified"] is False and answer["failure"] == "registry-unreachable"
