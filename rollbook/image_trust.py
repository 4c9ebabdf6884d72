"""What an image-signature failure means for the running workload (pure, unit-tested): the guide's cosign-failure
runbook decides between "the registry is down", "this image is not ours" and "cannot tell", and only the
second justifies rolling back to the last known-good signed revision.

Per image, cosign's answer on the primary and on each mirror's copy of the same digest (kinds from
`rollbook.signature_failures`):
- verified on the primary: trusted;
- verified on a mirror (same digest): the content is signed with our key, so trusted, but a primary that
  serves it unsigned or with a bad signature is itself suspicious and security hears of it;
- not verified anywhere, and some answer says the signature is missing, bad or for another image: a trust
  failure: do not run it;
- the primary unreachable: a registry outage, not a trust failure, whatever the mirrors say (their answers are
  evidence in the report);
- anything else (no such image, an error cosign did not explain): cannot tell, a person must look.
"""

from __future__ import annotations

from typing import Literal

from rollbook.signature_failures import TRUST_FAILURES

Verdict = Literal["trusted", "trusted-on-mirror", "trust-failure", "registry-outage", "cannot-tell"]

# The worst verdict first: the workload's verdict is its worst image's.
SEVERITY: tuple[Verdict, ...] = ("trust-failure", "cannot-tell", "registry-outage", "trusted-on-mirror", "trusted")

ADVICE: dict[Verdict, str] = {
    "trusted": "every image verifies with the configured key; nothing to do",
    "trusted-on-mirror": (
        "the same digest verifies on a mirror, so the content is signed with our key; the primary's copy does "
        "not verify, which security should look at"
    ),
    "trust-failure": (
        "no copy of the image verifies with the configured key: do not run it; fall back to the last known-good "
        "signed revision and tell security"
    ),
    "registry-outage": (
        "not a trust failure: the registry could not be reached (the mirrors' answers are in the table); nothing "
        "rolled back; run registry-outage, or this flow again once the registry answers"
    ),
    "cannot-tell": "cosign's answers do not say whether the image is ours (see each copy's detail): a person must look",
}


def image_verdict(primary: str | None, mirrors: list[str]) -> Verdict:
    """The verdict for one image from cosign's kind on the primary (None: not asked) and on each mirror copy."""
    answers = [k for k in (primary, *mirrors) if k is not None]
    if primary == "verified":
        return "trusted"
    if primary == "registry-unreachable":
        # never a rollback during an outage: the older image would have to come from the same dead registry,
        # and a mirror's unsigned copy says nothing about the primary's signature
        return "registry-outage"
    if "verified" in mirrors:
        return "trusted-on-mirror"
    if any(k in TRUST_FAILURES for k in answers):
        return "trust-failure"
    return "cannot-tell"


def workload_verdict(verdicts: list[Verdict]) -> Verdict:
    """The worst of the images' verdicts; no image at all cannot be judged."""
    return min(verdicts, key=SEVERITY.index) if verdicts else "cannot-tell"
