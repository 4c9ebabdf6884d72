"""The cosign-failure runbook's decision: only a real trust failure rolls back; an outage never does."""

from __future__ import annotations

import pytest

from rollbook.image_trust import ADVICE, SEVERITY, image_verdict, workload_verdict


@pytest.mark.parametrize(
    ("primary", "mirrors", "verdict"),
    [
        ("verified", [], "trusted"),
        ("unsigned", ["verified"], "trusted-on-mirror"),
        ("signature-invalid-or-other-key", ["unsigned", "verified"], "trusted-on-mirror"),
        ("unsigned", [], "trust-failure"),
        ("signature-invalid-or-other-key", ["signature-invalid-or-other-key"], "trust-failure"),
        ("signature-for-other-image", ["image-not-found"], "trust-failure"),
        ("registry-unreachable", ["unsigned"], "registry-outage"),  # an outage never rolls back
        ("registry-unreachable", [], "registry-outage"),
        ("registry-unreachable", ["registry-unreachable", "image-not-found"], "registry-outage"),
        ("registry-unreachable", ["verified"], "registry-outage"),  # an outage, not a suspicious primary
        ("image-not-found", [], "cannot-tell"),
        ("unknown", ["image-not-found"], "cannot-tell"),
    ],
)
def test_each_image_gets_the_verdict_its_answers_justify(primary: str, mirrors: list[str], verdict: str) -> None:
    assert image_verdict(primary, mirrors) == verdict


def test_a_workload_is_as_bad_as_its_worst_image() -> None:
    assert workload_verdict(["trusted", "registry-outage"]) == "registry-outage"
    assert workload_verdict(["trusted-on-mirror", "trust-failure", "cannot-tell"]) == "trust-failure"
    assert workload_verdict(["trusted", "trusted"]) == "trusted"
    assert workload_verdict([]) == "cannot-tell"
    assert set(SEVERITY) == set(ADVICE)
    assert "not a trust failure" in ADVICE["registry-outage"] and "nothing rolled back" in ADVICE["registry-outage"]
