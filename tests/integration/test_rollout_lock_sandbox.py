"""The rollout lock as a Lease on the sandbox's API server: exclusive across runs, re-entrant within one,
released on failure, taken over once a dead holder's Lease expires, and renewed while it is held."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from kubernetes import client

from rollbook.rollout_lock import RolloutBusy, lease_name, micro_time
from sandbox.cluster import Sandbox
from tasks.cluster import resolve_cluster
from tasks.rollout_lock import acquire_rollout_lock, release_rollout_lock, rollout_lock


def _lease(sandbox: Sandbox, namespace: str, app: str) -> client.V1Lease | None:
    try:
        return client.CoordinationV1Api(sandbox.api_client()).read_namespaced_lease(lease_name(app), namespace)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_lock_is_exclusive_reentrant_and_released(sandbox: Sandbox, namespace: str) -> None:
    cluster = resolve_cluster(None, str(sandbox.cfg.kubeconfig), None)
    outcome: list[str] = []

    def other_run() -> None:  # a new thread starts with a fresh context, as another flow run would
        try:
            with rollout_lock(cluster, namespace, "shop"):
                outcome.append("acquired")
        except RolloutBusy as exc:
            outcome.append(str(exc))

    with rollout_lock(cluster, namespace, "shop") as held:
        assert held == "rollbook-rollout-shop"
        lease = _lease(sandbox, namespace, "shop")
        assert lease is not None and lease.spec.holder_identity and lease.spec.lease_duration_seconds == 60
        with rollout_lock(cluster, namespace, "shop"):  # a subflow of the holder passes through
            pass
        assert _lease(sandbox, namespace, "shop") is not None  # the nested block did not release the parent's
        thread = threading.Thread(target=other_run)
        thread.start()
        thread.join(60)
        with rollout_lock(cluster, namespace, "cart"):  # another application is independent
            pass
    assert outcome and "another progressive rollout of 'shop'" in outcome[0], outcome
    assert f"kubectl delete lease rollbook-rollout-shop -n {namespace}" in outcome[0]
    assert _lease(sandbox, namespace, "shop") is None and _lease(sandbox, namespace, "cart") is None

    with pytest.raises(RuntimeError, match="boom"):
        with rollout_lock(cluster, namespace, "shop"):
            raise RuntimeError("boom")
    assert _lease(sandbox, namespace, "shop") is None  # released when the block fails


def test_a_dead_holders_lease_expires_and_is_taken_over(sandbox: Sandbox, namespace: str) -> None:
    cluster = resolve_cluster(None, str(sandbox.cfg.kubeconfig), None)
    acquire_rollout_lock.fn(cluster, namespace, "shop", "dead-run/1")
    with pytest.raises(RolloutBusy, match="holder 'dead-run/1'.*frees itself in (5[0-9]|60)s"):
        acquire_rollout_lock.fn(cluster, namespace, "shop", "new-run/2")
    # the dead run renewed it last 61 s ago: expired, so the next run takes it (and only that run)
    stale = micro_time(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=61))
    patch = {"spec": {"renewTime": stale}}
    client.CoordinationV1Api(sandbox.api_client()).patch_namespaced_lease("rollbook-rollout-shop", namespace, patch)
    acquire_rollout_lock.fn(cluster, namespace, "shop", "new-run/2")
    lease = _lease(sandbox, namespace, "shop")
    assert lease is not None and lease.spec.holder_identity == "new-run/2"
    assert not release_rollout_lock.fn(cluster, namespace, "shop", "dead-run/1")  # not the dead run's to free
    assert release_rollout_lock.fn(cluster, namespace, "shop", "new-run/2")
    assert _lease(sandbox, namespace, "shop") is None


def test_the_holder_renews_its_lease(sandbox: Sandbox, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tasks.rollout_lock.RENEW_EVERY_SECONDS", 1.0)
    cluster = resolve_cluster(None, str(sandbox.cfg.kubeconfig), None)
    with rollout_lock(cluster, namespace, "shop"):
        first = _lease(sandbox, namespace, "shop")
        time.sleep(3.5)
        later = _lease(sandbox, namespace, "shop")
    assert first is not None and later is not None
    assert later.spec.renew_time > first.spec.renew_time
    assert (
        later.spec.acquire_time == first.spec.acquire_time and later.spec.holder_identity == first.spec.holder_identity
    )
