"""The guide's "If Migration Fails" runbook for an Alembic-migrated app on a Deployment.

1. **Pause the rollout** (`spec.paused`, as `kubectl rollout pause`): the failing release stops replacing pods
   that still work. The schema at failure and the chosen downgrade target are recorded on the Deployment
   (`rollbook.dev/migration-failure`), so a re-run continues from them.
2. **Roll the app back to the newest schema-compatible revision**: last-known-good with the schema guard picks
   the newest revision that rolled out completely and declares (`rollbook.dev/schema-compatible`) the schema the
   database has *now*; the rollout is resumed (kubectl refuses to roll back a paused Deployment, and so does
   deployment-undo) and deployment-undo restores exactly that revision as a sub-flow, under this run's controls.
3. **Reverse the schema change** when the migration has a downgrade: `alembic downgrade` to `downgrade_to`, else
   to the previous head (the applied revisions without the newest one). It is refused, with the reason, when the
   script's `downgrade()` refuses (seen in its offline SQL before anything changes), when the restored revision
   does not declare the target schema, or with several heads.
4. **Evidence**: the version table, every lock held or waited for with its session's query, aborted
   transactions, and the pods' own errors, read before any change (and again at the end) into the report.

Why this order: the app goes back first and the schema second. Code that reads both shapes works on the
schema that failed *and* on the one before, so rolling it back is safe at once; dropping a column under code
that still reads it would turn a failed release into an outage. Hence step 2 picks by today's schema and step
3 only runs when the restored revision also declares the target schema.

Plan mode reads everything, shows each step (the downgrade's offline SQL included) and changes nothing.
Approval is asked once for the whole plan; the undo sub-flow is not asked again. A re-run reads the real
state: a paused Deployment is not paused again, a rollback this flow applied is recognised (the undo's own
record) and only its wait is finished, a database already at the target is not downgraded again.
"""

from __future__ import annotations

from typing import Any, Self

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field, SecretStr, model_validator

from flows._deployment_target import DeploymentTarget
from flows._schema_gate import SchemaGuardField, open_gate
from flows.deployment_undo import UndoRequest, _fingerprint, deployment_undo
from flows.last_known_good import NoKnownGoodRevision, pick_last_known_good
from rollbook import revisions, rollback_guard
from rollbook.artifacts import artifact_key
from rollbook.change import (
    ChangeControls,
    change_annotations,
    not_approved_state,
    request_approval,
    subflow_result,
)
from rollbook.migration_failure import (
    RECORD_ANNOTATION,
    DowngradePlan,
    FailureRecord,
    judge_target,
    plan_downgrade,
    read_record,
)
from rollbook.reports.migration_failure import MigrationFailureResult, StepRecord, result_markdown
from rollbook.revisions import JSON
from rollbook.schema_compat import declaration_of_template
from rollbook.types import FormOptional
from tasks.cluster import resolve_cluster
from tasks.deployment_pause import annotate_deployment, set_deployment_paused
from tasks.kube import deployment_pod_problems, read_deployment_and_replica_sets
from tasks.schema_downgrade import (
    downgrade_schema,
    guard_dsn,
    offline_downgrade_sql,
    previous_heads,
    read_alembic_heads,
    read_evidence,
)
from tasks.schema_guard import SchemaGuard
from tasks.schema_migrations import SchemaMigrationError

__all__ = ["MigrationFailureRequest", "MigrationFailureResult", "RollbackImpossible", "migration_failure"]

_REVISION = r"^[A-Za-z0-9_]{1,64}$"


class RollbackImpossible(RuntimeError):
    """No revision can run on the database's current schema: nothing was changed (roll forward instead)."""


class MigrationFailureRequest(DeploymentTarget, SchemaGuardField):
    schema_guard: SchemaGuard = Field(  # required here
        description="The app's database (Alembic, with script_location): judged for the rollback, downgraded."
    )
    downgrade: bool = Field(default=True, description="Reverse the schema change when the migration allows it.")
    downgrade_to: FormOptional[str] = Field(
        default=None, pattern=_REVISION, description="Alembic revision to downgrade to; default: the previous head."
    )
    wait_timeout_seconds: FormOptional[int] = Field(
        default=None, ge=1, le=6 * 3600, description="The rollback's rollout wait; default as deployment-undo."
    )
    statement_timeout_seconds: int = Field(default=300, ge=1, le=3600, description="PostgreSQL statement_timeout.")
    lock_timeout_seconds: int = Field(default=5, ge=1, le=600, description="PostgreSQL lock_timeout for DDL.")

    @model_validator(mode="after")
    def _alembic(self) -> Self:
        if self.schema_guard is None or self.schema_guard.kind != "alembic" or not self.schema_guard.script_location:
            raise ValueError("migration-failure needs schema_guard.kind=alembic with its script_location")
        return self


