"""The cluster's objects by resource, namespace and name: what a snapshot holds and what a restore must bring back.

Every listable resource the API server's discovery names is listed as PartialObjectMetadata (names and
namespaces only), page by page: a Secret's data is never requested, and 5,000 objects cost a few MB. Events
are left out: they expire on their own and say nothing about what a cluster holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks import KubernetesCluster
from rollbook.etcd_backup import VOLATILE_RESOURCES, Inventory, inventory_from_listing
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.listing import PAGE_SIZE, PAGE_TIMEOUT_SECONDS
from tasks.policies import KUBE_API, KUBE_LIST

# served by the API server itself, not stored in etcd (and not listable at an etcd revision)
NOT_IN_ETCD = frozenset({"componentstatuses"})
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class _Meta(msgspec.Struct, frozen=True):
    name: str = ""
    namespace: str = ""


class _Item(msgspec.Struct, frozen=True):
    metadata: _Meta = _Meta()


class _ListMeta(msgspec.Struct, frozen=True):
    continue_: str = msgspec.field(default="", name="continue")


class _Page(msgspec.Struct, frozen=True):
    items: list[_Item] | None = None
    metadata: _ListMeta = _ListMeta()


_PAGE = msgspec.json.Decoder(_Page)


def _get(api: k8s_client.ApiClient, path: str, *, accept: str = "application/json", **query: str) -> bytes:
    method, url, headers, body, post = api.param_serialize(
        method="GET", resource_path=path, query_params=list(query.items()), header_params={"Accept": accept},
        auth_settings=["BearerToken"],
    )  # fmt: skip
    resp = api.call_api(method, url, headers, body, post, _request_timeout=PAGE_TIMEOUT_SECONDS)
    resp.read()
    if int(resp.status) >= 400:
        raise ApiException(status=int(resp.status), reason=f"GET {path}", http_resp=resp)
    data: bytes = resp.data or b""
    return data


def _resources(api: k8s_client.ApiClient) -> Iterator[tuple[str, str]]:
    """(listing path, inventory name) for each listable top-level resource, one version per group (preferred)."""
    group_versions = [("", "/api/v1")]
    for group in json.loads(_get(api, "/apis")).get("groups", []):
        preferred = group.get("preferredVersion") or group["versions"][0]
        group_versions.append((group["name"], f"/apis/{preferred['groupVersion']}"))
    for group, base in group_versions:
        for res in json.loads(_get(api, base)).get("resources", []):
            name = res["name"]
            if "/" in name or "list" not in res.get("verbs", []):
                continue
            label = f"{name}.{group}" if group else name
            if label not in VOLATILE_RESOURCES and label not in NOT_IN_ETCD:
                yield f"{base}/{name}", label


def _names(api: k8s_client.ApiClient, path: str, resource_version: str | None) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    token = ""
    while True:
        query: dict[str, Any] = {"limit": str(PAGE_SIZE)}
        if token:
            query["continue"] = token  # the token carries the resource version of the first page
        elif resource_version:
            query.update(resourceVersion=resource_version, resourceVersionMatch="Exact")
        page = _PAGE.decode(_get(api, path, accept=_METADATA_LIST, **query))
        items += [(i.metadata.namespace, i.metadata.name) for i in page.items or []]
        token = page.metadata.continue_
        if not token:
            return items


@task(**KUBE_LIST)
def cluster_inventory(cluster: KubernetesCluster, resource_version: str | None = None) -> Inventory:
    """Names of every object per resource and namespace: now, or exactly as of `resource_version` (an etcd
    revision: the API server then reads etcd at that revision, so the inventory is exactly the snapshot's)."""
    with cluster.api_client() as api:
        listing = {label: _names(api, path, resource_version) for path, label in _resources(api)}
    return inventory_from_listing({label: items for label, items in listing.items() if items})


@task(**KUBE_API)
def kube_system_uid(cluster: KubernetesCluster) -> str:
    """The kube-system namespace's UID: created once per cluster, so it tells one cluster from another."""
    with cluster.api_client() as api:
        ns = k8s_client.CoreV1Api(api).read_namespace("kube-system", _request_timeout=REQUEST_TIMEOUT_SECONDS)
    return str(ns.metadata.uid) if ns.metadata else ""
