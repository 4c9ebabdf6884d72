"""Pure revision logic: which ReplicaSet an undo restores, what it writes, how a rollout's state is read."""

from __future__ import annotations

from typing import Any

import pytest

from flows.deployment_undo import UndoRequest, _fingerprint, undo_plan
from rollbook import revisions as r
from rollbook import rollback_guard as guard
from rollbook.reports.undo import UndoResult, plan_markdown, result_markdown, rollout_failed_markdown

UID = "dep-uid"


def template(image: str, env: dict[str, str] | None = None, hash_label: str | None = None) -> dict[str, Any]:
    labels = {"app": "web", **({r.POD_TEMPLATE_HASH_LABEL: hash_label} if hash_label else {})}
    container: dict[str, Any] = {"name": "app", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"metadata": {"labels": labels}, "spec": {"containers": [container]}}


def rs(
    name: str,
    revision: int | None,
    image: str,
    created: str,
    annotations: dict[str, str] | None = None,
    owner: str = UID,
    available: int = 0,
    uid: str | None = None,
) -> dict[str, Any]:
    ann = dict(annotations or {})
    if revision is not None:
        ann[r.REVISION_ANNOTATION] = str(revision)
    return {
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": created,
            "annotations": ann,
            "ownerReferences": [{"uid": owner, "controller": True, "kind": "Deployment"}],
        },
        "spec": {"replicas": available, "template": template(image, hash_label=f"h-{name}")},
        "status": {"availableReplicas": available},
    }


def deployment(image: str, annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "uid": UID,
            "generation": 5,
            "resourceVersion": "100",
            "annotations": {r.REVISION_ANNOTATION: "3", **(annotations or {})},
        },
        "spec": {"replicas": 3, "template": template(image), "selector": {"matchLabels": {"app": "web"}}},
        "status": {"observedGeneration": 5, **status},
    }


HISTORY = [
    rs("web-a", 1, "app:1", "2026-01-01T00:00:01Z"),
    rs("web-b", 2, "app:2", "2026-01-01T00:00:02Z"),
    rs("web-c", 3, "app:3", "2026-01-01T00:00:03Z", available=3),
]


def test_previous_revision_is_second_newest() -> None:
    assert r.rollback_target(deployment("app:3"), HISTORY, None)["metadata"]["name"] == "web-b"
    assert r.rollback_target(deployment("app:3"), HISTORY, 0)["metadata"]["name"] == "web-b"


def test_previous_when_live_template_has_no_replica_set_yet() -> None:
    # kubectl picks the second newest revision among existing ReplicaSets, not the newest
    assert r.rollback_target(deployment("app:9"), HISTORY, None)["metadata"]["name"] == "web-b"


def test_unparsable_revisions_are_skipped() -> None:
    junk = rs("web-j", None, "app:j", "2026-01-01T00:00:04Z", annotations={r.REVISION_ANNOTATION: "x"})
    assert r.rollback_target(deployment("app:3"), [*HISTORY, junk], None)["metadata"]["name"] == "web-b"


def test_explicit_revision_and_missing_ones() -> None:
    assert r.rollback_target(deployment("app:3"), HISTORY, 1)["metadata"]["name"] == "web-a"
    with pytest.raises(r.RevisionNotFound, match="revision 7 .*'web': the revisions that exist are 1, 2, 3;"):
        r.rollback_target(deployment("app:3"), HISTORY, 7)
    with pytest.raises(r.RevisionNotFound):
        r.rollback_target(deployment("app:3"), HISTORY, -1)
    with pytest.raises(r.RollbackRefused, match="no rollout history"):
        r.rollback_target(deployment("app:1"), HISTORY[:1], None)


def test_replica_sets_are_matched_by_template_ignoring_hash() -> None:
    assert r.live_replica_set(deployment("app:2"), HISTORY) is HISTORY[1]
    assert r.equal_ignore_hash(template("x", hash_label="1"), template("x", hash_label="2"))
    assert not r.equal_ignore_hash(template("x"), template("x", env={"A": "1"}))
    # empty lists/maps equal absent ones, as Go's semantic equality treats nil and empty alike
    with_empty = template("x")
    with_empty["spec"]["volumes"] = []
    assert r.equal_ignore_hash(with_empty, template("x"))


