"""The helm tasks that change a release: roll back, and upgrade atomically.

Both are safe to retry (the HELM_CHANGE policy retries only errors that may heal by themselves): every
attempt re-reads the history first, recognises its own earlier success, and refuses when the release moved on
in any other way (ReleaseChanged) rather than undo someone else's change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyhelm3
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook.helm_releases import PENDING_STATUSES, RevisionInfo
from tasks.helm_cli import DEFAULT_HELM, run_pyhelm3
from tasks.helm_errors import (
    BUSY_HINT,
    HelmRevisionNotFound,
    HelmUnavailable,
    ReleaseBusy,
    ReleaseChanged,
    ReleaseNotFound,
    classify,
)
from tasks.helm_release import ReleaseStatus, read_history, status_of
from tasks.policies import HELM_CHANGE
from tasks.release_workloads import PodProblem, pod_problems

# Beyond helm's own --timeout: time to read the history before and after, and to stop a hung helm.
_MARGIN_SECONDS = 90


def _already_rolled_back(history: list[RevisionInfo], revision: int, expected_live: int) -> RevisionInfo | None:
    """The live revision if an earlier attempt of this very rollback already produced it."""
    live = history[-1]
    if live.revision > expected_live and live.rollback_revision == revision and live.status == "deployed":
        return live
    return None


@task(**HELM_CHANGE)
def rollback_release(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    revision: int,
    expected_live: int,
    *,
    timeout_seconds: int = 300,
    cleanup_on_fail: bool = False,
    helm: str = DEFAULT_HELM,
) -> ReleaseStatus:
    """`helm rollback RELEASE REVISION --wait --timeout [--cleanup-on-fail]`, only if the live revision is
    still `expected_live`; an earlier attempt's deployed rollback to `revision` is returned as it is."""
    log = get_run_logger()

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> ReleaseStatus:
        history = await read_history(command, release, namespace)
        if revision not in {r.revision for r in history}:
            raise HelmRevisionNotFound("rollback: revision not in history", release, namespace, revision)
        done = _already_rolled_back(history, revision, expected_live)
        if done is not None:
            log.info("revision %d is already a rollback to %d (earlier attempt)", done.revision, revision)
            return status_of(release, namespace, done)
        live = history[-1]
        if live.revision > expected_live and live.status in PENDING_STATUSES and live.rollback_revision == revision:
            raise ReleaseBusy(
                f"rollback: an earlier attempt left revision {live.revision} {live.status}; run helm-rollback again "
                "with request.recover_pending=true to mark it failed and finish the rollback",
                release,
                namespace,
                revision,
            )
        if live.revision != expected_live:
            found = f"live revision is {live.revision} ({live.status}), expected {expected_live}"
            raise ReleaseChanged(f"rollback: {found}", release, namespace, revision)
        if live.status in PENDING_STATUSES:
            raise ReleaseBusy(f"rollback: live revision {live.revision} is {live.status}", release, namespace, revision)
        await command.rollback(
            release,
            revision,
            namespace=namespace,
            wait=True,
            timeout=f"{timeout_seconds}s",
            cleanup_on_fail=cleanup_on_fail,
        )
        return status_of(release, namespace, (await read_history(command, release, namespace))[-1])

    log.info("rolling back %s in %s from revision %d to %d", release, namespace, expected_live, revision)
    try:
        return run_pyhelm3(cluster, helm, timeout_seconds + _MARGIN_SECONDS, work)
    except pyhelm3.errors.Error as exc:
        raise classify(exc, "rollback", release, namespace, revision) from None
    except TimeoutError:
        deadline = timeout_seconds + _MARGIN_SECONDS
        raise HelmUnavailable(
            f"rollback: helm did not finish within {deadline}s", release, namespace, revision
        ) from None


class UpgradeOutcome(BaseModel):
    """What an atomic upgrade did: which revision is live afterwards and, if it failed, why."""

    release: str
    namespace: str
    succeeded: bool
    previous_revision: int | None
    live_revision: int
    live_status: str
    attempted_revision: int | None = None
    rolled_back: bool = False
    helm_error: str = ""
    pod_problems: list[PodProblem] = []
    seconds: float = 0.0