def _undo_request(request: MigrationFailureRequest, namespace: str, to_revision: int) -> UndoRequest:
    return UndoRequest(
        cluster_block=request.cluster_block,
        kubeconfig_path=request.kubeconfig_path,
        context=request.context,
        namespace=namespace,
        deployment=request.deployment,
        to_revision=to_revision,
        schema_guard=request.schema_guard,
        wait_timeout_seconds=request.wait_timeout_seconds,
    )


def _applied_rollback(request: MigrationFailureRequest, namespace: str, deployment: JSON) -> int | None:
    """The revision a rollback of ours (deployment-undo's own record, same request) restored, if still live."""
    record = rollback_guard.rollback_in_place(deployment)
    if record is None:
        return None
    mine = record.request == _fingerprint(_undo_request(request, namespace, record.to_revision), namespace)
    return record.to_revision if mine else None


@flow(name="migration-failure")
def migration_failure(
    request: MigrationFailureRequest, controls: ChangeControls
) -> MigrationFailureResult | State[MigrationFailureResult]:
    """Pause the rollout, roll the app back to the newest schema-compatible revision, downgrade the schema when
    the migration allows it, and report the evidence."""
    guard = request.schema_guard
    location = str(guard.script_location)
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    dsn = guard_dsn(guard)

    evidence = read_evidence(dsn, guard.table or "alembic_version")
    heads = read_alembic_heads(dsn)
    pod_errors = {p: why for p, why in deployment_pod_problems(cluster, namespace, request.deployment).items() if why}
    deployment, replica_sets = read_deployment_and_replica_sets(cluster, namespace, request.deployment)
    record = read_record(revisions.annotations_of(deployment), heads)
    result = MigrationFailureResult(
        outcome="planned" if controls.plan else "unchanged",
        summary="",
        namespace=namespace,
        deployment=request.deployment,
        database=str(evidence.get("where", "")),
        heads_before=list(heads),
        evidence=evidence,
        pod_errors=pod_errors,
    )

    # step 2's target first: if nothing can run on today's schema, nothing is paused either
    gate = open_gate(request)
    assert gate is not None  # schema_guard is required here
    rolled_back = _applied_rollback(request, namespace, deployment)
    if rolled_back is not None:
        to_revision, template = rolled_back, (deployment.get("spec") or {}).get("template") or {}
    else:
        try:
            target, result.candidates = pick_last_known_good(deployment, replica_sets, schema=gate)
        except NoKnownGoodRevision as exc:
            result.summary = f"refused: {exc}; roll forward instead (fix the release). Nothing changed"
            _publish(result)
            raise RollbackImpossible(result.summary) from None
        to_revision, template = revisions.revision_of(target), (target.get("spec") or {}).get("template") or {}
    result.rollback_to_revision = to_revision

    failed = record.failed_heads if record else heads
    downgrade_to = request.downgrade_to or (record.downgrade_to if record else "")
    if not downgrade_to:
        previous = previous_heads(location, failed) if failed else ()
        downgrade_to = previous[0] if len(previous) == 1 else ""
    result.downgrade_to = downgrade_to
    verdict = (
        judge_target(declaration_of_template(template), downgrade_to, gate.state.parents) if downgrade_to else None
    )
    plan = plan_downgrade(
        wanted=request.downgrade,
        heads_now=heads,
        failed_heads=failed,
        target=(downgrade_to,) if downgrade_to else previous_heads(location, failed) if failed else (),
        app_verdict=verdict,
    )
    sql = ""
    if plan.status == "todo":
        try:
            sql = offline_downgrade_sql(dsn, location, start=plan.start, target=plan.target)
        except SchemaMigrationError as exc:
            plan = DowngradePlan("refused", f"the migration has no usable downgrade: {exc}")

    paused = bool((deployment.get("spec") or {}).get("paused"))
    pause_todo = rolled_back is None and not paused
    steps = [
        StepRecord(
            step="pause",
            status="already" if not pause_todo else "planned",
            detail="rolled back already" if rolled_back is not None else "paused already" if paused else "pause",
        ),
        StepRecord(
            step="rollback",
            status="already" if rolled_back is not None else "planned",
            detail=f"{'resume and ' if rolled_back is None else ''}deployment-undo to revision {to_revision} "
            f"({', '.join(revisions.template_images(template))}; "
            f"{declaration_of_template(template) or 'no schema declaration'})",
        ),
        StepRecord(
            step="downgrade",
            status={"todo": "planned", "done": "already"}.get(plan.status, plan.status),  # type: ignore[arg-type]
            detail=plan.reason,
            sql=sql,
        ),
    ]
    result.steps = steps
    if controls.plan:
        result.summary = "plan only: " + "; ".join(f"{s.step}: {s.status}" for s in steps) + "; nothing changed"
        return _publish(result)

    decision = request_approval(
        controls, result_markdown(result.model_copy(update={"summary": "Approve these steps?"}))
    )
    if not decision.approved:
        result.outcome, result.summary = "not-approved", f"not approved: nothing changed ({decision.comment})"
        return not_approved_state(_publish(result), decision)
    result.approval = decision.comment
    changed = False
    note = {RECORD_ANNOTATION: FailureRecord(failed_heads=failed, downgrade_to=downgrade_to).dumps()}
    try:
        if rolled_back is None:
            set_deployment_paused(
                cluster,
                namespace,
                request.deployment,
                paused=True,
                annotations={**change_annotations(controls, "pause"), **note},
            )
            steps[0].status, changed = ("done" if pause_todo else "already"), changed or pause_todo
            set_deployment_paused(
                cluster,
                namespace,
                request.deployment,
                paused=False,
                annotations=change_annotations(controls, "resume", **{"to-revision": str(to_revision)}),
            )
            changed = True
        undo = subflow_result(
            deployment_undo(
                _undo_request(request, namespace, to_revision), controls.model_copy(update={"require_approval": False})
            )
        )
        result.undo = undo.model_dump(include={"outcome", "summary", "from_revision", "to_revision"})
        steps[1].status = "done" if undo.outcome == "changed" else "already"
        changed = changed or undo.outcome == "changed"
        # the undo gives the Deployment its old revision's annotations: the record goes back on (metadata only)
        annotate_deployment(cluster, namespace, request.deployment, note)
        if plan.status == "todo":
            done = downgrade_schema(
                dsn,
                location,
                plan.target,
                statement_timeout_seconds=request.statement_timeout_seconds,
                lock_timeout_seconds=request.lock_timeout_seconds,
                application_name=f"rollbook migration-failure {flow_run.name or ''}".strip(),
            )
            annotate_deployment(
                cluster,
                namespace,
                request.deployment,
                {
                    **change_annotations(
                        controls, "schema-downgrade", **{"schema-from": plan.start, "schema-to": plan.target}
                    ),
                    **note,
                },
            )
            steps[2].status, steps[2].detail, changed = "done", f"{plan.reason} in {done['seconds']}s", True
    except Exception as exc:
        result.outcome = "changed" if changed else "unchanged"
        result.summary = f"failed: {exc}"
        _publish(result, dsn, guard.table)
        raise
    result.outcome = "changed" if changed else "unchanged"
    result.summary = "; ".join(f"{s.step}: {s.status} ({s.detail})" for s in steps)
    return _publish(result, dsn, guard.table)


def _publish(result: MigrationFailureResult, dsn: SecretStr | None = None, table: str | None = None) -> Any:
    """The evidence read again at the end (after changes), the report as the run's artifact."""
    if dsn is not None:
        try:
            result.evidence_after = read_evidence(dsn, table or "alembic_version")
            result.heads_after = list(read_alembic_heads(dsn))
        except Exception as exc:  # the report still goes out
            get_run_logger().warning("could not read the database again: %s", exc)
    else:
        result.heads_after = result.heads_before
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(
        result_markdown(result), key=artifact_key("migration-failure", result.namespace, result.deployment)
    )
    return result