def test_rollback_annotations_follow_kubectl() -> None:
    dep = deployment(
        "app:3",
        annotations={
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "team": "payments",  # not on the RS: disappears, as with kubectl
            r.DESIRED_REPLICAS_ANNOTATION: "3",
        },
    )
    target = rs(
        "web-a",
        1,
        "app:1",
        "t",
        annotations={"kubernetes.io/change-cause": "v1", r.DESIRED_REPLICAS_ANNOTATION: "1", "owner": "x"},
    )
    assert r.rollback_annotations(dep, target) == {
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        r.REVISION_ANNOTATION: "3",
        r.DESIRED_REPLICAS_ANNOTATION: "3",
        "kubernetes.io/change-cause": "v1",
        "owner": "x",
    }


def test_patch_restores_template_without_hash_and_guards_resource_version() -> None:
    ops = r.rollback_patch(HISTORY[0]["spec"]["template"], {"a": "b"}, "100")
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "100"}
    assert ops[1]["value"]["metadata"]["labels"] == {"app": "web"}
    assert HISTORY[0]["spec"]["template"]["metadata"]["labels"][r.POD_TEMPLATE_HASH_LABEL] == "h-web-a"  # not mutated
    assert ops[2] == {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}


def test_template_diff_names_fields() -> None:
    diff = r.template_diff(template("app:1", env={"A": "1", "B": "2"}), template("app:2", env={"A": "1", "C": "3"}))
    assert diff == [
        {"path": "spec.containers[app].env[B].value", "current": "2", "target": None},
        {"path": "spec.containers[app].env[C].value", "current": None, "target": "3"},
        {"path": "spec.containers[app].image", "current": "app:1", "target": "app:2"},
    ]
    assert r.template_diff(template("x", hash_label="1"), template("x")) == []


def test_pruned_revision_names_the_ones_that_exist_and_the_limit() -> None:
    dep = deployment("app:3")
    dep["spec"]["revisionHistoryLimit"] = 2
    with pytest.raises(
        r.RevisionNotFound, match=r"revision 1 .*are 2, 3; older ones are pruned \(revisionHistoryLimit 2\)"
    ):
        r.rollback_target(dep, HISTORY[1:], 1)


def test_undo_plan_summarises_and_skips() -> None:
    plan = undo_plan(deployment("app:3"), HISTORY[1])
    assert (plan.from_revision, plan.to_revision, plan.skip) == (3, 2, False)
    assert plan.current_images == ["app:3"] and plan.target_images == ["app:2"]
    assert plan.target_uid == "uid-web-b" and "pod-template-hash" not in plan.target_template["metadata"]["labels"]
    assert undo_plan(deployment("app:2"), HISTORY[1]).skip is True


def test_undo_reports_render_the_plan_the_outcome_and_pod_reasons() -> None:
    plan = undo_plan(deployment("app:3"), HISTORY[1])
    changed = UndoResult.from_plan(
        plan,
        outcome="changed",
        summary="rolled back to revision 2",
        rollout={"api_errors": 3, "api_outage_seconds": 8.5},
    )
    text = result_markdown(changed, plan)
    assert text.startswith("### Rolled back\n") and "revision 3 → revision 2" in text
    assert "| `spec.containers[app].image` | `app:3` | `app:2` |" in text
    assert "3 failed calls, 8.5s" in text and "rolled back to revision 2" in text
    applied = changed.model_copy(
        update={"outcome": "unchanged", "applied_by": "run x", "summary": "already applied by run x"}
    )
    assert (
        result_markdown(applied, plan) == "### Undo `prod/web`: rollback already applied\n\nalready applied by run x\n"
    )
    failed = rollout_failed_markdown(plan, "it failed", {"web-1": ["app: ImagePullBackOff"], "web-2": []})
    assert (
        "FAILED" in failed
        and "- `web-1`: app: ImagePullBackOff" in failed
        and "- `web-2`: no problem reported" in failed
    )
    assert plan_markdown(plan, "Approve?").startswith("### Approve?")


