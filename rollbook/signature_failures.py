"""Why `cosign verify` said no: a registry outage is not a trust failure, and an SRE must tell them apart.

`verified=False` alone sends the on-call either to the security team for a registry blip or to the registry for
a forged image. cosign's exit code and its "Error: ..." line say which it was; this module maps them onto a
small vocabulary and one line of advice per kind. Pure (no subprocess), so every rule is unit-tested against
output captured from the real cosign (tests/data/cosign/).

The rules follow cosign 3.1.2 (sigstore-go 1.2.1, go-containerregistry 0.21.7) and cover both signature formats:
- Sigstore bundles attached as OCI referrers (cosign 3's default): every failure exits 1, so only the message
  tells; a bad bundle reads "no matching attestations: ...".
- legacy `sha256-<digest>.sig` tags (cosign 2 and `--new-bundle-format=false`): exit 10 = no signature,
  11 = the image tag does not exist, 12 = signatures exist but none verifies ("no matching signatures: ...").

Limit, said plainly: with a public key, a signature made with another key and a signature whose signed payload
was altered fail the very same ECDSA check and cosign prints the same words for both, so they are one kind here
(`signature-invalid-or-other-key`). What cosign does tell apart is a signature that verifies with the key but
was made for another image (copied or re-attached): `signature-for-other-image`.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

Kind = Literal[
    "verified",
    "registry-unreachable",
    "image-not-found",
    "unsigned",
    "signature-invalid-or-other-key",
    "signature-for-other-image",
    "unknown",
]
KINDS: tuple[Kind, ...] = get_args(Kind)

# The kinds that mean "do not trust this image": a deploy must stop and security hears of it.
TRUST_FAILURES: frozenset[Kind] = frozenset({"unsigned", "signature-invalid-or-other-key", "signature-for-other-image"})

EXPLANATIONS: dict[Kind, str] = {
    "verified": "Signed with the configured key; nothing to do.",
    "registry-unreachable": (
        "Not a trust failure: cosign could not talk to the registry (refused, DNS, timeout or 5xx); "
        "check the registry and the network from this worker, then run again."
    ),
    "image-not-found": (
        "The registry answered but has no such image or tag; check the image reference (typo, deleted or "
        "not yet pushed tag) before deploying."
    ),
    "unsigned": "The image carries no signature: do NOT deploy it; report the image to security.",
    "signature-invalid-or-other-key": (
        "A signature exists but does not verify with the configured key (signed with another key, or its "
        "payload was altered; cosign cannot tell which): do NOT deploy; check the key, then report to security."
    ),
    "signature-for-other-image": (
        "A signature made with the configured key is attached, but it was made for another image (copied or "
        "re-attached): do NOT deploy; report the image to security."
    ),
    "unknown": "cosign failed for a reason not recognised here; read its error (detail) before deciding.",
}

# Exit codes of cosign's legacy (.sig tag) path, from cmd/cosign/errors/exit_codes.go.
EXIT_UNSIGNED, EXIT_NO_SUCH_TAG, EXIT_NO_MATCHING_SIGNATURE = 10, 11, 12

# Transport failures as go-containerregistry passes Go's errors through. Captured: "connect: connection refused",
# "lookup registry.invalid on ...: no such host", "unexpected status code 503 Service Unavailable", and with
# cosign's own --timeout elapsed against a registry that accepts but never answers, "context deadline exceeded".
# The rest are Go's fixed wording for the same outages (errno texts, net/http's TLS timeout), not reproduced here.
_UNREACHABLE = re.compile(
    r"connection refused|no such host|unexpected status code 5\d\d|context deadline exceeded|i/o timeout"
    r"|tls handshake timeout|server misbehaving|network is unreachable|no route to host|connection reset by peer",
    re.IGNORECASE,
)
# "image tag not found: GET .../manifests/<tag>: MANIFEST_UNKNOWN: Unknown manifest" (or NAME_UNKNOWN for a
# repository the registry does not have); cosign exits 11 for both.
_NOT_FOUND = re.compile(r"image tag not found|MANIFEST_UNKNOWN|NAME_UNKNOWN")
_UNSIGNED = re.compile(r"no signatures found")
# A signature that verifies with the key but names another digest: the bundle's in-toto subject ("provided
# artifact digest does not match any digest in statement") or a legacy payload's claim ("invalid or missing
# digest in claim: sha256:...").
_OTHER_IMAGE = re.compile(r"artifact digests? (?:does|do) not match|invalid or missing digest in claim")
# Another key and an edited payload alike: "no matching attestations: failed to verify signature: could not verify
# envelope: accepted signatures do not match threshold, Found: 0, Expected 1" (bundle) and "no matching
# signatures: invalid signature when validating ASN.1 encoded signature" (legacy).
_BAD_SIGNATURE = re.compile(
    r"no matching signatures|no matching attestations|could not verify envelope|invalid signature"
)


def classify(returncode: int, output: str) -> Kind:
    """The kind of answer cosign gave, from its exit code and its whole output (stderr, then stdout).

    The network comes first: a signature cosign could not fetch is unknown, not missing. A missing image tag
    comes before the signature rules because cosign resolves the tag before it looks for signatures."""
    if returncode == 0:
        return "verified"
    if _UNREACHABLE.search(output):
        return "registry-unreachable"
    if returncode == EXIT_NO_SUCH_TAG or _NOT_FOUND.search(output):
        return "image-not-found"
    if returncode == EXIT_UNSIGNED or _UNSIGNED.search(output):
        return "unsigned"
    if _OTHER_IMAGE.search(output):
        return "signature-for-other-image"
    if returncode == EXIT_NO_MATCHING_SIGNATURE or _BAD_SIGNATURE.search(output):
        return "signature-invalid-or-other-key"
    return "unknown"


def explain(kind: str) -> str:
    """One line for the SRE reading the report: what the kind means and what to do next. Takes any string, as
    kinds come back out of task results as plain data; one that is not a kind gets the "unknown" advice."""
    return EXPLANATIONS.get(kind, EXPLANATIONS["unknown"])  # type: ignore[call-overload]
