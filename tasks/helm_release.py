"""Read-only helm tasks: a release's history and status, one revision's chart/values/manifest, and a
server-side render of an upgrade. Nothing here changes the cluster, so every task may be retried freely."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
from typing import Any

import pyhelm3
from kubernetes.client.exceptions import ApiException
from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook.helm_releases import RevisionInfo, parse_manifest, revision_from_helm
from tasks.cluster import namespace_exists
from tasks.helm_cli import DEFAULT_HELM, helm_argv, kubeconfig_file, run_pyhelm3
from tasks.helm_errors import HelmUnavailable, ReleaseNotFound, classify
from tasks.policies import HELM_READ

# helm's own deadline inside a read task; HELM_READ's task timeout leaves room for its retries.
READ_DEADLINE_SECONDS = 90


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


class RenderedUpgrade(BaseModel):
    """What `helm upgrade` would apply, from a server-side dry run."""

    chart: str
    app_version: str = ""
    values: dict[str, Any]
    manifest: list[dict[str, Any]]


async def read_history(command: pyhelm3.Command, release: str, namespace: str) -> list[RevisionInfo]:
    """`helm history` inside pyhelm3 work, oldest first; [] when the release does not exist."""
    try:
        raw = await command.history(release, namespace=namespace)
    except pyhelm3.errors.ReleaseNotFoundError:
        return []
    return sorted((revision_from_helm(r) for r in raw), key=lambda r: r.revision)


def status_of(release: str, namespace: str, info: RevisionInfo) -> ReleaseStatus:
    return ReleaseStatus(
        release=release,
        namespace=namespace,
        revision=info.revision,
        status=info.status,
        description=info.description,
        updated=info.updated,
    )


@task(**HELM_READ)
def release_history(
    cluster: KubernetesCluster, namespace: str, release: str, helm: str = DEFAULT_HELM, *, missing_ok: bool = False
) -> list[RevisionInfo]:
    """`helm history` as typed rows, oldest first. An unknown release or namespace is reported as such, or, with
    `missing_ok` (a first install expects it), answered with [] : an expected "not installed yet" is no failed
    task and no ERROR in a green run."""
    try:
        return _history_rows(cluster, namespace, release, helm)
    except ReleaseNotFound as exc:
        if not missing_ok:
            raise
        get_run_logger().info("release %r in namespace %r is not installed yet (%s)", release, namespace, exc)
        return []


def _history_rows(cluster: KubernetesCluster, namespace: str, release: str, helm: str) -> list[RevisionInfo]:

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> Any:
        return await command.history(release, namespace=namespace)

    try:
        raw = run_pyhelm3(cluster, helm, READ_DEADLINE_SECONDS, work)
    except pyhelm3.errors.Error as exc:
        error = classify(exc, "history", release, namespace)
        if isinstance(error, ReleaseNotFound):
            with contextlib.suppress(ApiException):  # no right to read namespaces: keep helm's answer
                with cluster.api_client() as api:
                    exists = namespace_exists(api, namespace)
                if not exists:
                    raise ReleaseNotFound("namespace does not exist", release, namespace) from None
        raise error from None
    except TimeoutError:
        raise HelmUnavailable(f"history: helm did not answer in {READ_DEADLINE_SECONDS}s", release, namespace) from None
    history = sorted((revision_from_helm(r) for r in raw), key=lambda r: r.revision)
    if not history:
        raise ReleaseNotFound("release has no history", release, namespace)
    return history


@task(**HELM_READ)
def release_status(cluster: KubernetesCluster, namespace: str, release: str, helm: str = DEFAULT_HELM) -> ReleaseStatus:
    """`helm status`: the live revision and its status."""

    async def work(client: pyhelm3.Client, command: pyhelm3.Command) -> pyhelm3.ReleaseRevision:
        return await client.get_current_revision(release, namespace=namespace)

    try:
        current = run_pyhelm3(cluster, helm, READ_DEADLINE_SECONDS, work)
    except pyhelm3.errors.Error as exc:
        raise classify(exc, "status", release, namespace) from None
    except TimeoutError:
        raise HelmUnavailable(f"status: helm did not answer in {READ_DEADLINE_SECONDS}s", release, namespace) from None
    return ReleaseStatus(
        release=release,
        namespace=namespace,
        revision=current.revision,
        status=current.status.value,
        description=current.description or "",
        updated=current.updated,
    )


@task(**HELM_READ)
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
        return run_pyhelm3(cluster, helm, READ_DEADLINE_SECONDS, work)
    except pyhelm3.errors.Error as exc:
        raise classify(exc, "get revision", release, namespace, revision) from None
    except TimeoutError:
        raise HelmUnavailable(
            f"get revision: helm did not answer in {READ_DEADLINE_SECONDS}s", release, namespace, revision
        ) from None


@task(**HELM_READ)
def render_upgrade(
    cluster: KubernetesCluster,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    *,
    install: bool = False,
    anew: bool = False,
    helm: str = DEFAULT_HELM,
) -> RenderedUpgrade:
    """Render an upgrade against the cluster without changing anything (`--dry-run=server --hide-secret`).

    `anew` renders a fresh `helm install` instead, for a release whose only revision is an interrupted install:
    helm refuses every upgrade of a pending release, even a dry run, but an install's dry run skips the check
    that the name is free.

    Called directly rather than through pyhelm3: its `dry_run=True` passes a bare `--dry-run`, which helm v4
    deprecates and treats as a client-side render (no validation by the API server), and it has no way to
    pass `--hide-secret`, so Secret contents would land in the plan.
    """
    with kubeconfig_file(cluster) as kubeconfig:
        args = ["install" if anew else "upgrade", release, chart, "--namespace", namespace, "--dry-run=server"]
        args += ["--hide-secret", "--output", "json", "--values", "-"]
        if install and not anew:
            args.append("--install")
        argv = helm_argv(cluster, helm, kubeconfig, *args)
        try:
            proc = subprocess.run(
                argv, input=json.dumps(values), capture_output=True, text=True, timeout=READ_DEADLINE_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise HelmUnavailable(
                f"dry-run upgrade: helm did not answer in {READ_DEADLINE_SECONDS}s", release, namespace
            ) from None
    if proc.returncode != 0:
        error = pyhelm3.errors.Error(proc.returncode, proc.stdout.encode(), proc.stderr.encode())
        raise classify(error, "dry-run upgrade", release, namespace)
    out = json.loads(proc.stdout[proc.stdout.index("{") :])
    meta = (out.get("chart") or {}).get("metadata") or {}
    return RenderedUpgrade(
        chart=f"{meta.get('name', '?')}-{meta.get('version', '?')}",
        app_version=str(meta.get("appVersion") or ""),
        values=out.get("config") or {},
        manifest=parse_manifest(out.get("manifest", "")),
    )
