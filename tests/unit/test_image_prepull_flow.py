"""The image-prepull flow on the test Prefect server, against a faked API (Deployments and one DaemonSet kept
in memory, every write rolled out at once on 3 nodes): plan, create, unchanged re-run, follow a changed image,
refuse bad input. The sandbox drill is tests/integration/test_image_prepull.py."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from flows.image_prepull import NoImages, PrepullRequest, PrepullSource, image_prepull
from rollbook import prepull as rules
from rollbook.change import ChangeControls, subflow_result
from tasks import daemonsets

flow_module = importlib.import_module("flows.image_prepull")  # `flows.image_prepull` is also the flow's name
CONTROLS = ChangeControls(reason="keep images warm", requested_by="pytest")


class FakeCluster:
    namespace = "default"

    @contextmanager
    def api_client(self) -> Iterator[object]:
        yield object()


class FakeApi:
    """Deployments by namespace, one DaemonSet store; a write is rolled out at once on 3 nodes."""

    def __init__(self) -> None:
        self.deployments: dict[str, list[dict[str, Any]]] = {}
        self.daemonsets: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    def __call__(self, _api: object) -> FakeApi:
        return self

    def list_namespaced_deployment(self, namespace: str, **_: Any) -> None:
        raise AssertionError("listed through list_all")

    def read_namespaced_daemon_set(self, name: str, namespace: str, **_: Any) -> SimpleNamespace:
        if name not in self.daemonsets:
            raise ApiException(status=404)
        return SimpleNamespace(data=json.dumps(self.daemonsets[name]).encode())

    def _store(self, body: dict[str, Any], version: int) -> SimpleNamespace:
        generation = version
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(version), "generation": generation}}
        body["status"] = {
            "observedGeneration": generation,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberReady": 3,
        }
        self.daemonsets[body["metadata"]["name"]] = body
        return SimpleNamespace(data=json.dumps(body).encode())

    def create_namespaced_daemon_set(self, namespace: str, body: dict[str, Any], **_: Any) -> SimpleNamespace:
        self.writes.append("create")
        return self._store(body, 1)

    def replace_namespaced_daemon_set(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> SimpleNamespace:
        self.writes.append("replace")
        return self._store(body, int(body["metadata"]["resourceVersion"]) + 1)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(daemonsets.k8s_client, "AppsV1Api", fake)
    monkeypatch.setattr(daemonsets, "namespace_exists", lambda _api, namespace: namespace in fake.deployments)

    def list_all(_fn: Any, namespace: str, label_selector: str = "", **_: Any) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        return [
            d
            for d in fake.deployments.get(namespace, [])
            if wanted.items() <= (d["metadata"].get("labels") or {}).items()
        ]

    monkeypatch.setattr(daemonsets, "list_all", list_all)
    monkeypatch.setattr(flow_module, "resolve_cluster", lambda *_: FakeCluster())
    return fake


def _deployment(name: str, image: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name, **labels}},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def _request(**kw: Any) -> PrepullRequest:
    return PrepullRequest(
        kubeconfig_path="/nonexistent/kubeconfig",
        namespace="infra",
        sources=[PrepullSource(namespace="shop", selector={"warm": "yes"})],
        sleep_image="busybox:1.36.1",
        **kw,
    )


def test_plan_create_unchanged_and_follow_a_changed_image(api: FakeApi) -> None:
    api.deployments = {
        "shop": [
            _deployment("web", "reg.example.com/shop/web:1", warm="yes"),
            _deployment("api", "reg.example.com/shop/api:1", warm="yes"),
            _deployment("batch", "reg.example.com/shop/batch:1"),
        ],
        "infra": [],
    }
    planned = subflow_result(image_prepull(_request(), CONTROLS.model_copy(update={"plan": True})))
    assert planned.outcome == "planned" and planned.created and api.writes == []
    assert planned.added == ["reg.example.com/shop/api:1", "reg.example.com/shop/web:1"]

    first = subflow_result(image_prepull(_request(), CONTROLS))
    assert first.outcome == "changed" and api.writes == ["create"]
    assert (first.nodes_desired, first.nodes_ready) == (3, 3)
    stored = api.daemonsets[rules.DEFAULT_NAME]
    assert stored["metadata"]["annotations"]["rollbook.dev/requested-by"] == "pytest"
    assert rules.live_images(stored) == first.images

    second = subflow_result(image_prepull(_request(), CONTROLS))
    assert second.outcome == "unchanged" and api.writes == ["create"]

    api.deployments["shop"][0] = _deployment("web", "reg.example.com/shop/web:2", warm="yes")
    third = subflow_result(image_prepull(_request(), CONTROLS))
    assert third.outcome == "changed" and api.writes == ["create", "replace"]
    assert (third.added, third.removed) == (["reg.example.com/shop/web:2"], ["reg.example.com/shop/web:1"])


def test_no_matching_deployment_is_refused_and_writes_nothing(api: FakeApi) -> None:
    api.deployments = {"shop": [_deployment("web", "reg.example.com/shop/web:1")], "infra": []}
    with pytest.raises(NoImages, match=r"no Deployment matched shop \(warm=yes\); nothing changed"):
        image_prepull(_request(), CONTROLS)
    assert api.writes == [] and api.daemonsets == {}


def test_a_daemonset_of_someone_else_is_refused(api: FakeApi) -> None:
    api.deployments = {"shop": [_deployment("web", "reg.example.com/shop/web:1", warm="yes")], "infra": []}
    api.daemonsets[rules.DEFAULT_NAME] = {"metadata": {"name": rules.DEFAULT_NAME, "resourceVersion": "5"}}
    with pytest.raises(rules.PrepullRefused, match="not rollbook's image pre-pull"):
        image_prepull(_request(), CONTROLS)
    assert api.writes == []
