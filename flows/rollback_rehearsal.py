"""Drill: prove on a real cluster that the Helm rollback runbook works, in a scratch namespace.

Deploys `from_tag`, upgrades to `to_tag`, rolls back with the `helm-rollback` runbook itself, and checks that
`from_tag` is live again with every pod Ready. Each step is timed; the report is an artifact and the return
value, and a failed drill fails the flow run (so a schedule can alert on it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field, JsonValue, model_validator

from blocks import KubernetesCluster
from flows._cluster_source import DNS_LABEL, RELEASE_NAME, ClusterSource
from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from flows.helm_rollback import HelmRollbackRequest, helm_rollback
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls
from tasks.cluster import resolve_cluster
from tasks.helm_release import release_status
from tasks.release_workloads import release_pods_ready
from tasks.scratch_namespace import delete_scratch_namespace, ensure_scratch_namespace

PURPOSE = "rollback-rehearsal"
DEMO_CHART = Path(__file__).resolve().parents[1] / "charts" / "demo-app"


class RollbackRehearsalRequest(ClusterSource):
    """Where to rehearse, with which chart and which two versions."""

    namespace: str = Field(
        default="rollbook-rehearsal",
        max_length=63,
        pattern=DNS_LABEL,
        description="Scratch namespace: created by the drill and deleted afterwards; must not exist as a "
        "non-scratch namespace.",
    )
    release: str = Field(default="rehearsal", max_length=53, pattern=RELEASE_NAME, description="Release name.")
    chart: str | None = Field(default=None, description="Chart to rehearse with; empty: the bundled demo-app chart.")
    values: dict[str, JsonValue] = Field(default_factory=dict, description="Values for both versions.")
    image_repository: str | None = Field(default=None, description="Sets image.repository when given.")
    from_tag: str = Field(default="1.0.0", min_length=1, description="The known-good version deployed first.")
    to_tag: str = Field(default="1.1.0", min_length=1, description="The new version that is then rolled back.")
    timeout_seconds: int = Field(default=120, ge=10, le=3600, description="helm --timeout for each step.")
    keep: bool = Field(default=False, description="Keep the scratch namespace afterwards (for debugging).")
    helm_executable: str = Field(default="helm", min_length=1, description="helm v4 binary (name on PATH or path).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        if self.from_tag == self.to_tag:
            raise ValueError("from_tag and to_tag must differ, or the rollback proves nothing")
        return self


class StepResult(BaseModel):
    step: str
    ok: bool
    seconds: float
    detail: str = ""


class RehearsalFailed(RuntimeError):
    """The drill failed; `report` holds every step's result."""

    def __init__(self, message: str, report: dict[str, Any] | None = None):
        super().__init__(message)
        self.report = report or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.report))


