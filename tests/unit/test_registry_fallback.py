"""The registry-outage rules: how references split, which workloads are stuck, when a mirror may stand in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rollbook import registry_fallback as rules
from rollbook.image_refs import BadImageReference, ImageReference, digest_of_image_id, registry_host
from tasks.workload_images import image_patch

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
PRIMARY, MIRROR = "reg.example.com:5000", "mirror.example.com"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("team/app:2", "docker.io", "team/app", "2", None),
        ("localhost/app", "localhost", "app", None, None),
        ("reg.example.com:5000/shop/api:1.0.0", PRIMARY, "shop/api", "1.0.0", None),
        (f"127.0.0.1:5000/rollbook/demo-app@{D1}", "127.0.0.1:5000", "rollbook/demo-app", None, D1),
        (f"ghcr.io/o/app:1@{D1}", "ghcr.io", "o/app", "1", D1),
    ],
)
def test_references_split_as_a_runtime_splits_them(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.reference == (digest or tag or "latest")


@pytest.mark.parametrize("text", ["", "App:1", "a b", "x;rm", "reg:5000/app@sha256:abc", 5])
def test_malformed_references_are_refused_with_the_text(text: Any) -> None:
    with pytest.raises(BadImageReference, match="not an image reference"):
        ImageReference.parse(text)


def test_a_fallback_pins_by_digest_on_the_mirror_and_never_by_tag() -> None:
    ref = ImageReference.parse(f"{PRIMARY}/shop/api:1.0.0")
    assert ref.pinned(D1, registry=MIRROR) == f"{MIRROR}/shop/api@{D1}"
    with pytest.raises(BadImageReference, match="not a sha256 digest"):
        ref.pinned("1.0.0", registry=MIRROR)


def test_registry_hosts_and_image_ids() -> None:
    assert registry_host("http://127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_host("Registry.Example.com/v2/") == "registry.example.com"
    assert digest_of_image_id(f"docker-pullable://reg/app@{D1}") == D1
    assert digest_of_image_id("sha256:abc") is None and digest_of_image_id("") is None


def _deployment(name: str, images: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "annotations": annotations or {},
        },
        "spec": {"template": {"spec": {"containers": [{"name": c, "image": i} for c, i in images.items()]}}},
    }


def _replica_set(deployment: str) -> dict[str, Any]:
    owner = {"kind": "Deployment", "uid": f"uid-{deployment}", "controller": True}
    return {"metadata": {"name": f"{deployment}-rs", "uid": f"rs-{deployment}", "ownerReferences": [owner]}}


def _pod(
    name: str,
    owner: str,
    image: str,
    reason: str | None,
    created: str = "2026-12-04T10:00:00Z",
    *,
    owner_uid: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if reason:
        status["containerStatuses"] = [{"name": "app", "state": {"waiting": {"reason": reason, "message": "pull"}}}]
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "ownerReferences": [{"kind": "ReplicaSet", "uid": owner_uid or f"rs-{owner}", "controller": True}],
        },
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": status,
    }


def _as(kind: rules.WorkloadKind, objects: list[dict[str, Any]]) -> list[tuple[rules.WorkloadKind, Any]]:
    return [(kind, o) for o in objects]


def test_statefulset_and_daemonset_pods_belong_to_the_controller_itself() -> None:
    image = f"{PRIMARY}/shop/db:16"
    db, agent = _deployment("db", {"app": image}), _deployment("agent", {"app": image})
    pods = [
        _pod("db-0", "db", image, "ImagePullBackOff", owner_uid="uid-db"),
        _pod("agent-x1", "agent", image, "ErrImagePull", owner_uid="uid-agent"),
        _pod("agent-x2", "agent", image, None, owner_uid="uid-agent"),
        _pod("stray", "other", image, "ImagePullBackOff", owner_uid="uid-other"),
    ]
    controllers = [*_as("StatefulSet", [db]), *_as("DaemonSet", [agent])]
    found = {w.name: w for w in rules.find_workloads(controllers, [], pods, [], primary=PRIMARY)}
    assert (found["db"].kind, [s.pod for s in found["db"].stuck]) == ("StatefulSet", ["db-0"])
    assert (found["agent"].kind, [s.pod for s in found["agent"].stuck]) == ("DaemonSet", ["agent-x1"])


def test_stuck_workloads_are_those_whose_pods_cannot_pull_from_the_primary() -> None:
    api, web, other = f"{PRIMARY}/shop/api:1.1.0", f"{PRIMARY}/shop/web:2", "docker.io/library/redis:7"
    deployments = [
        _deployment("api", {"app": api}),
        _deployment("web", {"app": web}),
        _deployment("cache", {"app": other}),
    ]
    pods = [
        _pod("api-1", "api", api, "ImagePullBackOff"),
        _pod("api-2", "api", api, "ErrImagePull", created="2026-12-04T09:59:00Z"),
        _pod("web-1", "web", web, None),
        _pod("cache-1", "cache", other, "ImagePullBackOff"),  # stuck, but on another registry: not ours to move
    ]
    events = [
        {
            "involvedObject": {"kind": "Pod", "name": "api-1"},
            "reason": "Failed",
            "firstTimestamp": "2026-12-04T10:00:05Z",
        }
    ]
    replica_sets = [_replica_set(d) for d in ("api", "web", "cache")]
    found = {
        w.name: w
        for w in rules.find_workloads(_as("Deployment", deployments), replica_sets, pods, events, primary=PRIMARY)
    }
    assert set(found) == {"api", "web"}
    assert found["api"].state == "stuck" and len(found["api"].stuck) == 2
    assert found["api"].since == "2026-12-04T09:59:00Z"  # api-2 has no event: its creation counts
    assert found["web"].state == "healthy"


def test_a_recorded_detour_is_found_even_when_no_image_is_on_the_primary_any_more() -> None:
    mirrored = f"{MIRROR}/shop/api@{D1}"
    record = rules.record_text(
        primary=PRIMARY, mirror=MIRROR, originals={"app": f"{PRIMARY}/shop/api:1"}, mirrored={"app": mirrored}
    )
    on_mirror = _deployment("api", {"app": mirrored}, {rules.FALLBACK_ANNOTATION: record})
    moved_on = _deployment("web", {"app": f"{MIRROR}/shop/api:2"}, {rules.FALLBACK_ANNOTATION: record})
    garbled = _deployment("old", {"app": mirrored}, {rules.FALLBACK_ANNOTATION: "{not json"})
    found = {
        w.name: w
        for w in rules.find_workloads(_as("Deployment", [on_mirror, moved_on, garbled]), [], [], [], primary=PRIMARY)
    }
    assert found["api"].state == "on-mirror"
    assert rules.switch_back_images(found["api"]) == {"app": f"{PRIMARY}/shop/api:1"}
    assert found["web"].state == "changed-since-fallback"  # someone deployed since: never switched back
    assert rules.switch_back_images(found["web"]) == {}
    assert found["old"].state == "record-unreadable" and found["old"].record == {"unreadable": "{not json"}


def test_digests_come_from_what_pods_report_having_pulled() -> None:
    pod = _pod("api-1", "api", f"{PRIMARY}/shop/api:1", None)
    pod["status"]["containerStatuses"] = [{"name": "app", "imageID": f"{PRIMARY}/shop/api@{D1}"}]
    assert rules.known_digests([pod]) == {f"{PRIMARY}/shop/api:1": D1}


def _switch(**kw: Any) -> rules.ImageSwitch:
    args: dict[str, Any] = {
        "mirror": MIRROR,
        "digest": D1,
        "source": "primary",
        "mirror_digest": D1,
        "mirror_detail": "",
        "signature": (True, "Verified OK"),
        **kw,
    }
    return rules.mirror_switch("app", f"{PRIMARY}/shop/api:1", **args)


def test_a_mirror_stands_in_only_for_the_same_digest_with_a_signature_that_verifies() -> None:
    assert _switch().mirror_ref == f"{MIRROR}/shop/api@{D1}"
    assert _switch(signature=None).mirror_ref == f"{MIRROR}/shop/api@{D1}"  # signatures not asked for
    unknown = _switch(digest=None, source=None)
    assert unknown.mirror_ref is None and "expected_digests" in unknown.refused
    lacking = _switch(mirror_digest=None, mirror_detail="its tag 1 is " + D2)
    assert lacking.mirror_ref is None and f"does not serve shop/api@{D1}" in lacking.refused and D2 in lacking.refused
    other = _switch(mirror_digest=D2)
    assert other.mirror_ref is None
    unsigned = _switch(signature=(False, "no signatures found"))
    assert unsigned.mirror_ref is None and "does not verify" in unsigned.refused and "no signatures" in unsigned.refused


def test_the_image_patch_is_guarded_and_sets_the_record_in_the_same_write() -> None:
    deployment = _deployment("api", {"app": "a", "side": "b"}, {"keep": "1", rules.FALLBACK_ANNOTATION: "x"})
    ops = image_patch(
        deployment, {"side": "m@" + D1}, {"rollbook.dev/action": "registry-fallback", rules.FALLBACK_ANNOTATION: None}
    )
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "m@" + D1} in ops
    assert {"op": "add", "path": "/metadata/annotations/rollbook.dev~1action", "value": "registry-fallback"} in ops
    assert {"op": "remove", "path": "/metadata/annotations/rollbook.dev~1registry-fallback"} in ops
    bare = _deployment("api", {"app": "a"})
    bare["metadata"].pop("annotations")
    assert {"op": "add", "path": "/metadata/annotations", "value": {}} in image_patch(bare, {}, {"k": "v"})
    assert json.loads(rules.record_text(primary="p", mirror="m", originals={}, mirrored={})) == {
        "mirror": "m",
        "mirrored": {},
        "originals": {},
        "primary": "p",
    }
