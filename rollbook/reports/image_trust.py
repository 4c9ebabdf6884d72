"""image-trust-failure's result and the text people read: the run's artifact and the security notification
carry the same evidence (pure)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult
from rollbook.image_trust import ADVICE, Verdict
from rollbook.signature_failures import explain


class CopyCheck(BaseModel):
    """cosign's answer for one copy of an image (the primary's reference or a mirror's, by digest)."""

    reference: str
    kind: str
    detail: str


class ImageCheck(BaseModel):
    container: str
    image: str
    digest: str | None = Field(default=None, description="The digest checked on the mirrors, when known.")
    primary: CopyCheck
    mirrors: list[CopyCheck] = Field(default_factory=list)
    verdict: Verdict


class ImageTrustResult(ChangeResult):
    namespace: str
    deployment: str
    verdict: Verdict
    images: list[ImageCheck]
    fallback: dict[str, Any] | None = Field(
        default=None, description="deployment-undo's result, when the flow fell back to the last known-good."
    )
    notified: str | None = Field(default=None, description="The notification block the evidence went to.")


def evidence_markdown(result: ImageTrustResult) -> str:
    """The evidence a security team needs: every copy checked, cosign's words, and what was done."""
    lines = [
        f"### Image trust: {result.verdict} for `{result.namespace}/{result.deployment}`",
        "",
        ADVICE[result.verdict],
        "",
        "| container | copy | cosign | detail |",
        "|---|---|---|---|",
    ]
    for image in result.images:
        for copy in [image.primary, *image.mirrors]:
            lines.append(f"| `{image.container}` | `{copy.reference}` | {copy.kind} | {copy.detail or '-'} |")
    kinds = sorted({c.kind for i in result.images for c in [i.primary, *i.mirrors] if c.kind != "verified"})
    if kinds:
        lines += ["", *[f"- **{kind}**: {explain(kind)}" for kind in kinds]]
    if result.fallback:
        lines += ["", f"Fallback: {result.fallback.get('summary', '')}"]
    lines += ["", result.summary]
    return "\n".join(lines) + "\n"
