"""Pre-deploy checklist: every check of the guide's script, run concurrently, each explained, one verdict.

Unlike the guide's bash script (which stops at the first failure and greps kubectl output), every check runs,
answers pass / warn / fail / error with a one-line reason and its evidence, and the policy decides which answers
block the deploy. Waivers (reason + expiry) are shown in the report. The flow changes nothing: the chart is
checked with `helm template` and a server-side dry run (dryRun=All).

Deploy flows run it first as a subflow: it returns the `Verdict` when the release may go ahead and raises
`ChecklistFailed` (carrying the verdict) when it may not, so the caller stops before changing anything.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import UnfinishedRun
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from pydantic import Field, field_validator, model_validator

from blocks import KubernetesCluster
from flows._cluster_source import ClusterSource
from rollbook import kube_errors
from rollbook.artifacts import artifact_key
from rollbook.capacity import Need, release_needs
from rollbook.checklist import CHECKS, CheckPolicy, CheckResult, Status, Verdict, Waiver, decide, one_line
from rollbook.form_rules import given, not_both
from rollbook.paths import data_dir
from rollbook.reports.checklist import log_lines, markdown, table_rows
from rollbook.sbom import markdown as sbom_markdown
from rollbook.types import (
    BlockName,
    ChartRef,
    FormOptional,
    ImageRef,
    LocalPath,
    Namespace,
    ReleaseName,
    Values,
    ValuesYaml,
)
from rollbook.values import deep_merge, load_yaml
from tasks.checks.capacity import check_capacity, pod_requests_by_node
from tasks.checks.chart import Rendered, check_chart, images_in, render_chart
from tasks.checks.cluster_health import check_cluster_health, list_nodes
from tasks.checks.common import ApiServerUnreachable, reach_api_server
from tasks.checks.current_release import check_current_release
from tasks.checks.db_migration import check_db_migration
from tasks.checks.image_details import check_image_details
from tasks.checks.image_signature import check_image_signature
from tasks.checks.vulnerabilities import check_vulnerabilities
from tasks.cluster import resolve_cluster
from tasks.migrations import MigrationCheck
from tasks.scanners import ScannerKind, severity_ok

# The checks that talk to the API server; when it cannot be reached they all say so instead of running.
CLUSTER_CHECKS = ("cluster-health", "current-release", "chart", "capacity")
UNREACHABLE = kube_errors.UNREACHABLE  # how an unreachable API server's message starts


class ChecklistFailed(RuntimeError):
    """A required check failed or could not answer; the message is the verdict's summary, `verdict` the rest."""

    def __init__(self, summary: str, verdict: Verdict | None = None) -> None:
        super().__init__(summary)
        self.verdict = verdict

    def __reduce__(self) -> tuple[Any, ...]:  # results and states may be pickled: keep the verdict
        return (type(self), (str(self), self.verdict))


class RequestedWorkload(Need):
    """A workload the user declares instead of the chart's: at least one millicore and one byte per pod."""

    cpu_m: int = Field(gt=0, strict=True, description="CPU request of one pod, millicores.")
    memory: int = Field(gt=0, strict=True, description="Memory request of one pod, bytes.")


class ChecklistRequest(ClusterSource):
    """The release to check, and how strict to be."""

    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        not_both(
            given("registry_block"), given("cosign_public_key"), "give registry_block or cosign_public_key, not both"
        ),
    )

    namespace: Namespace = Field(description="Namespace of the release.")
    release: ReleaseName = Field(description="Helm release name.")
    chart: ChartRef = Field(description="Chart directory, packaged chart, or oci:// / repo reference.")
    values: Values = Field(default={}, description="Values for the chart.")
    values_yaml: ValuesYaml = Field(default="", description="Values as a YAML document (merged under `values`).")
    images: list[ImageRef] = Field(
        default=[], description="Images to verify and scan; empty: every image the rendered chart runs."
    )
    requests: list[RequestedWorkload] = Field(
        default=[], description="What the release needs; empty: derive replicas × requests from the chart."
    )
    registry_block: FormOptional[BlockName] = Field(
        default=None, description="'Rollbook Container Registry' block (key)."
    )
    cosign_public_key: FormOptional[LocalPath] = Field(
        default=None, description="A cosign public key (instead of a block)."
    )
    scanner: ScannerKind = Field(default="grype", description="Vulnerability scanner.")
    scanner_executable: FormOptional[LocalPath] = Field(default=None, description="Scanner binary (default: on PATH).")
    severity_threshold: str = Field(default="critical", description="Fail on findings at or above this severity.")
    migration: MigrationCheck | None = Field(
        default=None, description="DB migration status to check (provider, database, expected version); empty: none."
    )
    policy: CheckPolicy = Field(default=CheckPolicy(), description="Which checks may only warn or are skipped.")
    waivers: list[Waiver] = Field(default=[], description="Accepted failures, each with a reason and expiry.")
    helm_executable: LocalPath = Field(default="helm")

    @field_validator("severity_threshold")
    @classmethod
    def _severity(cls, value: str) -> str:
        return severity_ok(value)

    @model_validator(mode="after")
    def _values_parse(self) -> Self:
        if self.registry_block and self.cosign_public_key:
            raise ValueError("give registry_block or cosign_public_key, not both")
        return self

    def merged_values(self) -> dict[str, Any]:
        return deep_merge(load_yaml(self.values_yaml, field="values_yaml"), self.values)


