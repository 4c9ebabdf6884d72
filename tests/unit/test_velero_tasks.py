"""tasks.velero against a fake CustomObjectsApi: idempotent creates, bounded waits, clear errors."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from rollbook.velero import VeleroRefused
from tasks import velero


class FakeCluster:
    @contextmanager
    def api_client(self) -> Iterator[object]:
        yield object()


class FakeCustom:
    def __init__(self) -> None:
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self.creates = 0
        self.deleted: list[str] = []

    def __call__(self, _api: object) -> FakeCustom:
        return self

    def get_namespaced_custom_object(self, _g: str, _v: str, _ns: str, plural: str, name: str, **_: Any) -> Any:
        if (plural, name) not in self.store:
            raise ApiException(status=404)
        return self.store[(plural, name)]

    def create_namespaced_custom_object(self, _g: str, _v: str, _ns: str, plural: str, body: Any, **_: Any) -> Any:
        key = (plural, body["metadata"]["name"])
        if key in self.store:
            raise ApiException(status=409)
        self.creates += 1
        self.store[key] = body
        if plural == "downloadrequests":
            body["status"] = {"phase": "Processed", "downloadURL": "http://127.0.0.1:1/signed"}
        return body

    def delete_namespaced_custom_object(self, _g: str, _v: str, _ns: str, plural: str, name: str, **_: Any) -> None:
        self.deleted.append(name)


@pytest.fixture
def custom(monkeypatch: pytest.MonkeyPatch) -> FakeCustom:
    fake = FakeCustom()
    monkeypatch.setattr(velero.k8s_client, "CustomObjectsApi", fake)
    monkeypatch.setattr(velero, "POLL_SECONDS", 0.01)
    return fake


def test_create_is_idempotent_by_name(custom: FakeCustom) -> None:
    cluster: Any = FakeCluster()
    made, created = velero.create_velero_object.fn(cluster, "velero", "Backup", "b1", {"ttl": "1h0m0s"}, {"a": "b"})
    assert created and made["metadata"]["annotations"] == {"a": "b"}
    again, created = velero.create_velero_object.fn(cluster, "velero", "Backup", "b1", {"ttl": "2h0m0s"}, {})
    assert not created and again["spec"] == {"ttl": "1h0m0s"} and custom.creates == 1


def test_wait_returns_a_final_phase_and_times_out_naming_the_last_one(custom: FakeCustom) -> None:
    cluster: Any = FakeCluster()
    custom.store[("backups", "done")] = {"status": {"phase": "PartiallyFailed"}}
    assert velero.wait_for_phase.fn(cluster, "velero", "backups", "done", 1)["status"]["phase"] == "PartiallyFailed"
    custom.store[("backups", "slow")] = {"status": {"phase": "InProgress"}}
    with pytest.raises(TimeoutError, match="backups/slow still InProgress after 0s"):
        velero.wait_for_phase.fn(cluster, "velero", "backups", "slow", 0.05)
    custom.store[("backups", "new")] = {}
    with pytest.raises(TimeoutError, match="is the velero server running"):
        velero.wait_for_phase.fn(cluster, "velero", "backups", "new", 0.05)


def test_storage_location_must_exist_and_be_available(custom: FakeCustom) -> None:
    cluster: Any = FakeCluster()
    with pytest.raises(VeleroRefused, match="storage location 'default' not found in namespace 'velero'"):
        velero.storage_location.fn(cluster, "velero", "default")
    custom.store[("backupstoragelocations", "default")] = {"status": {"phase": "Unavailable", "message": "no bucket"}}
    with pytest.raises(VeleroRefused, match="is Unavailable: no bucket"):
        velero.storage_location.fn(cluster, "velero", "default")


def test_resource_list_comes_from_a_download_request_which_is_deleted(
    custom: FakeCustom, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = {"v1/ConfigMap": ["shop/settings"]}

    class Response:
        def __enter__(self) -> Response:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def read(self) -> bytes:
            return gzip.compress(json.dumps(listing).encode())

    seen: list[str] = []
    monkeypatch.setattr(velero.urllib.request, "urlopen", lambda url, timeout: seen.append(url) or Response())
    assert velero.backup_resource_list.fn(FakeCluster(), "velero", "nightly") == listing  # type: ignore[arg-type]
    assert seen == ["http://127.0.0.1:1/signed"] and len(custom.deleted) == 1
    (plural, _name), body = next(iter(custom.store.items()))
    assert plural == "downloadrequests" and body["spec"]["target"] == {"kind": "BackupResourceList", "name": "nightly"}
