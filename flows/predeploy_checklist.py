"""Pre-deploy checklist: every check of the guide's script, run concurrently, each explained, one verdict.

Unlike the guide's bash script (which stops at the first failure and greps kubectl output), every check runs,
answers pass / warn / fail / error with a one-line reason and its evidence, and the policy decides which answers
block the deploy. Waivers (reason + expiry) are shown in the report. The flow changes nothing: the chart is
checked with `helm template` and a server-side dry run (dryRun=All).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from pydantic import Field, field_validator, model_validator

from flows._cluster_source import DNS_LABEL, RELEASE_NAME, ClusterSource
from rollbook.artifacts import artifact_key
from tasks.checks import (
    Need,
    Rendered,
    check_capacity,
    check_chart,
    check_cluster_health,
    check_current_release,
    check_db_migration,
    check_image_signature,
    check_vulnerabilities,
    images_in,
    list_nodes,
    load_values,
    pod_requests_by_node,
    release_needs,
    render_chart,
    severity_ok,
)
from tasks.checks_model import (
    CHECKS,
    CheckPolicy,
    CheckResult,
    Status,
    Verdict,
    Waiver,
    decide,
    markdown,
    one_line,
    table_rows,
)
from tasks.cluster import resolve_cluster

# registry[:port]/path[:tag][@sha256:digest], lowercase path components, as the distribution spec allows.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


class ChecklistFailed(RuntimeError):
    """A required check failed or could not answer; the message is the verdict."""


class ChecklistRequest(ClusterSource):
    """The release to check, and how strict to be."""

    namespace: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Namespace of the release.")
    release: str = Field(min_length=1, max_length=53, pattern=RELEASE_NAME, description="Helm release name.")
    chart: str = Field(min_length=1, description="Chart directory, packaged chart, or oci:// / repo reference.")
    values: dict[str, Any] = Field(default_factory=dict, description="Values for the chart.")
    values_yaml: str = Field(default="", description="Values as a YAML document (merged under `values`).")
    images: list[str] = Field(
        default_factory=list, description="Images to verify and scan; empty: every image the rendered chart runs."
    )
    requests: list[Need] = Field(
        default_factory=list, description="What the release needs; empty: derive replicas × requests from the chart."
    )
    registry_block: str | None = Field(default=None, description="'Rollbook Container Registry' block with the key.")
    cosign_public_key: str | None = Field(default=None, description="Path of a cosign public key (instead of a block).")
    scanner: str = Field(default="grype", pattern="^grype$", description="Vulnerability scanner.")
    scanner_executable: str | None = Field(default=None, description="Scanner binary (default: on PATH).")
    severity_threshold: str = Field(default="critical", description="Fail on findings at or above this severity.")
    migration_checker: str | None = Field(default=None, description="Registered DB migration checker; empty: none.")
    migration_settings: dict[str, Any] = Field(default_factory=dict)
    policy: CheckPolicy = Field(default_factory=CheckPolicy)
    waivers: list[Waiver] = Field(default_factory=list)
    helm_executable: str = Field(default="helm", min_length=1)

    @field_validator("severity_threshold")
    @classmethod
    def _severity(cls, value: str) -> str:
        return severity_ok(value)

    @field_validator("images")
    @classmethod
    def _image_refs(cls, images: list[str]) -> list[str]:
        bad = [i for i in images if not IMAGE_REF.match(i)]
        if bad:
            raise ValueError(f"not a valid image reference: {', '.join(repr(b) for b in bad)}")
        return images

    @field_validator("chart")
    @classmethod
    def _chart_exists(cls, chart: str) -> str:
        remote = "://" in chart or (not chart.startswith((".", "/", "~")) and chart.count("/") == 1)
        if not remote and not Path(chart).expanduser().exists():
            raise ValueError(f"chart not found: {chart} (no such directory or file)")
        return chart

    @model_validator(mode="after")
    def _values_parse(self) -> Self:
        load_values(self.values_yaml)  # raises a ValueError naming the line
        if self.registry_block and self.cosign_public_key:
            raise ValueError("give registry_block or cosign_public_key, not both")
        return self

    def merged_values(self) -> dict[str, Any]:
        return _merge(load_values(self.values_yaml), self.values)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _collect(name: str, future: PrefectFuture[CheckResult] | None, started: float) -> CheckResult:
    """A check's result; a check that raised (after its retries) is an `error` saying what went wrong."""
    if future is None:
        return CheckResult(check=name, status=Status.PASS, reason="skipped by policy")
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - every check must answer, even one that crashed
        return CheckResult(
            check=name,
            status=Status.ERROR,
            reason=one_line(f"{type(exc).__name__}: {exc}"),
            seconds=time.monotonic() - started,
        )


