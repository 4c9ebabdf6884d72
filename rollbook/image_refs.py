"""Image references as the container runtime reads them: which registry a pod pulls from, and the same image
pinned by digest on another registry (pure, unit-tested).

A runtime normalises `nginx` to `docker.io/library/nginx:latest`: the first path component is a registry host
only when it contains a '.' or a ':' or is `localhost`. A registry-outage fallback must apply exactly that rule,
or it would move the wrong workloads (or miss the right ones) to the mirror.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rollbook.types import IMAGE_REF

DEFAULT_REGISTRY = "docker.io"
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_REF = re.compile(IMAGE_REF)


class BadImageReference(ValueError):
    """Not an image reference a container runtime would accept; the message quotes it."""


@dataclass(frozen=True)
class ImageReference:
    """`registry/repository[:tag][@digest]`, split as a runtime splits it."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        if not isinstance(text, str) or not _REF.fullmatch(text):
            raise BadImageReference(f"not an image reference: {text!r} (registry[:port]/repository[:tag][@digest])")
        rest, _, digest = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = DEFAULT_REGISTRY, rest
        repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
        if registry == DEFAULT_REGISTRY and "/" not in repository:
            repository = f"library/{repository}"
        return cls(registry=registry, repository=repository, tag=tag if colon else None, digest=digest or None)

    def pinned(self, digest: str, *, registry: str | None = None) -> str:
        """This image by `digest` (on `registry`, default its own): what a fallback writes, never a tag."""
        if not _DIGEST.fullmatch(digest):
            raise BadImageReference(f"not a sha256 digest: {digest!r}")
        return f"{registry or self.registry}/{self.repository}@{digest}"

    @property
    def reference(self) -> str:
        """What to ask a registry's manifest endpoint for: the digest if pinned, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text


def registry_host(address: str) -> str:
    """`host[:port]` of a registry address as a block holds it (`http://127.0.0.1:5000`, `registry.example.com`):
    the part image references start with."""
    host = address.split("://", 1)[-1]
    return host.split("/", 1)[0].lower()


def digest_of_image_id(image_id: str) -> str | None:
    """The digest in a container status' `imageID` (`docker-pullable://repo@sha256:...`, `repo@sha256:...`)."""
    _, at, digest = image_id.rpartition("@")
    return digest if at and _DIGEST.fullmatch(digest) else None