@pytest.mark.parametrize(
    ("status", "generation", "done", "failed", "message"),
    [
        ({"observedGeneration": 4}, 5, False, False, "spec update"),
        ({"updatedReplicas": 1, "replicas": 3}, 5, False, False, "1 out of 3 new replicas"),
        ({"updatedReplicas": 3, "replicas": 4}, 5, False, False, "1 old replicas are pending"),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}, 5, False, False, "2 of 3 updated"),
        ({"updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}, 5, True, False, "successfully rolled out"),
        (
            {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}], "updatedReplicas": 1},
            5,
            False,
            True,
            "exceeded its progress deadline",
        ),
    ],
)
def test_rollout_state_like_kubectl(
    status: dict[str, Any], generation: int, done: bool, failed: bool, message: str
) -> None:
    dep = deployment("app:3")
    dep["metadata"]["generation"] = generation
    dep["status"] = {"observedGeneration": 5, **status}
    state = r.rollout_state(dep)
    assert (state.done, state.failed) == (done, failed)
    assert message in state.message


def test_default_wait_derives_from_progress_deadline() -> None:
    dep = deployment("app:3")
    assert r.default_wait_seconds(dep) == 630
    dep["spec"]["progressDeadlineSeconds"] = 60
    assert r.default_wait_seconds(dep) == 90


def test_selector_string() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["web", "api"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
        ],
    }
    assert r.label_selector_string(selector) == "a=1,b=2,tier in (api,web),x,!y"


def test_history_rows() -> None:
    rows = r.history(deployment("app:3"), [*HISTORY, rs("web-x", None, "junk", "t", annotations={})])
    assert [(row.revision, row.live) for row in rows] == [(0, False), (1, False), (2, False), (3, True)]
    assert rows[-1].row()["change_cause"] == "<none>"


def test_last_known_good_evidence() -> None:
    done = deployment("app:3", updatedReplicas=3, replicas=3, availableReplicas=3)
    stuck = deployment("app:3", updatedReplicas=1, replicas=4, availableReplicas=3)
    marked = rs("web-b", 2, "app:2", "t2", uid="u-b")
    marked["metadata"]["annotations"][r.ROLLOUT_COMPLETE_ANNOTATION] = "u-b 2026-01-01T00:00:00Z"
    copied = rs("web-a", 1, "app:1", "t1", uid="u-a")
    copied["metadata"]["annotations"][r.ROLLOUT_COMPLETE_ANNOTATION] = "u-b 2026-01-01T00:00:00Z"  # foreign uid
    live = rs("web-c", 3, "app:3", "t3")
    sets = [copied, marked, live]
    assert [c[0]["metadata"]["name"] for c in r.last_known_good_candidates(done, sets)] == ["web-c", "web-b"]
    assert [c[0]["metadata"]["name"] for c in r.last_known_good_candidates(stuck, sets)] == ["web-b"]
    full_old = rs("web-o", 2, "app:2", "t2", annotations={r.DESIRED_REPLICAS_ANNOTATION: "3"}, available=3)
    assert r.known_good_evidence(stuck, full_old, live) == "fully available now"
    assert r.known_good_evidence(stuck, rs("web-z", 2, "app:2", "t2"), live) is None


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="a revision must be at least 1"):
        UndoRequest(deployment="web", to_revision=0)
    with pytest.raises(ValueError, match="not both"):
        UndoRequest(deployment="web", to_revision=2, last_known_good=True)
    with pytest.raises(ValueError, match="cosign_public_key"):
        UndoRequest(deployment="web", last_known_good=True, verify_images=True)
    with pytest.raises(ValueError, match="deployment"):
        UndoRequest(deployment="Web!")


@pytest.mark.parametrize("bad", [True, False, "2", 2.0, 2**63, -1])
def test_revision_is_a_strict_int64(bad: Any) -> None:
    with pytest.raises(ValueError, match="to_revision"):
        UndoRequest.model_validate({"deployment": "web", "to_revision": bad})
    assert UndoRequest.model_validate({"deployment": "web", "to_revision": 2**63 - 1}).to_revision == 2**63 - 1


# -- never undo an undo --------------------------------------------------------------------------------------


