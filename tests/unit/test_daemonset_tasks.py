"""The pre-pull DaemonSet tasks against a faked API: guarded writes, a 409 on create, and the rollout wait's
deadline naming the pods not ready (the kube client replaced by a fake that keeps one DaemonSet)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from rollbook import prepull as rules
from tasks import daemonsets
from tasks.kube import ConcurrentChange

AUDIT = {"rollbook.dev/action": "image-prepull"}


class FakeCluster:
    @contextmanager
    def api_client(self) -> Iterator[object]:
        yield object()


class FakeApps:
    """One namespace's DaemonSets, as the API server keeps them: resourceVersion bumped on each write."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []
        self.create_conflict_with: dict[str, Any] | None = None
        self.reads: list[dict[str, Any] | None] = []  # when set, each read answers the next one instead

    def __call__(self, _api: object) -> FakeApps:
        return self

    def _answer(self, body: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(data=json.dumps(body).encode())

    def read_namespaced_daemon_set(self, name: str, namespace: str, **_: Any) -> SimpleNamespace:
        obj = self.reads.pop(0) if self.reads else self.stored.get(name)
        if obj is None:
            raise ApiException(status=404)
        return self._answer(obj)

    def create_namespaced_daemon_set(self, namespace: str, body: dict[str, Any], **_: Any) -> SimpleNamespace:
        self.writes.append("create")
        if self.create_conflict_with is not None:
            self.stored[body["metadata"]["name"]] = self.create_conflict_with
            raise ApiException(status=409)
        stored = {**body, "metadata": {**body["metadata"], "resourceVersion": "1", "generation": 1}}
        self.stored[body["metadata"]["name"]] = stored
        return self._answer(stored)

    def replace_namespaced_daemon_set(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> SimpleNamespace:
        self.writes.append("replace")
        current = self.stored[name]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        version = str(int(current["metadata"]["resourceVersion"]) + 1)
        stored = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
        self.stored[name] = stored
        return self._answer(stored)


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> FakeApps:
    fake = FakeApps()
    monkeypatch.setattr(daemonsets.k8s_client, "AppsV1Api", fake)
    monkeypatch.setattr(daemonsets, "namespace_exists", lambda api, namespace: True)
    monkeypatch.setattr(daemonsets, "get_run_logger", lambda: logging.getLogger("test"))
    return fake


def _desired(images: list[str]) -> dict[str, Any]:
    return rules.daemonset_manifest(namespace="infra", name="cache", images=images, sleep_image="busybox:1.36.1")


def test_create_then_a_retry_finds_its_own_write_and_writes_nothing(apps: FakeApps) -> None:
    desired = _desired(["app:1"])
    first = daemonsets.write_daemonset.fn(FakeCluster(), desired, AUDIT, None)
    assert first["metadata"]["annotations"]["rollbook.dev/action"] == "image-prepull"
    again = daemonsets.write_daemonset.fn(FakeCluster(), desired, AUDIT, None)
    assert apps.writes == ["create"] and again["metadata"]["resourceVersion"] == "1"


def test_a_409_on_create_is_already_there_when_it_is_the_desired_daemonset(apps: FakeApps) -> None:
    desired = _desired(["app:1"])
    apps.create_conflict_with = {**desired, "metadata": {**desired["metadata"], "resourceVersion": "7"}}
    apps.reads = [None]  # absent at the first read, there when created: our own lost attempt
    written = daemonsets.write_daemonset.fn(FakeCluster(), desired, AUDIT, None)
    assert written["metadata"]["resourceVersion"] == "7"


def test_a_409_on_create_for_another_daemonset_is_a_concurrent_change(apps: FakeApps) -> None:
    apps.create_conflict_with = {**_desired(["other:1"]), "metadata": {"name": "cache", "resourceVersion": "7"}}
    apps.reads = [None]
    with pytest.raises(ConcurrentChange, match="while it was being written"):
        daemonsets.write_daemonset.fn(FakeCluster(), _desired(["app:1"]), AUDIT, None)


def test_a_replace_is_guarded_by_the_planned_resource_version(apps: FakeApps) -> None:
    daemonsets.write_daemonset.fn(FakeCluster(), _desired(["app:1"]), AUDIT, None)
    with pytest.raises(ConcurrentChange, match="after it was planned"):
        daemonsets.write_daemonset.fn(FakeCluster(), _desired(["app:2"]), AUDIT, "0")
    replaced = daemonsets.write_daemonset.fn(FakeCluster(), _desired(["app:2"]), AUDIT, "1")
    assert rules.live_images(replaced) == ["app:2"] and apps.writes == ["create", "replace"]


def test_reading_an_absent_daemonset_is_none(apps: FakeApps) -> None:
    assert daemonsets.read_daemonset.fn(FakeCluster(), "infra", "cache") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.5)


def test_the_wait_ends_when_every_node_is_updated_and_ready_and_names_the_pods_at_its_deadline(
    apps: FakeApps, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(daemonsets.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(daemonsets.time, "sleep", clock.sleep)
    desired = _desired(["app:1"])
    stored = {**desired, "metadata": {**desired["metadata"], "uid": "u1", "resourceVersion": "1", "generation": 1}}
    stored["status"] = {"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3}
    stored["status"]["numberReady"] = 2
    apps.stored["cache"] = stored
    stuck_pod = {
        "metadata": {"name": "cache-x", "ownerReferences": [{"uid": "u1", "controller": True}]},
        "spec": {"nodeName": "node-2", "containers": [{"image": "app:1"}]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "ready": False, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "x"}}}
            ],
        },
    }
    monkeypatch.setattr(daemonsets, "list_all", lambda *a, **k: [stuck_pod])
    with pytest.raises(daemonsets.DaemonSetNotReady) as failed:
        daemonsets.wait_for_daemonset.fn(FakeCluster(), "infra", "cache", 30.0)
    message = str(failed.value)
    assert "within 30s" in message and "2/3 ready" in message
    assert "pod cache-x on node node-2" in message and "ImagePullBackOff" in message

    stored["status"]["numberReady"] = 3
    done = daemonsets.wait_for_daemonset.fn(FakeCluster(), "infra", "cache", 30.0)
    assert (done["desired"], done["updated"], done["ready"]) == (3, 3, 3)
