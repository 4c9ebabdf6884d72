"""Which cosign key a rollback's image check uses, and where it looks for each image (a request mixin and its
verifier, shared by last-known-good and deployment-undo).

With a key file, each image is verified where its reference points. With a 'Rollbook Container Registry' block,
its key and login are used and each image is verified on the copy a node using the block's mirrors would pull
(`tasks.registry.locate_image`: the first mirror serving it, else the registry, pinned by the digest it
serves): during a registry outage the last known-good revision can still be proven signed from a mirror.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, model_validator

from rollbook.form_rules import any_given, given, not_both, requires
from rollbook.types import BlockName, FormOptional, LocalPath
from tasks.registry import locate_image, resolve_registry, verify_signature
from tasks.signing import verify_image

LOCATE_TIMEOUT_SECONDS = 10.0
NEEDS_KEY = "verify_images needs cosign_public_key or registry_block"
ONE_KEY = "give registry_block or cosign_public_key, not both"

Verifier = Callable[[str], dict[str, Any]]


class ImageVerification(BaseModel):
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        requires(given("verify_images"), any_given("cosign_public_key", "registry_block"), NEEDS_KEY),
        not_both(given("registry_block"), given("cosign_public_key"), ONE_KEY),
    )

    verify_images: bool = Field(default=False, description="Also require the revision's images to verify (cosign).")
    cosign_public_key: FormOptional[LocalPath] = Field(
        default=None, description="The cosign public key (verify_images)."
    )
    registry_block: FormOptional[BlockName] = Field(
        default=None,
        description="'Rollbook Container Registry' block (verify_images): its key and login; images checked "
        "where a node using its mirrors would pull them.",
    )

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        if self.registry_block and self.cosign_public_key:
            raise ValueError(ONE_KEY)
        if self.verify_images and not (self.cosign_public_key or self.registry_block):
            raise ValueError(NEEDS_KEY)
        return self


def image_verifier(request: ImageVerification) -> Verifier | None:
    """How to verify one image for this request ({"image", "verified", "detail", "failure", "served_by"}), or
    None when it asks for no verification. The block is resolved once, before any candidate is looked at."""
    if not request.verify_images:
        return None
    if request.registry_block is None:
        key = str(request.cosign_public_key)
        return lambda image: {**verify_image(image, key), "served_by": None}
    registry = resolve_registry(request.registry_block)

    def verify(image: str) -> dict[str, Any]:
        located = locate_image(registry, image, LOCATE_TIMEOUT_SECONDS)
        answer = verify_signature(registry, located["reference"] or image)
        return {**answer, "image": image, "served_by": located["reference"]}

    return verify
