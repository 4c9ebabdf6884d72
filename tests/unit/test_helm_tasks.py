"""Helm task plumbing that needs no cluster: error classification, retry decisions, inline kubeconfigs, helm's
release storage encoding, release membership, and the pre-checks of rollback and upgrade."""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyhelm3
import pytest

from blocks import KubernetesCluster
from rollbook import pods
from rollbook.helm_releases import RevisionInfo
from tasks.helm_changes import _already_rolled_back, _check_upgrade_start
from tasks.helm_cli import kubeconfig_file
from tasks.helm_errors import (
    HelmOperationFailed,
    HelmRevisionNotFound,
    HelmUnavailable,
    ReleaseBusy,
    ReleaseChanged,
    ReleaseNotFound,
    classify,
)
from tasks.helm_storage import decode_release, encode_release, secret_name
from tasks.policies import HELM_CHANGE, HELM_READ, KUBE_API, retry_declared
from tasks.release_workloads import _is_cause, belongs_to


def _error(stderr: str, cls: type[pyhelm3.errors.Error] = pyhelm3.errors.Error) -> pyhelm3.errors.Error:
    return cls(1, b"", stderr.encode())


@pytest.mark.parametrize(
    ("stderr", "revision", "expected"),
    [
        ("Error: release: not found", None, ReleaseNotFound),
        ("Error: release: not found", 7, HelmRevisionNotFound),
        ("Error: release has no 99 version", 99, HelmRevisionNotFound),
        ("Error: another operation (install/upgrade/rollback) is in progress", None, ReleaseBusy),
        ('Error: Get "https://127.0.0.1:6443/api": dial tcp 127.0.0.1:6443: connect: connection refused', None,
         HelmUnavailable),
        ("Error: UPGRADE FAILED: resource Deployment/x/y not ready ... context deadline exceeded", None,
         HelmOperationFailed),
    ],
)  # fmt: skip
def test_classify(stderr: str, revision: int | None, expected: type[Exception]) -> None:
    error = classify(_error(stderr), "op", "web", "prod", revision)
    assert type(error) is expected
    assert "release 'web' in namespace 'prod'" in str(error)
    if revision is not None:
        assert f"revision {revision}" in str(error)
    assert pickle.loads(pickle.dumps(error)).args == error.args  # Prefect may pickle failed states


def test_a_busy_release_names_the_way_out() -> None:
    """A helm killed mid-operation leaves the release pending; every refusal says how to recover it."""
    error = classify(_error("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress"),
                     "dry-run upgrade", "web", "prod")  # fmt: skip
    assert "nothing changed" in str(error) and "helm-rollback runbook with request.recover_pending=true" in str(error)


def _state(exc: BaseException) -> SimpleNamespace:
    return SimpleNamespace(data=exc)


def test_helm_policies_retry_only_what_may_heal() -> None:
    for policy in (HELM_READ, HELM_CHANGE):
        assert policy["retry_condition_fn"] is retry_declared
    assert retry_declared(None, None, _state(HelmUnavailable("x", "r", "n")))
    assert retry_declared(None, None, _state(ConnectionResetError()))
    assert not retry_declared(None, None, _state(ReleaseNotFound("x", "r", "n")))
    assert not retry_declared(None, None, _state(HelmOperationFailed("x", "r", "n")))
    assert not retry_declared(None, None, _state(ReleaseChanged("x", "r", "n")))
    assert not retry_declared(None, None, _state(FileNotFoundError("helm")))
    assert not retry_declared(None, None, _state(RuntimeError("our own refusal")))
    # the Kubernetes-API policy believes an error that declares itself permanent (marking a Secret failed)
    assert not KUBE_API["retry_condition_fn"](None, None, _state(ReleaseChanged("x", "r", "n")))
    assert KUBE_API["retry_condition_fn"](None, None, _state(HelmUnavailable("x", "r", "n")))


def test_inline_kubeconfig_is_private_and_removed() -> None:
    cluster = KubernetesCluster(kubeconfig="apiVersion: v1\nkind: Config\nclusters: []\n")
    with kubeconfig_file(cluster) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "kind: Config" in path.read_text()
    assert not Path(path).exists()


