"""Delete the etcd snapshots no retention rule keeps (keep-last, hourly, daily, weekly; rollbook.retention).

The newest verified snapshot is never deleted, and neither is one whose manifest is missing or unreadable: it
is kept and listed for a person. `plan` lists exactly what would go and deletes nothing; approval, when asked
for, shows that list. A snapshot is deleted with its manifest (the snapshot first, so an interrupted run leaves
at worst a manifest without its snapshot, which no restore can pick).
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field

from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, not_approved_state, request_approval
from rollbook.etcd_backup import manifest_name
from rollbook.reports.etcd import RetentionResult, retention_markdown
from rollbook.retention import RetentionPlan, RetentionRules, plan_retention
from rollbook.types import BlockName, DnsLabel
from tasks.backup_store import delete_objects, load_bucket
from tasks.snapshot_catalogue import catalogue_snapshots


class RetentionRequest(BaseModel):
    """Which cluster's snapshots, in which bucket, under which rules."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    bucket_block: BlockName = Field(description="Saved 'Rollbook Backup Bucket' block holding the snapshots.")
    cluster_name: DnsLabel = Field(description="The cluster whose snapshots are pruned (as etcd-snapshot named it).")
    rules: RetentionRules = Field(default=RetentionRules(), description="How many snapshots each rule keeps.")


def _result(
    request: RetentionRequest, plan: RetentionPlan, outcome: str, summary: str, **extra: object
) -> RetentionResult:
    return RetentionResult.model_validate(
        {
            "outcome": outcome,
            "summary": summary,
            "cluster": request.cluster_name,
            "keep": plan.keep,
            "delete": plan.delete,
            "unverified": plan.unverified,
            **extra,
        }
    )


@flow(name="backup-retention")
def backup_retention(request: RetentionRequest, controls: ChangeControls) -> RetentionResult | State[RetentionResult]:
    """Plan with the rules, then (unless planning, and once approved) delete what no rule keeps."""
    log = get_run_logger()
    bucket = load_bucket(request.bucket_block)
    snapshots = catalogue_snapshots(bucket, request.cluster_name)
    plan = plan_retention([record for record, _ in snapshots], request.rules)
    for name, problem in plan.unverified.items():
        log.warning("kept %s without deleting it: %s", name, problem)
    key = artifact_key("backup-retention", request.cluster_name)
    counts = f"{len(plan.delete)} to delete, {len(plan.keep)} kept, {len(plan.unverified)} unverified kept"
    if controls.plan or not plan.delete:
        outcome = "planned" if controls.plan else "unchanged"
        result = _result(request, plan, outcome, f"retention for {request.cluster_name}: {counts}; nothing deleted")
        create_markdown_artifact(retention_markdown(result, plan), key=key, description="backup retention")
        return result
    preview = _result(request, plan, "planned", counts)
    decision = request_approval(controls, retention_markdown(preview, plan))
    if not decision.approved:
        result = _result(request, plan, "not-approved", f"not approved ({decision.comment}); nothing deleted")
        create_markdown_artifact(retention_markdown(result, plan), key=key, description="backup retention")
        return not_approved_state(result, decision)
    deleted = delete_objects(bucket, plan.delete)
    deleted += delete_objects(bucket, [manifest_name(n) for n in plan.delete if n in deleted])
    missed = sorted(set(plan.delete) - set(deleted))
    if missed:
        raise RuntimeError(f"S3 refused to delete {missed}; re-run backup-retention (it re-reads the bucket)")
    summary = f"deleted {len(plan.delete)} snapshot(s) of {request.cluster_name}; {len(plan.keep)} kept"
    result = _result(request, plan, "changed", summary, approval=decision.comment, deleted_objects=deleted)
    create_markdown_artifact(retention_markdown(result, plan), key=key, description="backup retention")
    log.info(summary)
    return result
