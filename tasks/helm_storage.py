"""Clearing a release that an interrupted helm left pending, the one way helm's storage allows.

helm (default `secret` driver) keeps each revision in a Secret `sh.helm.release.v1.<release>.v<N>`: a `status`
label for its own queries, and under `data.release` the release as JSON, gzipped and base64-encoded, whose
`info.status` is what `helm history`, `helm status` and helm's "another operation is in progress" check read.
Marking a stuck revision failed rewrites both, exactly as helm itself does when an operation fails, guarded by
the Secret's resourceVersion (a concurrent writer wins and we refuse) and read back afterwards.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from typing import Any

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks import KubernetesCluster
from tasks.cluster import REQUEST_TIMEOUT_SECONDS
from tasks.helm_errors import HelmRevisionNotFound, ReleaseChanged
from tasks.policies import KUBE_API

_GZIP_MAGIC = b"\x1f\x8b"


def secret_name(release: str, revision: int) -> str:
    return f"sh.helm.release.v1.{release}.v{revision}"


def decode_release(data: str) -> dict[str, Any]:
    """helm's stored release from the Secret's `data.release` as the API returns it (base64 of helm's base64)."""
    raw = base64.b64decode(base64.b64decode(data))
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


def encode_release(release: dict[str, Any]) -> str:
    """The inverse of `decode_release`: gzip + base64 as helm writes it, base64 again for the API's `data`."""
    helm_text = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    return base64.b64encode(helm_text).decode()


class MarkedFailed(BaseModel):
    """What the storage says after marking, read back from the cluster."""

    secret: str
    revision: int
    previous_status: str
    status: str
    label_status: str
    description: str


def _latest_stored(core: k8s_client.CoreV1Api, namespace: str, release: str) -> int:
    secrets = core.list_namespaced_secret(
        namespace, label_selector=f"owner=helm,name={release}", _request_timeout=REQUEST_TIMEOUT_SECONDS
    ).items
    return max((int(((s.metadata and s.metadata.labels) or {}).get("version", 0)) for s in secrets), default=0)


def _read(core: k8s_client.CoreV1Api, namespace: str, name: str) -> tuple[Any, dict[str, Any]]:
    secret = core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS)
    return secret, decode_release(str((secret.data or {})["release"]))


@task(**KUBE_API)
def mark_revision_failed(
    cluster: KubernetesCluster, namespace: str, release: str, revision: int, *, expected_status: str, note: str
) -> MarkedFailed:
    """Mark the stuck `revision` failed (label and stored JSON), only if it is still the newest revision and
    still `expected_status`. Safe to retry: a revision already marked failed is reported as it is."""
    name = secret_name(release, revision)
    with cluster.api_client() as api:
        core = k8s_client.CoreV1Api(api)
        try:
            secret, stored = _read(core, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                raise HelmRevisionNotFound(
                    f"Secret {name} not found (is helm using its default `secret` storage driver?)",
                    release,
                    namespace,
                    revision,
                ) from None
            raise
        status = str((stored.get("info") or {}).get("status", ""))
        if status == "failed" and (secret.metadata.labels or {}).get("status") == "failed":
            description = str(stored["info"].get("description", ""))
            return MarkedFailed(
                secret=name,
                revision=revision,
                previous_status=status,
                status=status,
                label_status="failed",
                description=description,
            )
        newest = _latest_stored(core, namespace, release)
        if status != expected_status or newest != revision:
            found = f"revision {revision} is {status or 'unreadable'}, newest stored revision is {newest}"
            raise ReleaseChanged(f"not marked failed: {found} (expected {expected_status})", release, namespace)
        stored["info"]["status"] = "failed"
        stored["info"]["description"] = note[:500]
        secret.data["release"] = encode_release(stored)
        secret.metadata.labels = {**(secret.metadata.labels or {}), "status": "failed"}
        secret.metadata.labels["modifiedAt"] = str(int(dt.datetime.now(dt.UTC).timestamp()))
        try:  # the body carries the resourceVersion we read: a concurrent write makes this a 409
            core.replace_namespaced_secret(name, namespace, secret, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 409:
                raise ReleaseChanged(f"Secret {name} changed while marking it failed", release, namespace) from None
            raise
        after, stored_after = _read(core, namespace, name)
    result = MarkedFailed(
        secret=name,
        revision=revision,
        previous_status=status,
        status=str(stored_after["info"]["status"]),
        label_status=str((after.metadata.labels or {}).get("status", "")),
        description=str(stored_after["info"].get("description", "")),
    )
    if result.status != "failed" or result.label_status != "failed":
        raise ReleaseChanged(f"Secret {name} does not read back as failed: {result}", release, namespace)
    get_run_logger().warning("marked revision %d of %s in %s failed (was %s)", revision, release, namespace, status)
    return result
