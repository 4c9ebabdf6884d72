"""What an image says about itself (its manifest and config blob) against what the rendered chart expects of it.

Pure (no registry, no cluster), so every rule is unit-tested directly; tasks/checks/image_details.py fetches the
documents (tasks/registry.py) and reports what these rules find.

Read from the OCI / Docker image documents:
- a manifest: its config and layer descriptors, whose `size`s add up to the compressed size a pull downloads;
- an index (multi-platform image): the linux/amd64 entry is the one described (else the first linux one, else
  the first), and which one was chosen is said;
- the config blob's `config`: `Healthcheck` (`Test: ["NONE"]` disables it, so it counts as none), `ExposedPorts`
  (`"8080/tcp": {}`), `User`, `Entrypoint`, `Cmd`.

Compared with each container of the rendered chart that runs the image (warnings, never failures: Kubernetes
itself decides at run time):
- a `containerPort` the image does not EXPOSE (EXPOSE is documentation, but a mismatch usually means the chart
  and the image disagree on where the application listens);
- no liveness or readiness probe: with no HEALTHCHECK in the image either, nothing checks the application's
  health; with one, it is never run, as Kubernetes ignores an image's HEALTHCHECK;
- `runAsNonRoot` while the image runs as root (no User, `0`, `root`) or as a user name the kubelet cannot verify
  (it refuses to start such containers: "image will run as root" / "image has non-numeric user");
- no `command`/`args` in the chart and no Entrypoint/Cmd in the image: the runtime has nothing to start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rollbook.image_refs import BadImageReference, ImageReference

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
PREFERRED_PLATFORM = ("linux", "amd64")
MAX_CONFIG_BYTES = 1024 * 1024  # an image config is a few KiB; its history rarely makes it more than 100 KiB
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")

JSON = dict[str, Any]


class NotAnImage(ValueError):
    """A manifest or config that is not what an image's is; the message says what is wrong."""


def load_json(body: bytes, what: str) -> JSON:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotAnImage(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise NotAnImage(f"{what} is not a JSON object")
    return doc


def is_index(manifest: JSON, content_type: str = "") -> bool:
    return manifest.get("mediaType") in INDEX_TYPES or content_type in INDEX_TYPES or "manifests" in manifest


def _platform(entry: JSON) -> str:
    p = entry.get("platform") or {}
    text = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return text + (f"/{p['variant']}" if p.get("variant") else "")


def choose_platform(index: JSON) -> tuple[str, str, list[str]]:
    """(digest of the chosen entry, its platform, every platform the index lists) of an image index: linux/amd64,
    else the first linux entry, else the first. Attestation entries (platform unknown/unknown) are never chosen."""
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict) and e.get("digest")]
    images = [e for e in entries if _platform(e) != "unknown/unknown"] or entries
    if not images:
        raise NotAnImage("the image index lists no manifest")
    platforms = [_platform(e) for e in images]

    def rank(entry: JSON) -> int:
        p = entry.get("platform") or {}
        if (p.get("os"), p.get("architecture")) == PREFERRED_PLATFORM:
            return 0
        return 1 if p.get("os") == "linux" else 2

    chosen = min(images, key=rank)  # min keeps the first of equal rank
    return str(chosen["digest"]), _platform(chosen), platforms


def compressed_size(manifest: JSON) -> int:
    """Bytes a pull downloads: the config blob and every (compressed) layer, as the manifest gives them."""
    config = manifest.get("config")
    if not isinstance(config, dict) or not config.get("digest"):
        raise NotAnImage("the manifest has no config descriptor (not an image manifest)")
    layers = manifest.get("layers") or []
    return int(config.get("size") or 0) + sum(
        int(layer.get("size") or 0) for layer in layers if isinstance(layer, dict)
    )


def config_digest(manifest: JSON) -> str:
    compressed_size(manifest)  # the same refusal of a manifest without a config
    return str(manifest["config"]["digest"])


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def normal_port(port: Any, protocol: str = "tcp") -> str:
    """`8080/tcp` for 8080, "8080", "8080/TCP": how an image config keys its ports."""
    text = str(port).strip().lower()
    return text if "/" in text else f"{text}/{(protocol or 'tcp').lower()}"


@dataclass(frozen=True)
class ImageConfig:
    """What the image's config says about running it."""

    healthcheck: list[str] | None  # the Test command; None when there is none (or it is disabled with NONE)
    exposed_ports: list[str]
    user: str
    entrypoint: list[str]
    cmd: list[str]
    os: str = ""
    architecture: str = ""

    @classmethod
    def parse(cls, doc: JSON) -> ImageConfig:
        if "rootfs" not in doc and "config" not in doc:
            raise NotAnImage("the config blob has neither `config` nor `rootfs`: not an image config")
        config = doc.get("config") or {}
        if not isinstance(config, dict):
            raise NotAnImage("the image config's `config` is not an object")
        check = config.get("Healthcheck") or {}
        test = _strings(check.get("Test")) if isinstance(check, dict) else []
        ports = config.get("ExposedPorts") or {}
        return cls(
            healthcheck=test if test and test[0].upper() != "NONE" else None,
            exposed_ports=sorted(normal_port(p) for p in (ports if isinstance(ports, dict) else {})),
            user=str(config.get("User") or ""),
            entrypoint=_strings(config.get("Entrypoint")),
            cmd=_strings(config.get("Cmd")),
            os=str(doc.get("os") or ""),
            architecture=str(doc.get("architecture") or ""),
        )

    def runs_as_root(self) -> bool:
        user = self.user.split(":", 1)[0].strip()
        return user in ("", "0", "root")

    def summary(self) -> JSON:
        return {
            "healthcheck": self.healthcheck,
            "exposed_ports": self.exposed_ports,
            "user": self.user,
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
        }


