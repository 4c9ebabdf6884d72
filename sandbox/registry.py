"""Two local OCI registries (primary and mirror) holding signed demo images.

The demo images are tiny single-layer images built without Docker; each version's layer differs, so each
tag has its own digest. The mirror receives byte-identical copies (same digests), and both copies are signed
with the sandbox's own cosign key, so registry-outage and signature-failure drills have a real fallback.

`rollbook/scan-demo` images exist for the vulnerability check: each holds one installed Python package
(a dist-info METADATA, which grype's cataloger, syft, detects) at a version the sandbox's own grype database
(sandbox/vulndb.py) has made-up advisories for, or none.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import httpx

from sandbox.config import SandboxConfig
from sandbox.services import ServiceSpec

DEMO_REPOSITORY = "rollbook/demo-app"
DEMO_VERSIONS = ("1.0.0", "1.1.0", "1.2.0")
SCAN_DEMO_REPOSITORY = "rollbook/scan-demo"
SCAN_DEMO_PACKAGE = "rollbook-scan-demo"
# Each tag installs SCAN_DEMO_PACKAGE at the tag's version; sandbox/vulndb.py says which versions are affected.
SCAN_DEMO_VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
TOOL_TIMEOUT = 120


class RegistryError(RuntimeError):
    """A crane or cosign call failed; the message names the command and its error output."""


def registry_service(cfg: SandboxConfig, bins: Path, mirror: bool) -> ServiceSpec:
    name = "registry-mirror" if mirror else "registry"
    port = cfg.port(name)
    storage = cfg.work_dir / name
    argv = [str(bins / "crane"), "registry", "serve", f"--address=127.0.0.1:{port}", f"--disk={storage}"]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec(name, argv, (port,), ready, dirs=(storage,))


def run_tool(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run crane or cosign with a timeout; cosign reads an empty password from the environment, never a prompt."""
    full_env = {**os.environ, "COSIGN_PASSWORD": "", **(env or {})}
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise RegistryError(f"{Path(argv[0]).name} {argv[1]} timed out after {TOOL_TIMEOUT}s") from None
    if proc.returncode != 0:
        raise RegistryError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


class SandboxRegistries:
    """Publishes and checks the demo images; knows where the sandbox's cosign key pair lives."""

    def __init__(self, cfg: SandboxConfig, bins: Path) -> None:
        self.cfg = cfg
        self.crane = str(bins / "crane")
        self.cosign = str(bins / "cosign")
        self.key_dir = cfg.work_dir / "cosign"

    @property
    def public_key(self) -> Path:
        return self.key_dir / "cosign.pub"

    def image(self, version: str, mirror: bool = False, repository: str = DEMO_REPOSITORY) -> str:
        return f"{self.cfg.registry_host(mirror)}/{repository}:{version}"

    def scan_image(self, version: str, mirror: bool = False) -> str:
        return self.image(version, mirror, SCAN_DEMO_REPOSITORY)

    def ensure_keys(self) -> None:
        if (self.key_dir / "cosign.key").exists():
            return
        self.key_dir.mkdir(parents=True, exist_ok=True)
        run_tool([self.cosign, "generate-key-pair", "--output-key-prefix", "cosign"], cwd=self.key_dir)

    def digest(self, ref: str) -> str:
        return run_tool([self.crane, "digest", ref])

    def publish_demo_images(self) -> dict[str, str]:
        """Push, mirror and sign every demo version (and the scan-demo images); versions already published with the
        same digest are kept. Returns the demo-app digests by version."""
        self.ensure_keys()
        demo = {v: _layer(f"rollbook demo-app {v}\n") for v in DEMO_VERSIONS}
        scan = {v: _files_layer(scan_demo_files(v)) for v in SCAN_DEMO_VERSIONS}
        self._publish_all(DEMO_REPOSITORY, demo, self.cfg.work_dir / "demo-images.json")
        self._publish_all(SCAN_DEMO_REPOSITORY, scan, self.cfg.work_dir / "scan-images.json")
        return json.loads((self.cfg.work_dir / "demo-images.json").read_text())

    def _publish_all(self, repository: str, layers: dict[str, bytes], record_file: Path) -> None:
        record: dict[str, str] = json.loads(record_file.read_text()) if record_file.exists() else {}
        for version, layer in layers.items():
            if record.get(version) and self._published(repository, version, record[version]):
                continue
            record[version] = self._publish(repository, version, layer)
            record_file.write_text(json.dumps(record, indent=2))

    def _published(self, repository: str, version: str, digest: str) -> bool:
        try:
            return all(self.digest(self.image(version, mirror, repository)) == digest for mirror in (False, True))
        except RegistryError:
            return False

    def push(self, tag: str, content: str) -> str:
        """Push an unsigned one-layer image to the primary registry; drills use it for unsigned or re-tagged images."""
        return self._push_layer(self.image(tag), _layer(content))

    def _push_layer(self, ref: str, content: bytes) -> str:
        layer = self.cfg.work_dir / f"layer-{ref.rsplit('/', 1)[1].replace(':', '-')}.tar"
        layer.write_bytes(content)
        try:
            run_tool([self.crane, "append", "--new_layer", str(layer), "--new_tag", ref])
        finally:
            layer.unlink()
        return ref

    def _publish(self, repository: str, version: str, layer: bytes) -> str:
        primary = self._push_layer(self.image(version, repository=repository), layer)
        mirror = self.image(version, mirror=True, repository=repository)
        run_tool([self.crane, "copy", primary, mirror])
        digest = self.digest(primary)
        for ref in (primary, mirror):
            self.sign(ref.rsplit(":", 1)[0] + "@" + digest)
        return digest

    def sign(self, ref: str) -> None:
        """Sign offline: a key pair, no transparency log, no signing config fetched from the network."""
        run_tool(
            [
                self.cosign,
                "sign",
                "--key",
                str(self.key_dir / "cosign.key"),
                "--use-signing-config=false",
                "--tlog-upload=false",
                "--allow-http-registry",
                "--yes",
                ref,
            ]
        )

    def verify(self, ref: str) -> str:
        return run_tool(
            [
                self.cosign,
                "verify",
                "--key",
                str(self.public_key),
                "--insecure-ignore-tlog=true",
                "--allow-http-registry",
                ref,
            ]
        )


def _layer(text: str) -> bytes:
    """A one-file layer with fixed metadata, so the same text always yields the same layer digest."""
    content = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("app/VERSION")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def scan_demo_files(version: str) -> dict[str, str]:
    """An installed Python package as pip leaves it: syft reads name and version from the dist-info METADATA."""
    dist_info = f"usr/lib/python3/site-packages/{SCAN_DEMO_PACKAGE.replace('-', '_')}-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: {SCAN_DEMO_PACKAGE}\nVersion: {version}\n"
        "Summary: rollbook sandbox package for vulnerability scan drills (see sandbox/vulndb.py)\n"
    )
    return {f"{dist_info}/METADATA": metadata, "app/VERSION": f"rollbook scan-demo {version}\n"}


def _files_layer(files: dict[str, str]) -> bytes:
    """A layer with these files and their parent directories, fixed metadata, so the same files give the same digest."""
    buf = io.BytesIO()
    dirs = sorted({str(parent) for name in files for parent in Path(name).parents if str(parent) != "."})
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = tarfile.DIRTYPE, 0, 0o755
            tar.addfile(info)
        for name, text in sorted(files.items()):
            content = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), 0, 0o644
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()
