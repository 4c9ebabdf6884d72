"""Pure Helm release logic: which revision a rollback goes to, and how changes are described."""

from __future__ import annotations

import pytest

from rollbook.artifacts import artifact_key
from rollbook.helm_releases import (
    MASK,
    HelmRollbackRefused,
    RevisionInfo,
    already_live,
    choose_rollback_target,
    image_changes,
    manifest_changes,
    parse_helm_time,
    previous_good,
    revision_from_helm,
    set_path,
    values_changes,
)


def _history(*statuses: str) -> list[RevisionInfo]:
    return [RevisionInfo(revision=i, status=s) for i, s in enumerate(statuses, start=1)]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("superseded", "deployed"), 1),
        (("superseded", "superseded", "failed", "deployed"), 2),  # not blindly live-1
        (("superseded", "failed", "deployed"), 1),  # helm's own rollback-on-failure history
        (("deployed", "failed"), 1),  # failed upgrade without rollback: rev 1 still says deployed
        (("superseded", "pending-upgrade", "failed", "failed", "deployed"), 1),
        (("superseded", "superseded", "uninstalled", "deployed"), 2),
    ],
)
def test_previous_good_skips_failed_and_pending(statuses: tuple[str, ...], expected: int) -> None:
    assert choose_rollback_target(_history(*statuses), None).revision == expected


def test_order_of_input_does_not_matter() -> None:
    history = list(reversed(_history("superseded", "superseded", "failed", "deployed")))
    assert choose_rollback_target(history, None).revision == 2


@pytest.mark.parametrize(
    ("statuses", "requested", "message"),
    [
        (("deployed",), None, "no deployed or superseded revision before live revision 1"),
        (("failed", "deployed"), None, "no deployed or superseded revision"),
        (("superseded", "deployed"), 2, "is the live revision"),
        (("superseded", "deployed"), 7, "revision 7 is not in the release history"),
        (("superseded", "failed", "deployed"), 2, "revision 2 is failed"),
        (("superseded", "deployed"), 0, "must be >= 1"),
        (("superseded", "deployed"), -3, "must be >= 1"),
        (("superseded", "deployed", "pending-upgrade"), None, "another helm operation"),
    ],
)
def test_refusals(statuses: tuple[str, ...], requested: int | None, message: str) -> None:
    with pytest.raises(HelmRollbackRefused, match=message):
        choose_rollback_target(_history(*statuses), requested)


def test_explicit_revision() -> None:
    assert choose_rollback_target(_history("superseded", "superseded", "deployed"), 1).revision == 1


def test_previous_good_of_empty_history() -> None:
    assert previous_good([]) is None
    with pytest.raises(HelmRollbackRefused):
        choose_rollback_target([], None)


def test_set_path_and_merge() -> None:
    values = {"image": {"repository": "r", "tag": "1"}, "replicas": 2}
    set_path(values, "image.tag", "2")
    set_path(values, "podLabels.team", "a")
    assert values == {"image": {"repository": "r", "tag": "2"}, "replicas": 2, "podLabels": {"team": "a"}}
    with pytest.raises(ValueError):
        set_path(values, "", 1)


def test_values_changes_mask_secrets() -> None:
    before = {"image": {"tag": "1"}, "db": {"password": "hunter2"}, "old": True}
    after = {"image": {"tag": "2"}, "db": {"password": "s3cret"}, "new": 1}
    changes = {c.path: c for c in values_changes(before, after)}
    tag = changes["image.tag"]
    assert (tag.before, tag.after, tag.change) == ("1", "2", "changed")
    assert changes["db.password"].before == MASK and changes["db.password"].after == MASK
    assert changes["old"].change == "removed" and changes["new"].change == "added"


def _deployment(image: str) -> dict[str, object]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def test_image_and_manifest_changes_hide_secrets() -> None:
    secret_a = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "YQ=="}}
    secret_b = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "Yg=="}}
    changes = image_changes([_deployment("r:1")], [_deployment("r:2")])
    assert [(c.workload, c.before, c.after) for c in changes] == [("Deployment/web", ["r:1"], ["r:2"])]
    lines = manifest_changes([_deployment("r:1"), secret_a], [_deployment("r:2"), secret_b])
    text = "\n".join(lines)
    assert "-          image: r:1" in text or "image: r:1" in text
    assert "Secret/s: changed (content hidden)" in text
    assert "YQ==" not in text and "Yg==" not in text


def test_artifact_key() -> None:
    assert artifact_key("helm-rollback", "My_NS", "web.v2") == "helm-rollback-my-ns-web-v2"


def test_parse_helm_time_with_nanoseconds() -> None:
    parsed = parse_helm_time("2026-11-27T07:24:12.527008327Z")
    assert parsed is not None and parsed.microsecond == 527008 and parsed.utcoffset() is not None
    assert parse_helm_time(None) is None
    assert parse_helm_time("yesterday") is None


def test_revision_from_helm_reads_the_rollback_target_from_helms_description() -> None:
    row = {"revision": 5, "status": "deployed", "chart": "demo-app-0.1.0", "app_version": "1.0.0",
           "description": "Rollback to 2", "updated": "2026-11-27T07:24:12.527008327Z"}  # fmt: skip
    info = revision_from_helm(row)
    assert (info.revision, info.status, info.rollback_revision) == (5, "deployed", 2)
    assert revision_from_helm({**row, "description": "Upgrade complete"}).rollback_revision is None
    assert revision_from_helm({**row, "description": "Rollback to 12 (pending)"}).rollback_revision == 12


def test_already_live_only_when_the_deployed_revision_is_the_same_chart_values_and_objects() -> None:
    """A re-run of an upgrade whose helm finished adds no revision; anything different is a real upgrade."""
    deployed = RevisionInfo(revision=2, status="deployed", chart="demo-app-0.1.0")
    manifest = [{"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}]
    same = {
        "live_chart": "demo-app-0.1.0",
        "live_values": {"image": {"tag": "1.1.0"}},
        "live_manifest": manifest,
        "chart": "demo-app-0.1.0",
        "values": {"image": {"tag": "1.1.0"}},
        "manifest": manifest,
    }
    assert already_live(deployed, **same)
    assert not already_live(None, **same)  # not installed yet
    for status in ("pending-upgrade", "failed", "superseded"):
        assert not already_live(deployed.model_copy(update={"status": status}), **same), status
    assert not already_live(deployed, **{**same, "chart": "demo-app-0.2.0"})
    assert not already_live(deployed, **{**same, "values": {"image": {"tag": "1.2.0"}}})
    changed = [{"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}]
    assert not already_live(deployed, **{**same, "manifest": changed})
