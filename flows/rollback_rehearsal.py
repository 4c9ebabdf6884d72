"""Drill: prove on a real cluster that the Helm rollback runbook works, in a scratch namespace.

Deploys `from_tag`, upgrades to `to_tag`, rolls back with the `helm-rollback` runbook itself, and checks that
`from_tag` is live again with every pod Ready. Each step is timed; the report is an artifact and the return
value, and a failed drill fails the flow run (so a schedule can alert on it). It changes a cluster, so it takes
`controls`: a plan lists the steps and changes nothing, approval is asked once before the scratch namespace is
created, and reason/requested_by go on everything the drill's runbooks annotate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State
from pydantic import Field, model_validator

from blocks import KubernetesCluster
from flows._cluster_source import ClusterSource
from flows.atomic_upgrade import AtomicUpgradeRequest, atomic_upgrade
from flows.helm_rollback import HelmRollbackRequest, helm_rollback
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, not_approved_state, request_approval, subflow_result
from rollbook.helm_results import RehearsalResult, StepResult
from rollbook.reports.helm import rehearsal_plan, rehearsal_report, titled
from rollbook.types import ChartRef, FormOptional, ImageRepository, ImageTag, LocalPath, Namespace, ReleaseName, Values
from tasks.cluster import resolve_cluster
from tasks.helm_release import release_status
from tasks.release_workloads import release_pods_ready
from tasks.scratch_namespace import delete_scratch_namespace, ensure_scratch_namespace

PURPOSE = "rollback-rehearsal"
DEMO_CHART = Path(__file__).resolve().parents[1] / "charts" / "demo-app"


class RollbackRehearsalRequest(ClusterSource):
    """Where to rehearse, with which chart and which two versions."""

    namespace: Namespace = Field(
        default="rollbook-rehearsal",
        description="Scratch namespace: created by the drill and deleted afterwards; must not exist as a "
        "non-scratch namespace.",
    )
    release: ReleaseName = Field(default="rehearsal", description="Release name.")
    chart: FormOptional[ChartRef] = Field(
        default=None, description="Chart to rehearse; empty: the bundled demo-app chart."
    )
    values: Values = Field(default={}, description="Values for both versions.")
    image_repository: FormOptional[ImageRepository] = Field(
        default=None, description="Sets image.repository when given."
    )
    from_tag: ImageTag = Field(default="1.0.0", description="The known-good version deployed first.")
    to_tag: ImageTag = Field(default="1.1.0", description="The new version that is then rolled back.")
    timeout_seconds: int = Field(default=120, ge=10, le=3600, description="helm --timeout for each step.")
    keep: bool = Field(default=False, description="Keep the scratch namespace afterwards (for debugging).")
    helm_executable: LocalPath = Field(default="helm", description="helm v4 binary (name on PATH or path).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        if self.from_tag == self.to_tag:
            raise ValueError("from_tag and to_tag must differ, or the rollback proves nothing")
        return self


# The drill only touches its own scratch namespace, so by default it runs unattended (make demo, CI).
DRILL_CONTROLS = ChangeControls(
    reason="rollback rehearsal in a scratch namespace", requested_by="rollbook rollback-rehearsal"
)


class RehearsalFailed(RuntimeError):
    """The drill failed; `result` holds every step's result."""

    def __init__(self, message: str, result: RehearsalResult | None = None):
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (str(self), self.result))


