"""Classifying what the real cosign 3.1.2 printed (captured from the toolchain's build, tests/data/cosign/).

How each sample was made is in tests/integration/test_signature_failures.py, which checks the same cases live
(this file's name differs from it because pytest imports test modules by basename). `legacy-*` samples are
signatures in cosign 2's sha256-<digest>.sig format, the others Sigstore bundles (cosign 3's default).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollbook.signature_failures import EXPLANATIONS, KINDS, TRUST_FAILURES, classify, explain
from tasks.checks.image_signature import signature_result

COSIGN = Path(__file__).resolve().parents[1] / "data" / "cosign"

# sample name -> (cosign's exit code when it was captured, the kind it must classify as)
CAPTURED: dict[str, tuple[int, str]] = {
    "verified": (0, "verified"),
    "legacy-verified": (0, "verified"),
    "unsigned": (10, "unsigned"),
    "other-key": (1, "signature-invalid-or-other-key"),
    "legacy-other-key": (12, "signature-invalid-or-other-key"),
    "rewritten-statement": (1, "signature-invalid-or-other-key"),
    "replayed": (1, "signature-for-other-image"),
    "legacy-replayed": (12, "signature-for-other-image"),
    "missing-tag": (11, "image-not-found"),
    "missing-repo": (11, "image-not-found"),
    "refused": (1, "registry-unreachable"),
    "503": (1, "registry-unreachable"),
    "dns": (1, "registry-unreachable"),  # registry.invalid:5000 (not in the integration test: needs a resolver)
    # `cosign verify --timeout=4s` against a socket that accepts and never answers; cosign blames the key load,
    # the step that found the deadline spent (verify_image's own 60s subprocess timeout raises instead)
    "silent-registry-timeout": (1, "registry-unreachable"),
}


@pytest.mark.parametrize("sample", sorted(CAPTURED))
def test_real_cosign_output_is_classified(sample: str) -> None:
    returncode, kind = CAPTURED[sample]
    assert classify(returncode, (COSIGN / f"cosign-3.1.2-{sample}.stderr").read_text()) == kind


def test_every_sample_is_in_the_table() -> None:
    on_disk = {p.name.removeprefix("cosign-3.1.2-").removesuffix(".stderr") for p in COSIGN.glob("*.stderr")}
    assert on_disk == set(CAPTURED)


def test_another_key_and_an_edited_payload_read_the_same() -> None:
    """Why they are one kind: cosign's words for the two are identical, byte for byte."""
    other_key = (COSIGN / "cosign-3.1.2-other-key.stderr").read_text()
    assert other_key == (COSIGN / "cosign-3.1.2-rewritten-statement.stderr").read_text()
    assert "could not verify envelope" in other_key


def test_the_exit_code_decides_when_the_words_are_unfamiliar() -> None:
    assert classify(10, "Error: something new") == "unsigned"
    assert classify(11, "Error: something new") == "image-not-found"
    assert classify(12, "Error: something new") == "signature-invalid-or-other-key"
    assert classify(1, "Error: something new") == "unknown"
    assert classify(0, "") == "verified"


def test_an_outage_while_fetching_signatures_is_not_a_missing_signature() -> None:
    output = (
        "Error: GET http://reg.example/v2/app/manifests/sha256-abc.sig: unexpected status code 502 Bad Gateway\n"
        "no signatures found"
    )
    assert classify(1, output) == "registry-unreachable"


def test_every_kind_has_advice_and_only_trust_failures_say_do_not_deploy() -> None:
    assert set(EXPLANATIONS) == set(KINDS)
    for kind in KINDS:
        assert ("do NOT deploy" in explain(kind)) == (kind in TRUST_FAILURES)
    assert explain("registry-unreachable").startswith("Not a trust failure")
    assert explain("not-a-kind") == explain("unknown")


def test_checklist_row_names_the_kind_and_its_advice() -> None:
    answers: list[dict[str, object]] = [
        {"image": "reg/app:1", "verified": True, "detail": "", "failure": None},
        {"image": "reg/app:2", "verified": False, "detail": "Error: no signatures found", "failure": "unsigned"},
        {"image": "reg/app:3", "verified": False, "detail": "Error: x"},  # an answer from before "failure" existed
    ]
    result = signature_result(answers)
    assert result.status == "fail"
    assert result.evidence["failure_kinds"] == {"reg/app:2": "unsigned", "reg/app:3": "unknown"}
    assert result.reason.startswith("2 of 3 image(s) failed verification: reg/app:2: unsigned (The image carries")
