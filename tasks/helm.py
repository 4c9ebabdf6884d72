"""Helm release tasks: read history and status, roll back, upgrade atomically, and check a release's pods.

Most calls go through `pyhelm3` (checked against helm v4.3.1): history, status, values, manifests, chart
metadata, rollback with `--wait` and upgrade. `pyhelm3.Client` asks the binary for its version and then uses
`--rollback-on-failure` on helm v4 (`--atomic` on v3); its bare `--wait` means helm v4's `watcher` strategy.
Two things it cannot do are done here with argv lists (see `render_upgrade`): a server-side dry run, and
hiding Secrets in that dry run.

Every task runs its helm work under its own deadline (asyncio `wait_for`; pyhelm3 terminates the helm
process when cancelled), so a hung helm is stopped even where Prefect's `timeout_seconds` cannot interrupt
the thread. Errors name the release, the namespace and, where there is one, the revision; only errors that
may heal by themselves (API server unreachable, throttled, helm hung) are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pyhelm3
import yaml
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook import redaction
from rollbook.helm_releases import PENDING_STATUSES, RevisionInfo, parse_manifest
from tasks.cluster import namespace_exists
from tasks.policies import retry_transient

T = TypeVar("T")

DEFAULT_HELM = "helm"
# pyhelm3 passes --history-max on every rollback/upgrade; helm's own default, so history is not pruned harder.
HISTORY_MAX = 10
REQUEST_TIMEOUT_SECONDS = 10
RELEASE_ANNOTATION = "meta.helm.sh/release-name"
NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
# Waiting reasons that are part of a normal start, not a problem worth reporting.
_BENIGN_WAITING = {"ContainerCreating", "PodInitializing"}
# helm stderr fragments that mean "the cluster could not be reached / answered badly", i.e. try again.
_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "tls handshake timeout",
    "no route to host",
    "etcdserver",
    "the server is currently unable",
    "too many requests",
    "http2: client connection lost",
    "unexpected eof",
    "server is shutting down",
)


# ---------------------------------------------------------------- errors


class HelmError(RuntimeError):
    """A helm operation on one release failed; the message names release, namespace and revision."""

    transient = False

    def __init__(self, message: str, release: str, namespace: str, revision: int | None = None, detail: str = ""):
        where = f"release {release!r} in namespace {namespace!r}"
        if revision is not None:
            where += f" (revision {revision})"
        full = f"{where}: {message}"
        if detail:
            full += f"\nhelm said: {detail.strip()}"
        super().__init__(full)
        self.release, self.namespace, self.revision, self.detail = release, namespace, revision, detail
        self._message = message

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-rich exceptions must still pickle (Prefect states)
        return (self.__class__, (self._message, self.release, self.namespace, self.revision, self.detail))


class HelmUnavailable(HelmError):
    """The API server could not be reached or helm hung: worth another try."""

    transient = True


class ReleaseNotFound(HelmError, LookupError):
    pass


class RevisionNotFound(HelmError, LookupError):
    pass


class ReleaseBusy(HelmError):
    """Another helm operation is running on the release (or died in a pending state)."""


class ReleaseChanged(HelmError):
    """The release moved on between reading it and acting on it; acting now could undo someone else's change."""


class HelmOperationFailed(HelmError):
    """Helm ran the operation and it failed (e.g. --wait timed out); repeating it blindly is not safe."""


