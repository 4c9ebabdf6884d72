"""Helm task plumbing that needs no cluster: error classification, retry decisions, inline kubeconfigs."""

from __future__ import annotations

import pickle
import stat
from pathlib import Path
from types import SimpleNamespace

import pyhelm3
import pytest

from blocks import KubernetesCluster
from tasks.helm import (
    HelmOperationFailed,
    HelmUnavailable,
    ReleaseBusy,
    ReleaseNotFound,
    RevisionNotFound,
    _classify,
    _parse_time,
    kubeconfig_file,
    retry_helm,
)


def _error(stderr: str, cls: type[pyhelm3.errors.Error] = pyhelm3.errors.Error) -> pyhelm3.errors.Error:
    return cls(1, b"", stderr.encode())


@pytest.mark.parametrize(
    ("stderr", "revision", "expected"),
    [
        ("Error: release: not found", None, ReleaseNotFound),
        ("Error: release: not found", 7, RevisionNotFound),
        ("Error: release has no 99 version", 99, RevisionNotFound),
        ("Error: another operation (install/upgrade/rollback) is in progress", None, ReleaseBusy),
        ('Error: Get "https://127.0.0.1:6443/api": dial tcp 127.0.0.1:6443: connect: connection refused', None,
         HelmUnavailable),
        ("Error: UPGRADE FAILED: resource Deployment/x/y not ready ... context deadline exceeded", None,
         HelmOperationFailed),
    ],
)  # fmt: skip
def test_classify(stderr: str, revision: int | None, expected: type[Exception]) -> None:
    error = _classify(_error(stderr), "op", "web", "prod", revision)
    assert type(error) is expected
    assert "release 'web' in namespace 'prod'" in str(error)
    if revision is not None:
        assert f"revision {revision}" in str(error)
    assert pickle.loads(pickle.dumps(error)).args == error.args  # Prefect may pickle failed states


def test_retry_only_transient() -> None:
    def state(exc: BaseException) -> SimpleNamespace:
        return SimpleNamespace(data=exc)

    assert retry_helm(None, None, state(HelmUnavailable("x", "r", "n")))
    assert retry_helm(None, None, state(ConnectionResetError()))
    assert not retry_helm(None, None, state(ReleaseNotFound("x", "r", "n")))
    assert not retry_helm(None, None, state(HelmOperationFailed("x", "r", "n")))
    assert not retry_helm(None, None, state(FileNotFoundError("helm")))


def test_inline_kubeconfig_is_private_and_removed() -> None:
    cluster = KubernetesCluster(kubeconfig="apiVersion: v1\nkind: Config\nclusters: []\n")
    with kubeconfig_file(cluster) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "kind: Config" in path.read_text()
    assert not Path(path).exists()


def test_parse_helm_time_with_nanoseconds() -> None:
    parsed = _parse_time("2026-11-27T07:24:12.527008327Z")
    assert parsed is not None and parsed.microsecond == 527008 and parsed.utcoffset() is not None
    assert _parse_time(None) is None