def test_release_storage_round_trip_matches_helms_encoding() -> None:
    release = {"name": "demo", "version": 5, "info": {"status": "pending-rollback", "description": "Rollback to 2"}}
    # what the API returns for a Secret helm wrote: base64 (API) of base64 (helm) of gzip of JSON
    helm_text = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    assert decode_release(base64.b64encode(helm_text).decode()) == release
    assert decode_release(encode_release(release)) == release
    plain = base64.b64encode(base64.b64encode(json.dumps(release).encode())).decode()  # helm also reads plain JSON
    assert decode_release(plain) == release
    assert secret_name("demo", 5) == "sh.helm.release.v1.demo.v5"


def _obj(release: str | None, namespace: str | None = "prod") -> dict[str, Any]:
    annotations = {}
    if release is not None:
        annotations["meta.helm.sh/release-name"] = release
    if namespace is not None:
        annotations["meta.helm.sh/release-namespace"] = namespace
    return {"metadata": {"name": "x", "annotations": annotations}}


def test_membership_is_helms_ownership_annotations() -> None:
    assert belongs_to(_obj("web"), "prod", "web")
    assert belongs_to(_obj("web", None), "prod", "web")  # objects from before helm wrote the namespace
    assert not belongs_to(_obj("web-canary"), "prod", "web")
    assert not belongs_to(_obj("web", "staging"), "prod", "web")
    assert not belongs_to(_obj(None), "prod", "web")


def test_sampled_pod_problems_keep_causes_not_start_up() -> None:
    pod = {
        "metadata": {"name": "web-1"},
        "spec": {"containers": [{"name": "app", "image": "reg/app:2"}]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3"}],
        },
    }
    found = [(p.container, p.image, p.reason) for p in pods.problems(pod) if _is_cause(p)]
    assert found == [("", "", "Unschedulable"), ("app", "reg/app:2", "CrashLoopBackOff")]
    starting = {**pod, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}  # fmt: skip
    assert [p.reason for p in pods.problems(starting)] == ["phase Pending"]
    assert not any(_is_cause(p) for p in pods.problems(starting))


def _rows(*rows: tuple[int, str, str]) -> list[RevisionInfo]:
    return [RevisionInfo(revision=r, status=s, description=d) for r, s, d in rows]


def test_a_retried_rollback_recognises_its_own_result() -> None:
    done = [*_rows((4, "superseded", "")), RevisionInfo(revision=5, status="deployed", rollback_revision=2)]
    assert _already_rolled_back(done, 2, 4) == done[-1]
    assert _already_rolled_back(done, 1, 4) is None  # a rollback to another revision is someone else's
    pending = [*done[:-1], RevisionInfo(revision=5, status="pending-rollback", rollback_revision=2)]
    assert _already_rolled_back(pending, 2, 4) is None


def test_upgrade_start_checks() -> None:
    where = ("web", "prod")
    history = _rows((1, "superseded", ""), (2, "deployed", "rollbook helm-atomic-upgrade (run-1): go"))
    assert _check_upgrade_start(
        history, description="rollbook helm-atomic-upgrade (run-1): go", expected_live=1, install=False, where=where
    )
    assert not _check_upgrade_start(history, description="other", expected_live=2, install=False, where=where)
    with pytest.raises(ReleaseChanged, match="found live revision 2 .*expected 1"):
        _check_upgrade_start(history, description="other", expected_live=1, install=False, where=where)
    with pytest.raises(ReleaseNotFound, match="install=False"):
        _check_upgrade_start([], description="d", expected_live=None, install=False, where=where)
    stuck = _rows((1, "deployed", ""), (2, "pending-upgrade", ""))
    with pytest.raises(ReleaseBusy, match="pending-upgrade"):
        _check_upgrade_start(stuck, description="d", expected_live=2, install=False, where=where)
    # a retry after this attempt's own helm was interrupted (API server restarted mid-upgrade): the release is
    # pending at the next revision; that is a busy release with a way out, not "someone else changed it"
    with pytest.raises(ReleaseBusy, match="pending-upgrade: .*recover_pending=true"):
        _check_upgrade_start(stuck, description="d", expected_live=1, install=False, where=where)
    # a first install that never finished: helm-rollback has nothing to roll back to, so the refusal names uninstall
    first = _rows((1, "pending-install", "Initial install underway"))
    with pytest.raises(ReleaseBusy, match="no other revision.*`helm uninstall web -n prod`") as refused:
        _check_upgrade_start(first, description="d", expected_live=1, install=True, where=where)
    assert "recover_pending" not in str(refused.value)
