"""The image pre-pull rules: which images to keep warm, the DaemonSet that keeps them, and what a run changes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from rollbook import prepull as rules
from rollbook.change import ANNOTATION_PREFIX
from rollbook.reports.prepull import PrepullResult, SourceRow, plan_markdown

D1 = "sha256:" + "1" * 64
REG = "reg.example.com:5000"
SLEEP = "docker.io/library/busybox:1.36.1"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _deployment(name: str, containers: list[str], init: list[str] | None = None, ns: str = "shop") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(containers)]}
    if init is not None:
        spec["initContainers"] = [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"spec": spec}},
    }


def _manifest(images: list[str], **kw: Any) -> dict[str, Any]:
    return rules.daemonset_manifest(namespace="infra", name="cache", images=images, sleep_image=SLEEP, **kw)


def _live(manifest: dict[str, Any], *, version: str = "42", **labels: str) -> dict[str, Any]:
    """The manifest as the API server would return it: a resourceVersion, defaults, status."""
    live = json.loads(json.dumps(manifest))
    live["metadata"]["resourceVersion"] = version
    live["metadata"]["labels"].update(labels)
    live["spec"]["revisionHistoryLimit"] = 10
    live["status"] = {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3}
    return live


def test_desired_images_are_deduplicated_sorted_with_init_containers_and_digests_kept() -> None:
    pinned = f"{REG}/shop/api@{D1}"
    workloads = [
        _deployment("web", [f"{REG}/shop/web:2", f"{REG}/shop/web:2"], init=[f"{REG}/shop/migrate:2"]),
        _deployment("api", [pinned, "nginx:1.25"], ns="api"),
        _deployment("web-copy", [f"{REG}/shop/web:2"]),
    ]
    assert rules.desired_images(workloads) == sorted(
        [f"{REG}/shop/migrate:2", f"{REG}/shop/web:2", pinned, "nginx:1.25"]
    )


def test_no_workload_means_no_images_and_a_manifest_without_images_is_refused() -> None:
    assert rules.desired_images([]) == []
    with pytest.raises(rules.PrepullRefused, match="no images"):
        _manifest([])
    with pytest.raises(rules.PrepullRefused, match="split the sources"):
        _manifest([f"app:{i}" for i in range(rules.MAX_IMAGES + 1)])


@pytest.mark.parametrize("bad", ["", "App:1", "a b", "x;rm -rf /", f"{REG}/app@sha256:abc"])
def test_an_invalid_reference_is_refused_naming_the_workload(bad: str) -> None:
    with pytest.raises(rules.PrepullRefused, match=r"deployment shop/web has an image .* nothing changed"):
        rules.desired_images([_deployment("web", [f"{REG}/ok:1", bad])])


def test_container_names_are_dns_labels_deterministic_and_distinct() -> None:
    images = [
        f"{REG}/shop/web:2",
        f"{REG}/shop/web:3",
        f"{REG}/other/web:2",
        f"{REG}/shop/web@{D1}",
        "nginx",
        "x/" + "very-long-repository-name" * 5 + ":Tag_With.UPPER" + "x" * 100,
    ]
    names = [rules.container_name(i) for i in images]
    assert all(DNS_LABEL.fullmatch(n) and len(n) <= 63 for n in names), names
    assert len(set(names)) == len(names)
    assert names == [rules.container_name(i) for i in images]
    assert names[0].startswith("web-2-") and names[4].startswith("nginx-")
    assert rules.COPY_CONTAINER not in names


def test_the_manifest_runs_one_sleeping_container_per_image_on_every_node() -> None:
    images = [f"{REG}/shop/api@{D1}", f"{REG}/shop/web:2"]
    manifest = _manifest(images, sleep_binary="/bin/busybox-sleep")
    pod = manifest["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == images
    assert [c["name"] for c in pod["containers"]] == [rules.container_name(i) for i in images]
    for container in [*pod["containers"], *pod["initContainers"]]:
        assert container["resources"]["requests"] == {"cpu": "1m", "memory": "4Mi"}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for container in pod["containers"]:
        assert container["command"] == [rules.SLEEP_COPY, rules.SLEEP_SECONDS]
        assert container["volumeMounts"] == [
            {"name": rules.SLEEP_VOLUME, "mountPath": rules.SLEEP_DIR, "readOnly": True}
        ]
        assert container["imagePullPolicy"] == "IfNotPresent"
    [copy] = pod["initContainers"]
    assert copy["image"] == SLEEP and copy["command"] == ["cp", "/bin/busybox-sleep", rules.SLEEP_COPY]
    assert pod["volumes"] == [{"name": rules.SLEEP_VOLUME, "emptyDir": {"sizeLimit": "32Mi"}}]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["automountServiceAccountToken"] is False and "nodeSelector" not in pod
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_manifest_carries_rollbooks_labels_the_image_list_and_the_node_selector() -> None:
    manifest = _manifest([f"{REG}/shop/web:2"], node_selector={"pool": "web", "kubernetes.io/os": "linux"})
    meta = manifest["metadata"]
    assert (meta["namespace"], meta["name"], manifest["kind"]) == ("infra", "cache", "DaemonSet")
    assert meta["labels"] == {
        "app.kubernetes.io/name": "cache",
        "app.kubernetes.io/managed-by": "rollbook",
        "rollbook.dev/role": "image-prepull",
    }
    assert json.loads(meta["annotations"][rules.IMAGES_ANNOTATION]) == [f"{REG}/shop/web:2"]
    assert manifest["spec"]["selector"]["matchLabels"] == rules.selector_labels("cache")
    template = manifest["spec"]["template"]
    assert rules.selector_labels("cache").items() <= template["metadata"]["labels"].items()
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "web"}


def test_the_manifest_is_the_same_for_the_same_request() -> None:
    images = [f"{REG}/shop/web:2"]
    assert _manifest(images) == _manifest(list(images))
    assert rules.spec_hash(_manifest(images)["spec"]) != rules.spec_hash(_manifest(images, sleep_binary="/x")["spec"])


def test_diff_against_no_daemonset_creates_every_image() -> None:
    desired = _manifest(["b:1", "a:1"])
    change = rules.diff(None, desired)
    assert change.create and change.added == ["a:1", "b:1"] and change.resource_version is None
    assert not change.unchanged


def test_diff_with_the_same_images_and_settings_is_unchanged() -> None:
    desired = _manifest(["a:1", "b:1"])
    change = rules.diff(_live(desired), desired)
    assert change.unchanged and change.kept == ["a:1", "b:1"] and change.resource_version == "42"
    assert rules.written_as_desired(_live(desired), desired)


def test_diff_names_the_images_added_and_removed() -> None:
    live = _live(_manifest(["app:1.0.0", "db:5"]))
    change = rules.diff(live, _manifest(["app:1.1.0", "db:5"]))
    assert (change.added, change.removed, change.kept) == (["app:1.1.0"], ["app:1.0.0"], ["db:5"])
    assert not change.unchanged and not change.create and not change.settings_changed


def test_diff_sees_changed_settings_with_the_same_images() -> None:
    live = _live(_manifest(["a:1"]))
    change = rules.diff(live, _manifest(["a:1"], node_selector={"pool": "web"}))
    assert change.settings_changed and not change.unchanged and change.added == change.removed == []


def test_a_hand_edited_image_is_a_difference_even_with_the_recorded_hash() -> None:
    desired = _manifest(["a:1"])
    live = _live(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "a:2"
    change = rules.diff(live, desired)
    assert (change.added, change.removed) == (["a:1"], ["a:2"])


def test_a_daemonset_rollbook_did_not_write_is_refused() -> None:
    live = _live(_manifest(["a:1"]))
    del live["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    with pytest.raises(rules.PrepullRefused, match="not rollbook's image pre-pull"):
        rules.diff(live, _manifest(["a:1"]))


def test_a_replacement_keeps_others_metadata_drops_rollbooks_old_audit_and_is_guarded() -> None:
    live = _live(_manifest(["a:1"]), team="infra")
    live["metadata"]["annotations"].update({"note": "keep me", f"{ANNOTATION_PREFIX}reason": "old reason"})
    audit = {f"{ANNOTATION_PREFIX}action": "image-prepull"}
    body = rules.replacement(live, _manifest(["a:2"]), audit)
    notes = body["metadata"]["annotations"]
    assert notes["note"] == "keep me" and f"{ANNOTATION_PREFIX}reason" not in notes
    assert notes[f"{ANNOTATION_PREFIX}action"] == "image-prepull"
    assert json.loads(notes[rules.IMAGES_ANNOTATION]) == ["a:2"]
    assert body["metadata"]["labels"]["team"] == "infra" and body["metadata"]["resourceVersion"] == "42"
    created = rules.with_audit(_manifest(["a:2"]), audit)
    assert created["metadata"]["annotations"][f"{ANNOTATION_PREFIX}action"] == "image-prepull"
    assert "resourceVersion" not in created["metadata"]


@pytest.mark.parametrize(
    ("status", "generation", "done"),
    [
        (
            {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3, "observedGeneration": 2},
            2,
            True,
        ),
        (
            {"desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberReady": 3, "observedGeneration": 2},
            2,
            False,
        ),
        (
            {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 2, "observedGeneration": 2},
            2,
            False,
        ),
        (
            {"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3, "observedGeneration": 1},
            2,
            False,
        ),
        ({}, 1, False),
    ],
)
def test_readiness_is_kubectls_rollout_status(status: dict[str, int], generation: int, done: bool) -> None:
    state = rules.readiness({"metadata": {"generation": generation}, "status": status})
    assert state.done is done
    assert ("not seen the latest spec" in state.message) is (status.get("observedGeneration", 0) < generation)


def test_the_plan_lists_each_image_added_removed_and_kept() -> None:
    result = PrepullResult(
        outcome="planned",
        summary="",
        namespace="infra",
        name="cache",
        images=["app:1.1.0", "db:5"],
        added=["app:1.1.0"],
        removed=["app:1.0.0"],
        sources=[SourceRow(namespace="shop", selector={"app": "web"}, deployments=["web"])],
    )
    text = plan_markdown(result, "Update?")
    assert "| `app:1.1.0` | add |" in text and "| `app:1.0.0` | remove |" in text and "| `db:5` | keep |" in text
    assert "`app=web`" in text and "web" in text
