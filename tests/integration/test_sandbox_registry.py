"""The two registries serve the same signed digests; cosign tells signed from unsigned and re-tagged images."""

from __future__ import annotations

import pytest

from sandbox.registry import DEMO_VERSIONS, RegistryError, SandboxRegistries


def test_mirror_holds_same_digests(registries: SandboxRegistries) -> None:
    digests = {registries.digest(registries.image(v)) for v in DEMO_VERSIONS}
    assert len(digests) == len(DEMO_VERSIONS)
    for version in DEMO_VERSIONS:
        assert registries.digest(registries.image(version)) == registries.digest(registries.image(version, mirror=True))


def test_signed_demo_images_verify(registries: SandboxRegistries) -> None:
    for mirror in (False, True):
        assert "sha256:" in registries.verify(registries.image("1.0.0", mirror))


def test_unsigned_image_fails_verification(registries: SandboxRegistries) -> None:
    ref = registries.push("9.9.9-unsigned", "unsigned")
    with pytest.raises(RegistryError, match="cosign verify"):
        registries.verify(ref)


def test_retagged_image_fails_verification(registries: SandboxRegistries) -> None:
    ref = registries.push("2.0.0", "original")
    registries.sign(ref.rsplit(":", 1)[0] + "@" + registries.digest(ref))
    registries.verify(ref)
    registries.push("2.0.0", "tampered")  # same tag, different content: the signature no longer applies
    with pytest.raises(RegistryError, match="cosign verify"):
        registries.verify(ref)