@contextlib.asynccontextmanager
async def _sampling_pods(cluster: KubernetesCluster, namespace: str, release: str) -> AsyncIterator[list[PodProblem]]:
    """Sample the release's pod problems every 2 s while the body runs (helm's wait), so the waiting reasons
    of pods that never became Ready survive helm's automatic rollback, which deletes those pods."""
    seen: dict[tuple[str, str, str], PodProblem] = {}
    found: list[PodProblem] = []
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            try:
                for problem in await asyncio.to_thread(pod_problems, cluster, namespace, release):
                    seen[(problem.pod, problem.container, problem.reason)] = problem
            except Exception as exc:  # noqa: BLE001 - observation only: never let it break the upgrade
                get_run_logger().debug("pod sampling failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2)

    watcher = asyncio.create_task(watch())
    try:
        yield found
    finally:
        stop.set()
        await watcher
        found.extend(sorted(seen.values(), key=lambda p: (p.reason, p.pod)))


def _check_upgrade_start(
    before: list[RevisionInfo], *, description: str, expected_live: int | None, install: bool, where: tuple[str, str]
) -> bool:
    """True when an earlier attempt already made this upgrade; raises when the release is not as planned."""
    release, namespace = where
    live = before[-1] if before else None
    if live is not None and live.description == description and live.revision != expected_live:
        return True
    if live is not None and live.status == "pending-install" and len(before) == 1:  # nothing to roll back to
        raise ReleaseBusy(
            f"upgrade: revision 1 is pending-install and the release has no other revision: a first install never "
            f"finished. helm-rollback cannot help (there is nothing to roll back to); run helm-atomic-upgrade again "
            f"with request.install=true and the same chart and values: it removes the interrupted install by itself "
            f"once its helm has certainly given up, and installs anew. Or, once no helm works on it (older than the "
            f"install's --timeout), `helm uninstall {release} -n {namespace}` removes it; nothing changed",
            release,
            namespace,
        )
    if live is not None and live.status in PENDING_STATUSES:  # this attempt's own interrupted helm included
        raise ReleaseBusy(
            f"upgrade: live revision {live.revision} is {live.status}: {BUSY_HINT}; then run this upgrade again",
            release,
            namespace,
        )
    if (live.revision if live else None) != expected_live:
        found = f"live revision {live.revision} ({live.status})" if live else "no release"
        raise ReleaseChanged(f"upgrade: found {found}, expected {expected_live or 'no release'}", release, namespace)
    if live is None and not install:
        raise ReleaseNotFound("upgrade: release not found (install=False)", release, namespace)
    return False


def _outcome(
    before: list[RevisionInfo], after: list[RevisionInfo], *, where: tuple[str, str], error: str, **extra: Any
) -> UpgradeOutcome:
    prev = before[-1].revision if before else None
    live = after[-1] if after else None
    attempted = [r for r in after if prev is None or r.revision > prev]
    rolled_back = bool(live and live.rollback_revision is not None and prev is not None and live.revision > prev)
    return UpgradeOutcome(
        release=where[0],
        namespace=where[1],
        succeeded=not error,
        previous_revision=prev,
        live_revision=live.revision if live else 0,
        live_status=live.status if live else "absent",
        attempted_revision=attempted[0].revision if attempted else None,
        rolled_back=rolled_back,
        helm_error=error,
        **extra,
    )


async def _helm_upgrade(
    client: pyhelm3.Client,
    chart_ref: Any,
    values: dict[str, Any],
    *,
    where: tuple[str, str],
    description: str,
    timeout_seconds: int,
) -> str:
    """`helm upgrade --install --rollback-on-failure --wait`; helm's error text when it failed and rolled back
    (a result), raising only what a retry may fix or what says the release is not as planned."""
    release, namespace = where
    try:
        await client.install_or_upgrade_release(
            release,
            chart_ref,
            values,
            rollback_on_failure=True,
            wait=True,
            timeout=f"{timeout_seconds}s",
            namespace=namespace,
            create_namespace=False,
            description=description,
        )
    except pyhelm3.errors.Error as exc:
        classified = classify(exc, "upgrade", release, namespace)
        if classified.transient or isinstance(classified, ReleaseBusy | ReleaseNotFound):
            raise classified from None
        return classified.detail
    return ""


@task(**HELM_CHANGE)
def upgrade_release(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    description: str,
    expected_live: int | None,
    *,
    install: bool = False,
    timeout_seconds: int = 300,
    helm: str = DEFAULT_HELM,
) -> UpgradeOutcome:
    """`helm upgrade --rollback-on-failure --wait --timeout` (with `--install` only if asked), watching the pods.

    A failed-and-rolled-back upgrade is a result, not an exception: the outcome says which revision is live.
    The live revision must still be `expected_live` (None: the release must not exist yet), unless the live
    revision carries this call's `description`, i.e. an earlier attempt already succeeded.
    """
    started, where = time.monotonic(), (release, namespace)

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> UpgradeOutcome:
        before = await read_history(command, release, namespace)
        if _check_upgrade_start(
            before, description=description, expected_live=expected_live, install=install, where=where
        ):
            get_run_logger().info("revision %d already carries this change (earlier attempt)", before[-1].revision)
            return _outcome(before, before, where=where, error="", seconds=round(time.monotonic() - started, 2))
        chart_ref = await client.get_chart(Path(chart) if Path(chart).exists() else chart)
        async with _sampling_pods(cluster, namespace, release) as problems:
            error = await _helm_upgrade(
                client, chart_ref, values, where=where, description=description, timeout_seconds=timeout_seconds
            )
        after = await read_history(command, release, namespace)
        return _outcome(
            before, after, where=where, error=error, pod_problems=problems, seconds=round(time.monotonic() - started, 2)
        )

    get_run_logger().info("upgrading %s in %s with %s (timeout %ds)", release, namespace, chart, timeout_seconds)
    try:
        return run_pyhelm3(cluster, helm, timeout_seconds + _MARGIN_SECONDS, work)
    except pyhelm3.errors.Error as exc:
        raise classify(exc, "upgrade", release, namespace) from None
    except TimeoutError:
        deadline = timeout_seconds + _MARGIN_SECONDS
        raise HelmUnavailable(f"upgrade: helm did not finish within {deadline}s", release, namespace) from None