@dataclass(frozen=True)
class ContainerUse:
    """One container of the rendered chart and what it expects of its image."""

    workload: str  # Deployment/web
    container: str
    image: str
    ports: list[str] = field(default_factory=list)  # 8080/tcp
    probes: list[str] = field(default_factory=list)  # liveness, readiness, startup
    run_as_non_root: bool = False
    run_as_user: int | None = None
    has_command: bool = False

    @property
    def where(self) -> str:
        return f"container {self.container!r} of {self.workload}"


def _pod_spec(obj: JSON) -> JSON:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def container_uses(manifests: list[JSON]) -> list[ContainerUse]:
    """Every (init) container of every workload the chart renders, with its ports, probes and user settings."""
    uses: list[ContainerUse] = []
    for obj in manifests:
        if not isinstance(obj, dict) or obj.get("kind") not in WORKLOAD_KINDS:
            continue
        pod = _pod_spec(obj)
        pod_security = pod.get("securityContext") or {}
        workload = f"{obj['kind']}/{(obj.get('metadata') or {}).get('name', '?')}"
        init = [(c, True) for c in pod.get("initContainers") or []]
        for c, is_init in [*init, *((c, False) for c in pod.get("containers") or [])]:
            if not isinstance(c, dict) or not c.get("image"):
                continue
            security = {**pod_security, **(c.get("securityContext") or {})}
            user = security.get("runAsUser")
            uses.append(
                ContainerUse(
                    workload=workload,
                    container=str(c.get("name", "?")) + (" (init)" if is_init else ""),
                    image=str(c["image"]),
                    ports=[
                        normal_port(p["containerPort"], str(p.get("protocol") or "tcp"))
                        for p in c.get("ports") or []
                        if isinstance(p, dict) and p.get("containerPort") is not None
                    ],
                    # init containers take no probes: never reported as lacking them
                    probes=["n/a"]
                    if is_init
                    else [
                        k.removesuffix("Probe") for k in ("livenessProbe", "readinessProbe", "startupProbe") if c.get(k)
                    ],
                    run_as_non_root=bool(security.get("runAsNonRoot")),
                    run_as_user=user if isinstance(user, int) else None,
                    has_command=bool(c.get("command") or c.get("args")),
                )
            )
    return uses


def mismatches(image: str, config: ImageConfig, uses: list[ContainerUse]) -> list[str]:
    """Where the chart's containers running `image` expect what the image's config does not give; one sentence
    each, naming the image, the container (and its workload) and the port."""
    found: list[str] = []
    for use in uses:
        missing = [p for p in use.ports if p not in config.exposed_ports]
        if missing:
            exposed = ", ".join(config.exposed_ports) if config.exposed_ports else "no port"
            found += [
                f"{use.where} declares containerPort {port} but image {image} exposes {exposed}" for port in missing
            ]
        if not use.probes:
            if config.healthcheck is None:
                found.append(
                    f"{use.where} has no liveness or readiness probe and image {image} has no HEALTHCHECK: "
                    "nothing checks the application's health"
                )
            else:
                found.append(
                    f"{use.where} has no liveness or readiness probe; image {image} has a HEALTHCHECK "
                    f"({' '.join(config.healthcheck)}) that Kubernetes ignores: make it a probe"
                )
        if use.run_as_non_root and use.run_as_user is None:
            user = config.user.split(":", 1)[0].strip()
            if config.runs_as_root():
                found.append(
                    f"{use.where} sets runAsNonRoot but image {image} runs as root (User {config.user or 'unset'}) "
                    "and the chart gives no runAsUser: the kubelet will refuse to start it"
                )
            elif not user.isdigit():
                found.append(
                    f"{use.where} sets runAsNonRoot but image {image} runs as user name {user!r}, which the "
                    "kubelet cannot verify as non-root: give a numeric runAsUser"
                )
        if not use.has_command and not config.entrypoint and not config.cmd:
            found.append(f"{use.where} sets no command and image {image} has no Entrypoint or Cmd: nothing to start")
    return found


def _repository(image: str) -> tuple[str, str] | None:
    try:
        ref = ImageReference.parse(image)
    except BadImageReference:
        return None
    return ref.registry, ref.repository


def uses_of(image: str, uses: list[ContainerUse]) -> list[ContainerUse]:
    """The containers that run `image`: those naming it exactly, else those naming the same repository (an image
    given in the request by digest or another tag stands for the chart's)."""
    exact = [u for u in uses if u.image == image]
    if exact:
        return exact
    repo = _repository(image)
    return [u for u in uses if repo is not None and _repository(u.image) == repo]