Futures = dict[str, PrefectFuture[Any] | None]


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ApiServerUnreachable) else f"{type(exc).__name__}: {exc}"


def _cause(exc: BaseException, upstream: Sequence[PrefectFuture[Any] | None]) -> str:
    """What made a check fail; a check that never ran because a listing it waited on failed names that failure."""
    if isinstance(exc, UnfinishedRun):
        for future in upstream:
            if future is not None and future.state.is_failed():
                try:
                    future.result()
                except Exception as up:  # noqa: BLE001 - any upstream failure is the cause to name
                    return _describe(up)
    return _describe(exc)


def _collect(name: str, futures: Futures, upstream: Futures, started: float) -> CheckResult:
    """A check's result; a check that raised (after its retries) is an `error` saying what went wrong."""
    future = futures.get(name)
    if future is None:
        return CheckResult(check=name, status=Status.PASS, reason="skipped by policy")
    try:
        result = future.result()
        assert isinstance(result, CheckResult)
        return result
    except Exception as exc:  # noqa: BLE001 - every check must answer, even one that crashed
        waited_on = [upstream.get("nodes"), upstream.get("requested")] if name in CLUSTER_CHECKS else []
        return CheckResult(
            check=name,
            status=Status.ERROR,
            reason=one_line(_cause(exc, waited_on)),
            seconds=time.monotonic() - started,
        )


def _unreachable_cause(cluster: KubernetesCluster) -> str:
    """'' when the API server answers; else the one line every cluster check and the verdict will carry."""
    try:
        reach_api_server(cluster)
    except ApiServerUnreachable as exc:
        return str(exc)
    return ""


def _render(request: ChecklistRequest, cluster: KubernetesCluster, values: dict[str, Any]) -> Rendered:
    try:
        return render_chart(cluster, request.namespace, request.release, request.chart, values, request.helm_executable)
    except Exception as exc:  # noqa: BLE001 - e.g. no helm binary: the chart check reports it
        return Rendered(ok=False, error=one_line(f"helm template: {type(exc).__name__}: {exc}"))


def _submit_cluster_checks(
    request: ChecklistRequest, cluster: KubernetesCluster, values: dict[str, Any], rendered: Rendered
) -> tuple[Futures, Futures]:
    """Nodes are listed once for two checks, and every pod's requests are summed meanwhile (the longest read);
    Prefect hands each listing's result to the checks that wait on it. (checks, the listings they wait on)"""
    wanted = request.policy.level
    nodes: Any = None  # a future whose result Prefect hands to the checks (the tasks take the list)
    if wanted("cluster-health") != "skip" or wanted("capacity") != "skip":
        nodes = list_nodes.submit(cluster)
    requested: Any = None
    if wanted("capacity") != "skip":
        requested = pod_requests_by_node.submit(cluster, request.namespace, request.release)
    futures: Futures = {}
    if wanted("cluster-health") != "skip":
        futures["cluster-health"] = check_cluster_health.submit(cluster, nodes)
    if wanted("current-release") != "skip":
        futures["current-release"] = check_current_release.submit(cluster, request.namespace, request.release)
    if wanted("chart") != "skip":
        futures["chart"] = check_chart.submit(
            cluster, request.namespace, request.chart, values, rendered, request.helm_executable
        )
    if requested is not None and (request.requests or rendered.ok):
        needs: list[Need] = list(request.requests) or release_needs(rendered.manifests)
        futures["capacity"] = check_capacity.submit(nodes, requested, needs)
    return futures, {"nodes": nodes, "requested": requested}