@flow(name="predeploy-checklist", log_prints=False)
def predeploy_checklist(request: ChecklistRequest) -> Verdict:
    """Run every check concurrently and report one verdict; fails when a required check fails."""
    log = get_run_logger()
    policy = request.policy
    values = request.merged_values()
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    started = time.monotonic()

    def wanted(name: str) -> bool:
        return policy.level(name) != "skip"

    # nodes are listed once for both checks, and every pod's requests are summed meanwhile (the longest read);
    # Prefect hands each listing's result to the checks that wait on it
    nodes: Any = list_nodes.submit(cluster) if wanted("cluster-health") or wanted("capacity") else None
    requested: Any = (
        pod_requests_by_node.submit(cluster, request.namespace, request.release) if wanted("capacity") else None
    )
    futures: dict[str, PrefectFuture[CheckResult] | None] = {
        "cluster-health": (
            check_cluster_health.submit(cluster, nodes) if nodes is not None and wanted("cluster-health") else None
        ),
        "current-release": (
            check_current_release.submit(cluster, request.namespace, request.release)
            if wanted("current-release")
            else None
        ),
        "db-migration": (
            check_db_migration.submit(request.migration_checker, request.migration_settings)
            if wanted("db-migration")
            else None
        ),
    }
    try:
        rendered: Rendered = render_chart(
            cluster, request.namespace, request.release, request.chart, values, request.helm_executable
        )
    except Exception as exc:  # noqa: BLE001 - e.g. no helm binary: the chart check reports it
        rendered = Rendered(ok=False, error=one_line(f"helm template: {type(exc).__name__}: {exc}"))
    images = request.images or images_in(rendered.manifests)
    if wanted("image-signature"):
        futures["image-signature"] = check_image_signature.submit(
            images, request.cosign_public_key, request.registry_block
        )
    if wanted("vulnerabilities"):
        unavailable = "fail" if policy.scanner_unavailable == "fail" else "warn"
        futures["vulnerabilities"] = check_vulnerabilities.submit(
            images, request.scanner, request.severity_threshold, unavailable, request.scanner_executable
        )
    if wanted("chart"):
        futures["chart"] = check_chart.submit(
            cluster, request.namespace, request.chart, values, rendered, request.helm_executable
        )
    needs = request.requests or release_needs(rendered.manifests)
    if requested is not None:
        futures["capacity"] = check_capacity.submit(nodes, requested, needs)

    results: list[CheckResult] = []
    for name in CHECKS:
        result = _collect(name, futures.get(name), started)
        if name == "capacity" and wanted(name) and not request.requests and not rendered.ok:
            result = CheckResult(
                check="capacity", status=Status.ERROR, reason="cannot derive requests: the chart did not render"
            )
        results.append(result)

    verdict = decide(results, policy, request.waivers)
    title = f"{request.namespace}/{request.release}"
    key = artifact_key("predeploy", request.namespace, request.release)
    create_table_artifact(table_rows(verdict), key=key + "-table", description=f"pre-deploy checks of {title}")
    create_markdown_artifact(markdown(verdict, title), key=key, description=verdict.summary)
    for row in verdict.rows:
        log.info("%s: %s (%s) %s", row.check, row.status, row.outcome, row.reason)
    log.info("verdict: %s", verdict.summary)
    if not verdict.ready:
        raise ChecklistFailed(verdict.summary)
    return verdict
