"""Chart: helm lint, helm template and a server-side dry run (dryRun=All) of what it renders; changes nothing."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from kubernetes import client as k8s_client
from prefect import task
from pydantic import BaseModel

from blocks import KubernetesCluster
from rollbook.checklist import CheckResult, Status, one_line
from rollbook.helm_releases import parse_manifest
from tasks.checks.common import JSON, NAMES_SHOWN, connected
from tasks.cluster import namespace_exists
from tasks.helm_cli import helm_argv, kubeconfig_file
from tasks.policies import CHECK_KUBE_API_LONG, HELM_READ

HELM_TIMEOUT_SECONDS = 120


class Rendered(BaseModel):
    """`helm template` output, or why the chart did not render (lint and template stderr)."""

    ok: bool
    manifests: list[JSON] = []
    error: str = ""


def _run_helm(argv: list[str], values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, input=json.dumps(values), capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"helm {argv[1]} did not answer in {HELM_TIMEOUT_SECONDS}s") from None


def _helm_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if "error" in ln.lower()]
    return one_line(" ".join(lines) or proc.stderr or proc.stdout or f"exit {proc.returncode}", 500)


@task(**HELM_READ)
def render_chart(
    cluster: KubernetesCluster, namespace: str, release: str, chart: str, values: dict[str, Any], helm: str
) -> Rendered:
    """`helm template` of the release (values on stdin); a chart that does not render is an answer, not an error."""
    with kubeconfig_file(cluster) as kubeconfig:
        argv = helm_argv(cluster, helm, kubeconfig, "template", release, chart, "--namespace", namespace, "-f", "-")
        proc = _run_helm(argv, values)
    if proc.returncode != 0:
        return Rendered(ok=False, error=f"helm template: {_helm_error(proc)}")
    return Rendered(ok=True, manifests=parse_manifest(proc.stdout))


def server_dry_run(api: k8s_client.ApiClient, namespace: str, manifests: list[JSON]) -> tuple[list[str], int]:
    """Server-side apply of every manifest with dryRun=All: (the API server's objections, one per object;
    how many namespaced objects could not be sent because `namespace` does not exist yet).

    A dry run cannot create the namespace for the objects that follow, so for a first install into a new
    namespace only the namespace's creation and the cluster-scoped objects reach the server."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dyn = DynamicClient(api)
    errors: list[str] = []
    skipped = 0
    exists = namespace_exists(api, namespace)
    if not exists:
        namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        errors += _dry_apply(namespaces, body, None)
    for obj in manifests:
        kind, name = obj.get("kind", "?"), (obj.get("metadata") or {}).get("name", "?")
        try:
            resource = dyn.resources.get(api_version=obj.get("apiVersion"), kind=kind)
        except ResourceNotFoundError:
            errors.append(f"{kind}/{name}: the cluster does not serve {obj.get('apiVersion')} {kind}")
            continue
        if resource.namespaced and not exists:
            skipped += 1
            continue
        ns = namespace if resource.namespaced else None
        body = dict(obj)
        if ns:
            body["metadata"] = {**(obj.get("metadata") or {}), "namespace": ns}
        errors += _dry_apply(resource, body, ns)
    return errors, skipped


def _dry_apply(resource: Any, body: JSON, namespace: str | None) -> list[str]:
    """The API server's objection to one object ([] if none); server trouble is raised (and retried)."""
    from kubernetes.dynamic.exceptions import DynamicApiError

    name = body["metadata"].get("name", "?")
    try:
        resource.server_side_apply(
            body=body,
            name=name,
            namespace=namespace,
            field_manager="rollbook-checklist",
            dry_run="All",
            force_conflicts=True,
        )
    except DynamicApiError as exc:
        if exc.status >= 500 or exc.status in (408, 429):
            raise
        try:
            message = json.loads(exc.body or "").get("message", exc.summary())
        except (TypeError, ValueError):
            message = exc.summary()
        return [f"{body.get('kind', '?')}/{name}: {message}"]
    return []


def chart_result(
    namespace: str, rendered: Rendered, lint_error: str, errors: list[str], skipped: int, seconds: float = 0.0
) -> CheckResult:
    """The chart check's answer from its three steps: lint ('' when clean), template, and the server's dry run."""
    steps = {"lint": lint_error or "ok", "template": "ok" if rendered.ok else rendered.error}
    if rendered.ok:
        steps["server-dry-run"] = "ok" if not errors else f"{len(errors)} object(s) rejected"
        if skipped:
            steps["server-dry-run"] += f"; {skipped} namespaced object(s) not sent: namespace {namespace} is new"
    evidence = {"steps": steps, "objects": len(rendered.manifests), "rejected": errors[:NAMES_SHOWN]}
    problems = []
    if lint_error:
        problems.append(f"helm lint: {lint_error}")
    if not rendered.ok:
        problems.append(rendered.error)
    if errors:
        problems.append(f"server-side dry run rejected {errors[0]}")
    if problems:
        status, reason = Status.FAIL, "; ".join(problems)
    elif skipped:
        status = Status.WARN
        reason = (
            f"lint and template passed; namespace {namespace!r} does not exist yet: its creation passed a "
            f"server-side dry run, but the {skipped} namespaced object(s) could not be (a dry run cannot create "
            "the namespace they need), so the API server has not validated them"
        )
    else:
        status = Status.PASS
        reason = f"lint, template and server-side dry run of {len(rendered.manifests)} object(s) passed"
    return CheckResult(check="chart", status=status, reason=one_line(reason, 500), evidence=evidence, seconds=seconds)


@task(**CHECK_KUBE_API_LONG)
def check_chart(
    cluster: KubernetesCluster,
    namespace: str,
    chart: str,
    values: dict[str, Any],
    rendered: Rendered,
    helm: str,
) -> CheckResult:
    """helm lint, helm template (already done: `rendered`), and a server-side dry-run apply of the result."""
    started = time.monotonic()
    with kubeconfig_file(cluster) as kubeconfig:
        lint = _run_helm(
            helm_argv(cluster, helm, kubeconfig, "lint", chart, "--namespace", namespace, "-f", "-"), values
        )
    errors: list[str] = []
    skipped = 0
    if rendered.ok:
        with connected(cluster) as api:
            errors, skipped = server_dry_run(api, namespace, rendered.manifests)
    lint_error = "" if lint.returncode == 0 else _helm_error(lint)
    return chart_result(namespace, rendered, lint_error, errors, skipped, time.monotonic() - started)


def images_in(manifests: list[JSON]) -> list[str]:
    """Every container image the rendered chart runs, in order of first appearance."""
    found: list[str] = []
    for obj in manifests:
        spec = obj.get("spec") or {}
        pod = ((spec.get("template") or {}).get("spec")) or (spec if obj.get("kind") == "Pod" else {})
        if obj.get("kind") == "CronJob":
            pod = ((((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
        for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
            if c.get("image") and c["image"] not in found:
                found.append(c["image"])
    return found