def report_dir(key: str) -> Path:
    """Where files of this run's report are kept (an SBOM too large for an artifact): rollbook's data directory,
    reports/<the report's artifact key>/<the flow run's id, or the time outside a run>."""
    run = flow_run.get_id() or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return data_dir() / "reports" / key / str(run)


def _submit_other_checks(
    request: ChecklistRequest, images: list[str], rendered: Rendered, sbom_dir: Path | None = None
) -> Futures:
    """The checks that need no API server: signatures, the scan, the images' details and the database."""
    wanted = request.policy.level
    futures: Futures = {}
    if wanted("image-signature") != "skip":
        futures["image-signature"] = check_image_signature.submit(
            images, request.cosign_public_key, request.registry_block
        )
    if wanted("vulnerabilities") != "skip":
        unavailable = Status.FAIL if request.policy.scanner_unavailable == "fail" else Status.WARN
        futures["vulnerabilities"] = check_vulnerabilities.submit(
            images,
            request.scanner,
            request.severity_threshold,
            unavailable,
            request.scanner_executable,
            str(sbom_dir) if sbom_dir else None,
            request.registry_block,
        )
    if wanted("image-details") != "skip":
        futures["image-details"] = check_image_details.submit(images, rendered.manifests, request.registry_block)
    if wanted("db-migration") != "skip":
        futures["db-migration"] = check_db_migration.submit(request.migration)
    return futures


def _answer(name: str, request: ChecklistRequest, rendered: Rendered, cause: str) -> CheckResult | None:
    """A cluster check's answer when it was not run: the API server is unreachable, or capacity has no input."""
    if request.policy.level(name) == "skip":
        return CheckResult(check=name, status=Status.PASS, reason="skipped by policy")
    if cause and name in CLUSTER_CHECKS:  # whole: the server, the request, the reason and the kubectl to run
        return CheckResult(check=name, status=Status.ERROR, reason=one_line(cause, 600))
    if name == "capacity" and not request.requests and not rendered.ok:
        return CheckResult(
            check="capacity", status=Status.ERROR, reason="cannot derive requests: the chart did not render"
        )
    return None


@flow(name="predeploy-checklist", log_prints=False)
def predeploy_checklist(request: ChecklistRequest) -> Verdict:
    """Run every check concurrently and report one verdict; raises ChecklistFailed when a required check fails."""
    log = get_run_logger()
    values = request.merged_values()
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    started = time.monotonic()
    needs_cluster = any(request.policy.level(name) != "skip" for name in CLUSTER_CHECKS)
    cause = _unreachable_cause(cluster) if needs_cluster else ""
    rendered = _render(request, cluster, values)
    futures, upstream = ({}, {}) if cause else _submit_cluster_checks(request, cluster, values, rendered)
    key = artifact_key("predeploy", request.namespace, request.release)
    images = request.images or images_in(rendered.manifests)
    futures |= _submit_other_checks(request, images, rendered, report_dir(key))

    results = [_answer(name, request, rendered, cause) or _collect(name, futures, upstream, started) for name in CHECKS]
    cause = cause or next((r.reason for r in results if r.reason.startswith(UNREACHABLE)), "")
    verdict = decide(results, request.policy, request.waivers, cause=cause)
    title = f"{request.namespace}/{request.release}"
    create_table_artifact(table_rows(verdict), key=key + "-table", description=f"pre-deploy checks of {title}")
    create_markdown_artifact(markdown(verdict, title), key=key, description=verdict.summary)
    scan = next((r for r in results if r.check == "vulnerabilities"), None)
    if scan is not None and scan.evidence.get("sbom"):
        sboms = {image: s for image, s in scan.evidence["sbom"].items() if "components" in s}
        create_markdown_artifact(sbom_markdown(sboms, title), key=key + "-sbom", description=f"SBOM of {title}")
    for line in log_lines(verdict):
        log.info("%s", line)
    if not verdict.ready:
        raise ChecklistFailed(verdict.summary, verdict)
    return verdict