def retry_helm(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn`: retry only errors that may heal by themselves."""
    data = getattr(state, "data", None)
    if isinstance(data, HelmError):
        return data.transient
    if isinstance(data, RuntimeError | LookupError):  # our own refusals; helm errors are wrapped above
        return False
    return retry_transient(task, task_run, state)


def _classify(
    exc: pyhelm3.errors.Error, op: str, release: str, namespace: str, revision: int | None = None
) -> HelmError:
    stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
    text = stderr.lower()
    detail = stderr.strip()[-2000:]
    if "another operation (install/upgrade/rollback) is in progress" in text:
        return ReleaseBusy(f"{op}: another helm operation is in progress", release, namespace, revision, detail)
    if isinstance(exc, pyhelm3.errors.ReleaseNotFoundError) or "release: not found" in text:
        if revision is not None:
            return RevisionNotFound(f"{op}: revision {revision} not found", release, namespace, revision, detail)
        return ReleaseNotFound(f"{op}: release not found", release, namespace, revision, detail)
    if "has no" in text and "version" in text:
        return RevisionNotFound(f"{op}: revision {revision} not found", release, namespace, revision, detail)
    if isinstance(exc, pyhelm3.errors.ConnectionError) or any(m in text for m in _TRANSIENT_MARKERS):
        return HelmUnavailable(f"{op}: cluster unreachable", release, namespace, revision, detail)
    return HelmOperationFailed(f"{op} failed", release, namespace, revision, detail)


# ---------------------------------------------------------------- helm plumbing


def _check_executable(executable: str) -> str:
    found = shutil.which(executable)
    if found is None:
        raise FileNotFoundError(f"helm executable not found: {executable!r} (set helm_executable to its path)")
    return found


@contextlib.contextmanager
def kubeconfig_file(cluster: KubernetesCluster) -> Iterator[Path]:
    """A kubeconfig path for the helm binary: the block's file, or its inline secret in a private temp file."""
    if cluster.kubeconfig_path:
        yield Path(cluster.kubeconfig_path).expanduser()
        return
    assert cluster.kubeconfig is not None  # the block validates that exactly one source is set
    fd, name = tempfile.mkstemp(prefix="rollbook-kubeconfig-", suffix=".yaml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(redaction.reveal(cluster.kubeconfig))
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _run_pyhelm3(
    cluster: KubernetesCluster,
    helm: str,
    deadline_seconds: float,
    work: Callable[[pyhelm3.Client, pyhelm3.Command], Awaitable[T]],
) -> T:
    """Run pyhelm3 work against one cluster, killing helm if it outlives the deadline."""
    executable = _check_executable(helm)
    with kubeconfig_file(cluster) as kubeconfig:
        command = pyhelm3.Command(
            executable=executable,
            kubeconfig=kubeconfig,
            kubecontext=cluster.context,
            history_max_revisions=HISTORY_MAX,
        )
        client = pyhelm3.Client(command=command, executable=executable)

        async def bounded() -> T:
            return await asyncio.wait_for(work(client, command), deadline_seconds)

        return asyncio.run(bounded())


def helm_argv(cluster: KubernetesCluster, helm: str, kubeconfig: Path, *args: str) -> list[str]:
    argv = [_check_executable(helm), *args, "--kubeconfig", str(kubeconfig)]
    if cluster.context:
        argv += ["--kube-context", cluster.context]
    return argv


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    # helm prints nanoseconds; Python parses at most microseconds.
    head, dot, tail = text.partition(".")
    if dot:
        digits = tail[: len(tail) - len(tail.lstrip("0123456789"))]
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def _revision_info(raw: dict[str, Any]) -> RevisionInfo:
    return RevisionInfo(
        revision=int(raw["revision"]),
        status=str(raw.get("status", "unknown")),
        chart=str(raw.get("chart", "")),
        app_version=str(raw.get("app_version", "")),
        description=str(raw.get("description", "")),
        updated=_parse_time(raw.get("updated")),
        rollback_revision=raw.get("rollback_revision"),
    )


# ---------------------------------------------------------------- read-only tasks


class ReleaseStatus(BaseModel):
    release: str
    namespace: str
    revision: int
    status: str
    description: str = ""
    updated: dt.datetime | None = None


class RevisionDetails(BaseModel):
    """What one revision applied: chart, user-supplied values and the rendered objects."""

    revision: int
    chart: str
    app_version: str = ""
    values: dict[str, Any]
    manifest: list[dict[str, Any]]


@task(retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=retry_helm, timeout_seconds=90)
def release_history(
    cluster: KubernetesCluster, namespace: str, release: str, helm: str = DEFAULT_HELM
) -> list[RevisionInfo]:
    """`helm history` as typed rows, oldest first. An unknown release or namespace is reported as such."""

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> Any:
        return await command.history(release, namespace=namespace)

    try:
        raw = _run_pyhelm3(cluster, helm, 60, work)
    except pyhelm3.errors.Error as exc:
        error = _classify(exc, "history", release, namespace)
        if isinstance(error, ReleaseNotFound):
            with contextlib.suppress(ApiException):  # no right to read namespaces: keep helm's answer
                with cluster.api_client() as api:
                    exists = namespace_exists(api, namespace)
                if not exists:
                    raise ReleaseNotFound("namespace does not exist", release, namespace) from None
        raise error from None
    except TimeoutError:
        raise HelmUnavailable("history: helm did not answer in 60s", release, namespace) from None
    history = sorted((_revision_info(r) for r in raw), key=lambda r: r.revision)
    if not history:
        raise ReleaseNotFound("release has no history", release, namespace)
    return history


@task(retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=retry_helm, timeout_seconds=90)
def release_status(cluster: KubernetesCluster, namespace: str, release: str, helm: str = DEFAULT_HELM) -> ReleaseStatus:
    """`helm status`: the live revision and its status."""

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> pyhelm3.ReleaseRevision:
        return await client.get_current_revision(release, namespace=namespace)

    try:
        current = _run_pyhelm3(cluster, helm, 60, work)
    except pyhelm3.errors.Error as exc:
        raise _classify(exc, "status", release, namespace) from None
    except TimeoutError:
        raise HelmUnavailable("status: helm did not answer in 60s", release, namespace) from None
    return ReleaseStatus(
        release=release,
        namespace=namespace,
        revision=current.revision,
        status=current.status.value,
        description=current.description or "",
        updated=current.updated,
    )


@task(retries=3, retry_delay_seconds=[2, 5, 10], retry_condition_fn=retry_helm, timeout_seconds=120)
def revision_details(
    cluster: KubernetesCluster, namespace: str, release: str, revision: int, helm: str = DEFAULT_HELM
) -> RevisionDetails:
    """Chart, values and manifest of one revision (for plans: what a rollback would change)."""

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> RevisionDetails:
        values = await command.get_values(release, namespace=namespace, revision=revision)
        docs = [d for d in await command.get_resources(release, namespace=namespace, revision=revision) if d]
        meta = await command.get_chart_metadata(release, namespace=namespace, revision=revision)
        return RevisionDetails(
            revision=revision,
            chart=f"{meta.get('name', '?')}-{meta.get('version', '?')}",
            app_version=str(meta.get("appVersion") or ""),
            values=values or {},
            manifest=docs,
        )

    try:
        return _run_pyhelm3(cluster, helm, 90, work)
    except pyhelm3.errors.Error as exc:
        raise _classify(exc, "get revision", release, namespace, revision) from None
    except TimeoutError:
        raise HelmUnavailable("get revision: helm did not answer in 90s", release, namespace, revision) from None


class RenderedUpgrade(BaseModel):
    """What `helm upgrade` would apply, from a server-side dry run."""

    chart: str
    app_version: str = ""
    values: dict[str, Any]
    manifest: list[dict[str, Any]]


@task(retries=2, retry_delay_seconds=[2, 5], retry_condition_fn=retry_helm, timeout_seconds=180)
def render_upgrade(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    install: bool = False,
    helm: str = DEFAULT_HELM,
) -> RenderedUpgrade:
    """Render an upgrade against the cluster without changing anything (`--dry-run=server --hide-secret`).

    Called directly rather than through pyhelm3: its `dry_run=True` passes a bare `--dry-run`, which helm v4
    deprecates and treats as a client-side render (no validation by the API server), and it has no way to
    pass `--hide-secret`, so Secret contents would land in the plan.
    """
    with kubeconfig_file(cluster) as kubeconfig:
        args = ["upgrade", release, chart, "--namespace", namespace, "--dry-run=server", "--hide-secret"]
        args += ["--output", "json", "--values", "-"]
        if install:
            args.append("--install")
        argv = helm_argv(cluster, helm, kubeconfig, *args)
        try:
            proc = subprocess.run(argv, input=json.dumps(values), capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise HelmUnavailable("dry-run upgrade: helm did not answer in 120s", release, namespace) from None
    if proc.returncode != 0:
        error = pyhelm3.errors.Error(proc.returncode, proc.stdout.encode(), proc.stderr.encode())
        raise _classify(error, "dry-run upgrade", release, namespace)
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    meta = (out.get("chart") or {}).get("metadata") or {}
    return RenderedUpgrade(
        chart=f"{meta.get('name', '?')}-{meta.get('version', '?')}",
        app_version=str(meta.get("appVersion") or ""),
        values=out.get("config") or {},
        manifest=parse_manifest(out.get("manifest", "")),
    )


# ---------------------------------------------------------------- changing tasks


@task(retries=2, retry_delay_seconds=[5, 10], retry_condition_fn=retry_helm, timeout_seconds=3700)
def rollback_release(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    revision: int,
    expected_live: int,
    timeout_seconds: int = 300,
    helm: str = DEFAULT_HELM,
) -> ReleaseStatus:
    """`helm rollback RELEASE REVISION --wait --timeout`, only if the live revision is still `expected_live`.

    Safe to retry: every attempt re-reads the history first. If an earlier attempt already produced a
    rollback to `revision` that is deployed, that result is returned instead of rolling back again; if the
    release moved on in any other way, the task refuses (ReleaseChanged) rather than undo someone's change.
    """
    log = get_run_logger()

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> ReleaseStatus:
        raw = await command.history(release, namespace=namespace)
        history = sorted((_revision_info(r) for r in raw), key=lambda r: r.revision)
        if revision not in {r.revision for r in history}:
            raise RevisionNotFound("rollback: revision not in history", release, namespace, revision)
        live = history[-1]
        if live.revision != expected_live:
            if live.revision > expected_live and live.rollback_revision == revision and live.status == "deployed":
                log.info(
                    "revision %d is already a rollback to %d (earlier attempt); not rolling back again",
                    live.revision,
                    revision,
                )
                return _status_of(live)
            raise ReleaseChanged(
                f"rollback: live revision is {live.revision} ({live.status}), expected {expected_live}",
                release,
                namespace,
                revision,
            )
        if live.status in PENDING_STATUSES:
            raise ReleaseBusy(f"rollback: live revision {live.revision} is {live.status}", release, namespace, revision)
        await command.rollback(release, revision, namespace=namespace, wait=True, timeout=f"{timeout_seconds}s")
        after = _revision_info(
            sorted(await command.history(release, namespace=namespace), key=lambda r: int(r["revision"]))[-1]
        )
        return _status_of(after)

    def _status_of(info: RevisionInfo) -> ReleaseStatus:
        return ReleaseStatus(
            release=release,
            namespace=namespace,
            revision=info.revision,
            status=info.status,
            description=info.description,
            updated=info.updated,
        )

    log.info(
        "rolling back %s in %s from revision %d to %d (wait, timeout %ds)",
        release,
        namespace,
        expected_live,
        revision,
        timeout_seconds,
    )
    try:
        return _run_pyhelm3(cluster, helm, timeout_seconds + 60, work)
    except pyhelm3.errors.Error as exc:
        raise _classify(exc, "rollback", release, namespace, revision) from None
    except TimeoutError:
        raise HelmUnavailable(
            f"rollback: helm did not finish within {timeout_seconds + 60}s", release, namespace, revision
        ) from None


class PodProblem(BaseModel):
    pod: str
    container: str
    image: str
    reason: str
    message: str = ""


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


@task(retries=2, retry_delay_seconds=[5, 10], retry_condition_fn=retry_helm, timeout_seconds=3700)
def upgrade_release(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    description: str,
    expected_live: int | None,
    install: bool = False,
    timeout_seconds: int = 300,
    helm: str = DEFAULT_HELM,
) -> UpgradeOutcome:
    """`helm upgrade --rollback-on-failure --wait --timeout` (with `--install` only if asked), watching the pods.

    While helm waits, the release's pods are sampled every 2s so the waiting reasons of pods that never
    became Ready (CrashLoopBackOff, ImagePullBackOff...) survive helm's automatic rollback, which deletes them.
    A failed-and-rolled-back upgrade is a result, not an exception: the outcome says which revision is live.

    Safe to retry: each attempt re-reads the history. The live revision must still be `expected_live`
    (None: the release must not exist yet), unless the live revision carries this call's `description`,
    i.e. an earlier attempt already succeeded.
    """
    log = get_run_logger()
    started = time.monotonic()
    problems: dict[tuple[str, str, str], PodProblem] = {}

    async def watch_pods(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                for problem in await asyncio.to_thread(_pod_problems, cluster, namespace, release):
                    problems[(problem.pod, problem.container, problem.reason)] = problem
            except Exception as exc:  # observation only: never let it break the upgrade
                log.debug("pod sampling failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2)

    async def history(command: pyhelm3.Command) -> list[RevisionInfo]:
        try:
            raw = await command.history(release, namespace=namespace)
        except pyhelm3.errors.ReleaseNotFoundError:
            return []
        return sorted((_revision_info(r) for r in raw), key=lambda r: r.revision)

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> UpgradeOutcome:
        before = await history(command)
        live = before[-1] if before else None
        if live is not None and live.description == description and live.revision != expected_live:
            log.info("revision %d already carries this change (earlier attempt); not upgrading again", live.revision)
            return outcome(True, before, before, "")
        if (live.revision if live else None) != expected_live:
            found = f"live revision {live.revision} ({live.status})" if live else "no release"
            raise ReleaseChanged(
                f"upgrade: found {found}, expected {expected_live or 'no release'}", release, namespace
            )
        if live is None and not install:
            raise ReleaseNotFound("upgrade: release not found (install=False)", release, namespace)
        if live is not None and live.status in PENDING_STATUSES:
            raise ReleaseBusy(f"upgrade: live revision {live.revision} is {live.status}", release, namespace)
        chart_ref = await client.get_chart(Path(chart) if Path(chart).exists() else chart)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_pods(stop))
        error = ""
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
            classified = _classify(exc, "upgrade", release, namespace)
            if classified.transient or isinstance(classified, ReleaseBusy | ReleaseNotFound):
                raise classified from None
            error = classified.detail
        finally:
            stop.set()
            await watcher
        after = await history(command)
        return outcome(not error, before, after, error)

    def outcome(ok: bool, before: list[RevisionInfo], after: list[RevisionInfo], error: str) -> UpgradeOutcome:
        prev = before[-1].revision if before else None
        live = after[-1] if after else None
        attempted = [r for r in after if prev is None or r.revision > prev]
        return UpgradeOutcome(
            release=release,
            namespace=namespace,
            succeeded=ok,
            previous_revision=prev,
            live_revision=live.revision if live else 0,
            live_status=live.status if live else "absent",
            attempted_revision=attempted[0].revision if attempted else None,
            rolled_back=bool(live and live.rollback_revision is not None and prev is not None and live.revision > prev),
            helm_error=error,
            pod_problems=sorted(problems.values(), key=lambda p: (p.reason, p.pod)),
            seconds=round(time.monotonic() - started, 2),
        )

    log.info(
        "upgrading %s in %s with %s (rollback-on-failure, wait, timeout %ds)",
        release,
        namespace,
        chart,
        timeout_seconds,
    )
    try:
        return _run_pyhelm3(cluster, helm, timeout_seconds + 90, work)
    except pyhelm3.errors.Error as exc:
        raise _classify(exc, "upgrade", release, namespace) from None
    except TimeoutError:
        raise HelmUnavailable(
            f"upgrade: helm did not finish within {timeout_seconds + 90}s", release, namespace
        ) from None


# ---------------------------------------------------------------- the release's workloads and pods


def _selector(match: Any) -> str:
    """A label selector string from a LabelSelector object (matchLabels and matchExpressions)."""
    parts = [f"{k}={v}" for k, v in sorted((match.match_labels or {}).items())]
    for expr in match.match_expressions or []:
        values = ",".join(expr.values or [])
        op = expr.operator
        if op == "In":
            parts.append(f"{expr.key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{expr.key} notin ({values})")
        elif op == "Exists":
            parts.append(expr.key)
        elif op == "DoesNotExist":
            parts.append(f"!{expr.key}")
    return ",".join(parts)


def _release_workloads(api: k8s_client.ApiClient, namespace: str, release: str) -> list[tuple[str, Any]]:
    """('Deployment', obj)... that helm manages for this release (by helm's ownership annotations)."""
    apps = k8s_client.AppsV1Api(api)
    listers = (
        ("Deployment", apps.list_namespaced_deployment),
        ("StatefulSet", apps.list_namespaced_stateful_set),
        ("DaemonSet", apps.list_namespaced_daemon_set),
    )
    found = []
    for kind, lister in listers:
        items: list[Any] = lister(namespace, _request_timeout=REQUEST_TIMEOUT_SECONDS).items
        for obj in items:
            annotations = obj.metadata.annotations or {}
            if (
                annotations.get(RELEASE_ANNOTATION) == release
                and annotations.get(NAMESPACE_ANNOTATION, namespace) == namespace
            ):
                found.append((kind, obj))
    return found


def _release_pods(api: k8s_client.ApiClient, namespace: str, workloads: list[tuple[str, Any]]) -> list[Any]:
    core = k8s_client.CoreV1Api(api)
    pods: dict[str, Any] = {}
    for _, obj in workloads:
        selector = _selector(obj.spec.selector)
        items: list[Any] = core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_SECONDS
        ).items
        for pod in items:
            pods[pod.metadata.name] = pod
    return [p for p in pods.values() if p.metadata.deletion_timestamp is None]


def _problems_of(pod: Any) -> list[PodProblem]:
    found = []
    images = {c.name: c.image for c in pod.spec.containers or []}
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason and waiting.reason not in _BENIGN_WAITING:
            found.append(
                PodProblem(
                    pod=pod.metadata.name,
                    container=status.name,
                    image=images.get(status.name, status.image or ""),
                    reason=waiting.reason,
                    message=(waiting.message or "")[:300],
                )
            )
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            found.append(
                PodProblem(
                    pod=pod.metadata.name,
                    container="",
                    image="",
                    reason=condition.reason or "Unschedulable",
                    message=(condition.message or "")[:300],
                )
            )
    return found


def _pod_problems(cluster: KubernetesCluster, namespace: str, release: str) -> list[PodProblem]:
    with cluster.api_client() as api:
        pods = _release_pods(api, namespace, _release_workloads(api, namespace, release))
    return [problem for pod in pods for problem in _problems_of(pod)]


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class WorkloadReport(BaseModel):
    kind: str
    name: str
    desired: int
    ready: int
    updated: bool
    images: list[str]


class PodReport(BaseModel):
    name: str
    ready: bool
    phase: str
    images: list[str]
    restarts: int
    problems: list[str]


class PodsReport(BaseModel):
    release: str
    namespace: str
    all_ready: bool
    workloads: list[WorkloadReport]
    pods: list[PodReport]
    problems: list[str]


def _workload_report(kind: str, obj: Any, pods: list[Any]) -> WorkloadReport:
    if kind == "DaemonSet":
        desired = obj.status.desired_number_scheduled or 0
        updated = (obj.status.updated_number_scheduled or 0) >= desired
    else:
        desired = obj.spec.replicas if obj.spec.replicas is not None else 1
        updated = (obj.status.updated_replicas or 0) >= desired and (obj.status.observed_generation or 0) >= (
            obj.metadata.generation or 0
        )
    selector = obj.spec.selector.match_labels or {}
    mine = [p for p in pods if all((p.metadata.labels or {}).get(k) == v for k, v in selector.items())]
    return WorkloadReport(
        kind=kind,
        name=obj.metadata.name,
        desired=desired,
        ready=sum(1 for p in mine if _pod_ready(p)),
        updated=updated,
        images=[c.image for c in obj.spec.template.spec.containers],
    )


def _check_pods(cluster: KubernetesCluster, namespace: str, release: str) -> PodsReport:
    with cluster.api_client() as api:
        workloads = _release_workloads(api, namespace, release)
        pods = _release_pods(api, namespace, workloads)
    reports = [_workload_report(kind, obj, pods) for kind, obj in workloads]
    pod_reports = [
        PodReport(
            name=p.metadata.name,
            ready=_pod_ready(p),
            phase=p.status.phase or "",
            images=[c.image for c in p.spec.containers],
            restarts=sum(s.restart_count or 0 for s in p.status.container_statuses or []),
            problems=[f"{x.container}: {x.reason}" for x in _problems_of(p)],
        )
        for p in sorted(pods, key=lambda p: p.metadata.name)
    ]
    problems = []
    if not workloads:
        problems.append("no Deployment/StatefulSet/DaemonSet of the release found")
    for w in reports:
        if w.ready < w.desired:
            problems.append(f"{w.kind}/{w.name}: {w.ready}/{w.desired} pods Ready")
        if not w.updated:
            problems.append(f"{w.kind}/{w.name}: rollout not complete")
    problems += [f"pod {p.name} not Ready" for p in pod_reports if not p.ready]
    return PodsReport(
        release=release,
        namespace=namespace,
        all_ready=not problems,
        workloads=reports,
        pods=pod_reports,
        problems=problems,
    )


@task(retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient, timeout_seconds=150)
def release_pods_ready(
    cluster: KubernetesCluster, namespace: str, release: str, settle_seconds: int = 30
) -> PodsReport:
    """Are all pods of the release's workloads Ready, with each rollout complete?

    Polls for up to `settle_seconds` (at most 120) so pods being replaced right after a `--wait` settle;
    returns the last report either way (the caller decides whether not-ready is a failure).
    """
    deadline = time.monotonic() + min(max(settle_seconds, 0), 120)
    while True:
        report = _check_pods(cluster, namespace, release)
        if report.all_ready or time.monotonic() >= deadline:
            return report
        time.sleep(2)


@task(retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=retry_transient, timeout_seconds=60)
def annotate_release_deployments(
    cluster: KubernetesCluster, namespace: str, release: str, annotations: dict[str, str]
) -> list[str]:
    """Add audit annotations to the metadata of the release's Deployments (never the pod template: no rollout).

    A merge patch of the same annotations is idempotent, so retries are safe.
    """
    names = []
    with cluster.api_client() as api:
        apps = k8s_client.AppsV1Api(api)
        for kind, obj in _release_workloads(api, namespace, release):
            if kind != "Deployment":
                continue
            apps.patch_namespaced_deployment(
                obj.metadata.name,
                namespace,
                {"metadata": {"annotations": annotations}},
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            names.append(obj.metadata.name)
    get_run_logger().info("annotated Deployment(s) %s of %s in %s", names, release, namespace)
    return names


def dump_values(values: dict[str, Any]) -> str:
    """Values as YAML for reports."""
    return yaml.safe_dump(values, sort_keys=True)