class _Drill:
    """The drill's steps against one cluster, each timed and recorded; a failed step stops the rest."""

    def __init__(self, request: RollbackRehearsalRequest, controls: ChangeControls, cluster: KubernetesCluster):
        self.request, self.cluster = request, cluster
        # approval (if asked) covers the whole drill: the runbooks it calls do not ask again
        self.controls = controls.model_copy(update={"plan": False, "require_approval": False})
        self.steps: list[StepResult] = []
        self.log = get_run_logger()

    def plan(self) -> list[tuple[str, Callable[[], str]]]:
        r = self.request
        return [
            ("create scratch namespace", self.create),
            (f"deploy {r.from_tag}", lambda: self.upgrade_to(r.from_tag, install=True)),
            (
                f"verify {r.from_tag} live",
                lambda: _verify_live(self.cluster, r.namespace, r.release, r.from_tag, r.helm_executable),
            ),
            (f"upgrade to {r.to_tag}", lambda: self.upgrade_to(r.to_tag, install=False)),
            (
                f"verify {r.to_tag} live",
                lambda: _verify_live(self.cluster, r.namespace, r.release, r.to_tag, r.helm_executable),
            ),
            ("roll back (helm-rollback runbook)", self.roll_back),
            (
                f"verify {r.from_tag} live again",
                lambda: _verify_live(self.cluster, r.namespace, r.release, r.from_tag, r.helm_executable),
            ),
        ]

    def run(self, step: str, action: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail, ok = action(), True
        except Exception as exc:  # noqa: BLE001 - the drill records the failure and stops; cleanup still runs
            detail, ok = f"{type(exc).__name__}: {exc}", False
        seconds = round(time.monotonic() - started, 3)
        self.steps.append(StepResult(step=step, ok=ok, seconds=seconds, detail=detail))
        (self.log.info if ok else self.log.error)("%s: %s (%.1fs) %s", step, "ok" if ok else "FAILED", seconds, detail)
        return ok

    def create(self) -> str:
        return "created" if ensure_scratch_namespace(self.cluster, self.request.namespace, PURPOSE) else "reused"

    def cleanup(self) -> None:
        ns = self.request.namespace
        if self.request.keep:
            self.steps.append(
                StepResult(step="cleanup", ok=True, seconds=0.0, detail=f"kept namespace {ns} (keep=True)")
            )
        else:
            self.run(
                "delete scratch namespace",
                lambda: "deleted" if delete_scratch_namespace(self.cluster, ns, PURPOSE) else "gone",
            )

    def upgrade_to(self, tag: str, *, install: bool) -> str:
        r = self.request
        upgraded = atomic_upgrade(
            AtomicUpgradeRequest(
                **_cluster_fields(r),
                namespace=r.namespace,
                release=r.release,
                chart=r.chart or str(DEMO_CHART),
                values=_values(r, tag),
                reuse_values=False,
                install=install,
                timeout_seconds=r.timeout_seconds,
                helm_executable=r.helm_executable,
                run_checklist=False,  # the drill proves the rollback path, not the release's images
            ),
            self.controls,
        )
        out = subflow_result(upgraded)
        return f"revision {out.live_revision} live"

    def roll_back(self) -> str:
        r = self.request
        target = HelmRollbackRequest(
            **_cluster_fields(r),
            namespace=r.namespace,
            release=r.release,
            timeout_seconds=r.timeout_seconds,
            helm_executable=r.helm_executable,
        )
        out = subflow_result(helm_rollback(target, self.controls))
        return f"revision {out.from_revision} -> {out.to_revision} (new revision {out.new_revision})"


@flow(name="rollback-rehearsal")
def rollback_rehearsal(
    request: RollbackRehearsalRequest, controls: ChangeControls = DRILL_CONTROLS
) -> RehearsalResult | State[RehearsalResult]:
    """Plan/approve, then deploy v1, upgrade to v2, roll back with the helm-rollback runbook, verify v1 is
    live and Ready, delete the scratch namespace; every step timed."""
    ns, name = request.namespace, request.release
    key = artifact_key(PURPOSE, ns, name)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    drill = _Drill(request, controls, cluster)
    planned = [step for step, _ in drill.plan()] + (["delete scratch namespace"] if not request.keep else [])
    base = RehearsalResult(
        outcome="planned",
        summary=f"plan only: {len(planned)} steps in scratch namespace {ns}; nothing changed",
        namespace=ns,
        release=name,
        from_tag=request.from_tag,
        to_tag=request.to_tag,
    )
    plan_md = rehearsal_plan(planned, base, requested_by=controls.requested_by, reason=controls.reason)

    if controls.plan:
        create_markdown_artifact(titled("Plan (nothing changed)", plan_md), key=key, description="rehearsal plan")
        return base
    decision = request_approval(controls, plan_md)
    if not decision.approved:
        create_markdown_artifact(titled("Not approved: nothing changed", plan_md, decision.comment), key=key)
        summary = f"not approved ({decision.comment}): nothing changed"
        update = {"outcome": "not-approved", "summary": summary, "approval": decision.comment}
        return not_approved_state(base.model_copy(update=update), decision)

    started = time.monotonic()
    for step, action in drill.plan():
        if not drill.run(step, action):
            break
    drill.cleanup()
    passed = all(s.ok for s in drill.steps) and len(drill.steps) >= len(planned)
    failed = next((s for s in drill.steps if not s.ok), None)
    verdict = "PASSED" if passed else f"FAILED at {failed.step if failed else '?'}"
    result = base.model_copy(
        update={
            "outcome": "changed",
            "summary": f"rollback rehearsal {verdict}",
            "approval": decision.comment if controls.require_approval else None,
            "passed": passed,
            "total_seconds": round(time.monotonic() - started, 3),
            "steps": drill.steps,
        }
    )
    create_table_artifact([s.model_dump() for s in result.steps], key=f"{key}-steps", description="rehearsal steps")
    create_markdown_artifact(rehearsal_report(result), key=key, description="rollback rehearsal report")
    if not passed:
        raise RehearsalFailed(
            f"rollback rehearsal FAILED at {failed.step if failed else '?'}: {failed.detail if failed else ''}", result
        )
    return result


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