@flow(name="rollback-rehearsal")
def rollback_rehearsal(request: RollbackRehearsalRequest) -> dict[str, Any]:
    """Deploy v1, upgrade to v2, roll back with the helm-rollback runbook, verify v1 is live and Ready."""
    log = get_run_logger()
    ns, name = request.namespace, request.release
    chart = request.chart or str(DEMO_CHART)
    controls = ChangeControls(
        reason=f"rollback rehearsal {flow_run.name or ''}".strip(), requested_by="rollbook rollback-rehearsal"
    )
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    steps: list[StepResult] = []
    created = False

    def run_step(step: str, action: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = action()
            ok = True
        except Exception as exc:  # the drill records the failure and stops; cleanup still runs
            detail, ok = f"{type(exc).__name__}: {exc}", False
        steps.append(StepResult(step=step, ok=ok, seconds=round(time.monotonic() - started, 2), detail=detail))
        (log.info if ok else log.error)("%s: %s (%.1fs) %s", step, "ok" if ok else "FAILED", steps[-1].seconds, detail)
        return ok

    def upgrade_to(tag: str, install: bool) -> Callable[[], str]:
        def action() -> str:
            out = atomic_upgrade(
                AtomicUpgradeRequest(
                    **_cluster_fields(request),
                    namespace=ns,
                    release=name,
                    chart=chart,
                    values=_values(request, tag),
                    reuse_values=False,
                    install=install,
                    timeout_seconds=request.timeout_seconds,
                    helm_executable=request.helm_executable,
                ),
                controls,
            )
            return f"revision {out.live_revision} live"

        return action

    def verify(tag: str) -> Callable[[], str]:
        def action() -> str:
            return _verify_live(cluster, ns, name, tag, request.helm_executable)

        return action

    def roll_back() -> str:
        out = helm_rollback(
            HelmRollbackRequest(
                **_cluster_fields(request),
                namespace=ns,
                release=name,
                timeout_seconds=request.timeout_seconds,
                helm_executable=request.helm_executable,
            ),
            controls,
        )
        return f"revision {out.from_revision} -> {out.to_revision} (new revision {out.new_revision})"

    def create() -> str:
        nonlocal created
        created = ensure_scratch_namespace(cluster, ns, PURPOSE)
        return "created" if created else "reused"

    plan = [
        ("create scratch namespace", create),
        (f"deploy {request.from_tag}", upgrade_to(request.from_tag, install=True)),
        (f"verify {request.from_tag} live", verify(request.from_tag)),
        (f"upgrade to {request.to_tag}", upgrade_to(request.to_tag, install=False)),
        (f"verify {request.to_tag} live", verify(request.to_tag)),
        ("roll back (helm-rollback runbook)", roll_back),
        (f"verify {request.from_tag} live again", verify(request.from_tag)),
    ]
    for step, action in plan:
        if not run_step(step, action):
            break
    if request.keep:
        steps.append(StepResult(step="cleanup", ok=True, seconds=0.0, detail=f"kept namespace {ns} (keep=True)"))
    else:
        run_step(
            "delete scratch namespace", lambda: "deleted" if delete_scratch_namespace(cluster, ns, PURPOSE) else "gone"
        )

    passed = all(s.ok for s in steps) and len(steps) >= len(plan)
    report: dict[str, Any] = {
        "passed": passed,
        "namespace": ns,
        "release": name,
        "from_tag": request.from_tag,
        "to_tag": request.to_tag,
        "total_seconds": round(sum(s.seconds for s in steps), 2),
        "steps": [s.model_dump() for s in steps],
    }
    key = artifact_key(PURPOSE, ns, name)
    create_table_artifact([s.model_dump() for s in steps], key=f"{key}-steps", description="rehearsal steps")
    create_markdown_artifact(_report_markdown(report), key=key, description="rollback rehearsal report")
    if not passed:
        failed = next((s for s in steps if not s.ok), None)
        raise RehearsalFailed(
            f"rollback rehearsal FAILED at {failed.step if failed else '?'}: {failed.detail if failed else ''}", report
        )
    return report


def _cluster_fields(request: RollbackRehearsalRequest) -> dict[str, Any]:
    return {
        "cluster_block": request.cluster_block,
        "kubeconfig_path": request.kubeconfig_path,
        "context": request.context,
    }


def _values(request: RollbackRehearsalRequest, tag: str) -> dict[str, Any]:
    values: dict[str, Any] = dict(request.values)
    image = dict(values.get("image") or {})
    if request.image_repository:
        image["repository"] = request.image_repository
    image["tag"] = tag
    values["image"] = image
    return values


def _verify_live(cluster: KubernetesCluster, namespace: str, release: str, tag: str, helm: str) -> str:
    """Release deployed, workloads and every pod on `tag`, all Ready; old pods may need a moment to go."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _check_live(cluster, namespace, release, tag, helm)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def _check_live(cluster: KubernetesCluster, namespace: str, release: str, tag: str, helm: str) -> str:
    status = release_status(cluster, namespace, release, helm)
    pods = release_pods_ready(cluster, namespace, release)
    problems = list(pods.problems)
    if status.status != "deployed":
        problems.append(f"release status is {status.status}")
    images = [image for w in pods.workloads for image in w.images]
    wrong = [image for image in images if not image.endswith(f":{tag}")]
    if not images:
        problems.append("no workload images found")
    if wrong:
        problems.append(f"images not at {tag}: {', '.join(wrong)}")
    pod_images = [image for p in pods.pods for image in p.images if not image.endswith(f":{tag}")]
    if pod_images:
        problems.append(f"pods still running {', '.join(sorted(set(pod_images)))}")
    if problems:
        raise AssertionError("; ".join(problems))
    return (
        f"revision {status.revision} {status.status}, {len(pods.pods)} pod(s) Ready on {', '.join(sorted(set(images)))}"
    )


def _report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Rollback rehearsal {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"`{report['release']}` in scratch namespace `{report['namespace']}`: {report['from_tag']} → "
        f"{report['to_tag']} → rollback, {report['total_seconds']}s in total",
        "",
        "| step | result | seconds | detail |",
        "|---|---|---|---|",
    ]
    for s in report["steps"]:
        detail = str(s["detail"]).replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {s['step']} | {'ok' if s['ok'] else 'FAILED'} | {s['seconds']} | {detail} |")
    return "\n".join(lines)