def after_rollbook_rollback(request: str = "req-1") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """History 1, 2 (good), 3 (bad, live) rolled back by rollbook to 2: the controller renumbered web-b to 4."""
    restored = rs("web-b", 4, "app:2", "2026-01-01T00:00:02Z", available=3)
    sets = [HISTORY[0], restored, rs("web-c", 3, "app:3", "2026-01-01T00:00:03Z")]
    record = guard.record_details(
        from_revision=3, to_revision=2, target_template=restored["spec"]["template"], fingerprint=request
    )
    notes = {guard.PREFIX + k: v for k, v in record.items()}
    notes |= {guard.PREFIX + guard.RUN_NAME: "brave-fox", guard.PREFIX + guard.RUN_ID: "id-1"}
    dep = deployment("app:2", annotations={r.REVISION_ANNOTATION: "4", **notes})
    return dep, sets


def test_kubectl_previous_after_an_undo_is_the_bad_revision_again() -> None:
    dep, sets = after_rollbook_rollback()
    assert r.revision_of(r.rollback_target(dep, sets, None)) == 3  # what a memoryless undo would restore


def test_same_request_again_finds_its_rollback_applied() -> None:
    dep, sets = after_rollbook_rollback("req-1")
    decision = guard.rerun_verdict(dep, sets, to_revision=None, fingerprint="req-1")
    assert decision.verdict == "already-applied"
    assert decision.record is not None and decision.record.from_revision == 3 and decision.record.to_revision == 2
    assert "already applied by run brave-fox (id-1)" in decision.message


def test_explicit_revision_of_the_restored_one_is_applied_and_another_proceeds() -> None:
    dep, sets = after_rollbook_rollback()
    assert guard.rerun_verdict(dep, sets, to_revision=2, fingerprint="other").verdict == "already-applied"
    assert guard.rerun_verdict(dep, sets, to_revision=3, fingerprint="other").verdict == "proceed"
    assert guard.rerun_verdict(dep, sets, to_revision=1, fingerprint="req-1").verdict == "proceed"


def test_another_plain_undo_right_after_is_refused_naming_the_fix() -> None:
    dep, sets = after_rollbook_rollback()
    decision = guard.rerun_verdict(dep, sets, to_revision=None, fingerprint="someone-else")
    assert decision.verdict == "refuse"
    assert "'previous' now means revision 3" in decision.message
    assert "pass to_revision=N (revisions: 1, 3, 4; to_revision=3 restores" in decision.message
    assert guard.rerun_verdict(dep, sets, to_revision=None, fingerprint="").verdict == "refuse"


def test_the_record_stops_counting_once_the_template_changes() -> None:
    dep, sets = after_rollbook_rollback()
    dep["spec"]["template"] = template("app:5")  # a new deploy keeps the Deployment's annotations
    assert guard.rollback_in_place(dep) is None
    assert guard.rerun_verdict(dep, sets, to_revision=None, fingerprint="x").verdict == "proceed"
    # the controller adds defaults and the hash label; an empty field is the same template
    dep, _ = after_rollbook_rollback()
    dep["spec"]["template"]["metadata"]["labels"][r.POD_TEMPLATE_HASH_LABEL] = "abc"
    dep["spec"]["template"]["spec"]["volumes"] = []
    assert guard.rollback_in_place(dep) is not None


def test_a_malformed_record_is_ignored() -> None:
    dep, _ = after_rollbook_rollback()
    dep["metadata"]["annotations"][guard.PREFIX + guard.FROM_REVISION] = "three"
    assert guard.rollback_in_place(dep) is None


def test_the_undo_fingerprint_ignores_who_asks_and_why() -> None:
    """A colleague's re-run of a failed undo is the same request: it must finish that job, not undo it."""
    plain = UndoRequest.model_validate({"deployment": "web"})
    assert _fingerprint(plain, "shop") == _fingerprint(plain.model_copy(update={"wait_timeout_seconds": 900}), "shop")
    assert _fingerprint(plain, "shop") != _fingerprint(plain, "other")
    assert _fingerprint(plain, "shop") != _fingerprint(plain.model_copy(update={"to_revision": 1}), "shop")
    assert _fingerprint(plain, "shop") != _fingerprint(plain.model_copy(update={"last_known_good": True}), "shop")


def test_fingerprint_is_stable_and_order_free() -> None:
    assert guard.request_fingerprint({"a": 1, "b": None}) == guard.request_fingerprint({"b": None, "a": 1})
    assert guard.request_fingerprint({"a": 1}) != guard.request_fingerprint({"a": 2})
