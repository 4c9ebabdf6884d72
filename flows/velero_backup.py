"""Back up namespaces with Velero, through a Backup object, and wait for Velero's verdict.

The runbook's `velero backup create ... --wait`, done through the API:
1. the storage location must exist and be Available (a backup to anything else fails later, with less to say);
2. a Backup of that name that already exists is not made again: a re-run reports (and waits for) it;
3. plan mode says what the Backup would be and changes nothing; approval is asked before it is created;
4. the Backup carries rollbook's audit annotations, and the run waits (bounded) for a final phase;
5. Completed is success; PartiallyFailed, Failed and FailedValidation fail the run with Velero's errors,
   warnings and reasons. Warnings on a Completed backup are reported, not fatal.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field, StringConstraints

from flows._velero_source import VeleroSource, generated_name
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, not_approved_state, request_approval
from rollbook.reports.velero import VeleroBackupResult, backup_markdown
from rollbook.types import DnsLabel, FormOptional, LabelKey, LabelValue, Namespace
from rollbook.velero import backup_problems, phase_outcome
from tasks.cluster import resolve_cluster
from tasks.velero import create_velero_object, read_velero_object, storage_location, wait_for_phase

# a resource as Velero's --include-resources takes it: "deployments", "deployments.apps", "*"
Resource = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)$", max_length=253)]


class VeleroFailed(RuntimeError):
    """Velero finished the Backup or Restore without completing it; the message has its errors and reasons."""


class VeleroBackupRequest(VeleroSource):
    """What to back up, where, and for how long to keep it."""

    backup_name: FormOptional[DnsLabel] = Field(
        default=None, description="The Backup's name; a re-run with the same name reports that backup. Default: "
        "rollbook-<time>."
    )  # fmt: skip
    included_namespaces: list[Namespace] = Field(
        default=[], max_length=200, description="Namespaces to back up; empty: every namespace."
    )
    excluded_namespaces: list[Namespace] = Field(default=[], max_length=200)
    label_selector: dict[LabelKey, LabelValue] = Field(
        default={}, description="Back up only objects with all these labels (matchLabels)."
    )
    included_resources: list[Resource] = Field(
        default=[], max_length=100, description="Resources to include, e.g. deployments; empty: all."
    )
    excluded_resources: list[Resource] = Field(default=[], max_length=100)
    ttl_hours: int = Field(default=720, ge=1, le=24 * 366, description="How long Velero keeps the backup.")
    storage_location: DnsLabel = Field(default="default", description="BackupStorageLocation to write to.")
    snapshot_volumes: bool = Field(default=False, description="Ask Velero for volume snapshots too.")


def backup_spec(request: VeleroBackupRequest) -> dict[str, Any]:
    """The Backup's spec, from the request alone (pure)."""
    spec: dict[str, Any] = {
        "includedNamespaces": list(request.included_namespaces) or ["*"],
        "storageLocation": request.storage_location,
        "ttl": f"{request.ttl_hours}h0m0s",
        "snapshotVolumes": request.snapshot_volumes,
        "defaultVolumesToFsBackup": False,
    }
    optional = {
        "excludedNamespaces": list(request.excluded_namespaces),
        "includedResources": list(request.included_resources),
        "excludedResources": list(request.excluded_resources),
    }
    spec.update({k: v for k, v in optional.items() if v})
    if request.label_selector:
        spec["labelSelector"] = {"matchLabels": dict(request.label_selector)}
    return spec


def _from_status(result: VeleroBackupResult, obj: dict[str, Any]) -> VeleroBackupResult:
    status = obj.get("status") or {}
    return result.model_copy(
        update={
            "phase": status.get("phase"),
            "errors": int(status.get("errors") or 0),
            "warnings": int(status.get("warnings") or 0),
            "items_backed_up": (status.get("progress") or {}).get("itemsBackedUp"),
            "problems": backup_problems(status),
        }
    )


def _publish(result: VeleroBackupResult) -> VeleroBackupResult:
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(backup_markdown(result), key=artifact_key("velero-backup", result.backup))
    if result.phase and phase_outcome(result.phase) in ("partial", "failed"):
        raise VeleroFailed(f"backup {result.backup!r} ended {result.phase}: {'; '.join(result.problems) or '-'}")
    return result


@flow(name="velero-backup")
def velero_backup(
    request: VeleroBackupRequest, controls: ChangeControls
) -> VeleroBackupResult | State[VeleroBackupResult]:
    """Create a Velero Backup (plan, approval, audit), wait for it, and fail loudly unless it Completed."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    name = request.backup_name or generated_name("rollbook")
    spec = backup_spec(request)
    storage_location(cluster, request.velero_namespace, request.storage_location)
    base = VeleroBackupResult(
        outcome="planned", summary="", backup=name, velero_namespace=request.velero_namespace,
        storage_location=request.storage_location, spec=spec, would_back_up=list(request.included_namespaces),
    )  # fmt: skip

    existing = read_velero_object(cluster, request.velero_namespace, "backups", name)
    if existing is not None:
        if controls.plan:
            return _publish(base.model_copy(update={"summary": f"plan only: backup {name!r} already exists"}))
        done = wait_for_phase(cluster, request.velero_namespace, "backups", name, request.wait_timeout_seconds)
        summary = f"backup {name!r} already existed: {(done.get('status') or {}).get('phase')}; nothing created"
        return _publish(_from_status(base.model_copy(update={"outcome": "unchanged", "summary": summary}), done))

    where = ", ".join(request.included_namespaces) or "every namespace"
    if controls.plan:
        return _publish(base.model_copy(update={"summary": f"plan only: would back up {where} as {name!r}"}))
    decision = request_approval(controls, backup_markdown(base, "Approve this Velero backup?"))
    if not decision.approved:
        refused = base.model_copy(update={"outcome": "not-approved", "summary": "not approved: nothing changed"})
        return not_approved_state(_publish(refused), decision)

    annotations = change_annotations(controls, "velero-backup")
    create_velero_object(cluster, request.velero_namespace, "Backup", name, spec, annotations)
    done = wait_for_phase(cluster, request.velero_namespace, "backups", name, request.wait_timeout_seconds)
    phase = (done.get("status") or {}).get("phase")
    changed = base.model_copy(
        update={"outcome": "changed", "summary": f"backup {name!r} of {where}: {phase}", "approval": decision.comment}
    )
    return _publish(_from_status(changed, done))
