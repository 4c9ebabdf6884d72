"""Restore namespaces from a Velero backup, through a Restore object, and prove the objects came back.

The runbook's `velero restore create --from-backup ... --namespace-mappings ... --wait`, done through the API:
1. the backup is the named one, or the newest Completed backup that covers every asked namespace; it must exist
   and be Completed (a PartiallyFailed backup may lack objects, so it is never restored from);
2. a namespace mapping is checked first: never onto a namespace that already exists (Velero would merge into it
   and skip what is there) unless `allow_existing_namespaces`, never two namespaces onto one;
3. what the backup holds is read from Velero itself (a DownloadRequest for its BackupResourceList), so the
   check afterwards compares with the backup's own item list, not with what someone remembers;
4. plan mode shows the restore and the objects it should bring back, and changes nothing; approval comes next;
5. the Restore carries rollbook's audit annotations; the run waits (bounded) for Velero's phase, then for every
   Deployment, ConfigMap, Service and Secret of the backup to exist in its (mapped) namespace and every
   Deployment to be available. Anything missing fails the run, naming the objects.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State
from pydantic import Field

from flows._velero_source import VeleroSource, generated_name
from flows.velero_backup import VeleroFailed
from rollbook.artifacts import artifact_key
from rollbook.change import ChangeControls, change_annotations, not_approved_state, request_approval
from rollbook.reports.velero import VeleroRestoreResult, restore_markdown
from rollbook.types import DnsLabel, FormOptional, Namespace
from rollbook.velero import (
    VeleroRefused,
    backup_problems,
    covered_namespaces,
    expected_objects,
    newest_completed,
    phase_outcome,
    validate_mapping,
)
from tasks.cluster import resolve_cluster
from tasks.velero import (
    backup_resource_list,
    create_velero_object,
    existing_namespaces,
    list_backups,
    verify_restored,
    wait_for_phase,
)


class VeleroRestoreRequest(VeleroSource):
    """Which backup, which namespaces, and where they go."""

    backup_name: FormOptional[DnsLabel] = Field(
        default=None, description="Backup to restore; empty: the newest Completed one covering the namespaces."
    )
    restore_name: FormOptional[DnsLabel] = Field(default=None, description="The Restore's name; default generated.")
    namespaces: list[Namespace] = Field(min_length=1, max_length=100, description="Namespaces to restore.")
    namespace_mapping: dict[Namespace, Namespace] = Field(
        default={}, description="Restore a namespace under another name: {source: target}."
    )
    allow_existing_namespaces: bool = Field(
        default=False, description="Allow a mapping onto a namespace that already exists (Velero merges into it)."
    )
    verify_timeout_seconds: int = Field(
        default=300, ge=10, le=3600, description="How long restored Deployments may take to become available."
    )


def _choose_backup(request: VeleroRestoreRequest, backups: list[dict[str, Any]]) -> dict[str, Any]:
    if request.backup_name is None:
        return dict(newest_completed(backups, namespaces=request.namespaces))
    found = next((b for b in backups if (b.get("metadata") or {}).get("name") == request.backup_name), None)
    if found is None:
        raise VeleroRefused(
            f"backup {request.backup_name!r} not found in namespace {request.velero_namespace!r}; nothing changed"
        )
    phase = (found.get("status") or {}).get("phase")
    if phase_outcome(phase) != "succeeded":
        raise VeleroRefused(f"backup {request.backup_name!r} is {phase or 'New'}, not Completed; nothing changed")
    missing = sorted(set(request.namespaces) - covered_namespaces(found, request.namespaces))
    if missing:
        raise VeleroRefused(f"backup {request.backup_name!r} does not include namespaces {missing}; nothing changed")
    return found


def restore_spec(request: VeleroRestoreRequest, backup: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"backupName": backup, "includedNamespaces": list(request.namespaces)}
    if request.namespace_mapping:
        spec["namespaceMapping"] = dict(request.namespace_mapping)
    return spec


def _publish(result: VeleroRestoreResult) -> VeleroRestoreResult:
    get_run_logger().info("%s", result.summary)
    create_markdown_artifact(restore_markdown(result), key=artifact_key("velero-restore", result.restore))
    return result


@flow(name="velero-restore")
def velero_restore(
    request: VeleroRestoreRequest, controls: ChangeControls
) -> VeleroRestoreResult | State[VeleroRestoreResult]:
    """Restore from a named or the newest Completed backup, wait for Velero, then check every object is back."""
    cluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    backup = _choose_backup(request, list_backups(cluster, request.velero_namespace))
    backup_name = str(backup["metadata"]["name"])
    mapping = dict(request.namespace_mapping)
    targets = [mapping.get(ns, ns) for ns in request.namespaces]
    validate_mapping(
        mapping, restored=request.namespaces, existing=existing_namespaces(cluster, list(mapping.values())),
        allow_existing=request.allow_existing_namespaces,
    )  # fmt: skip
    in_place = [ns for ns in existing_namespaces(cluster, targets) if ns not in mapping.values()]
    if in_place:
        get_run_logger().warning("namespaces %s exist: Velero skips objects that are already there", in_place)
    expected = expected_objects(
        backup_resource_list(cluster, request.velero_namespace, backup_name), request.namespaces, mapping
    )
    name = request.restore_name or generated_name(f"{backup_name}-restore")
    base = VeleroRestoreResult(
        outcome="planned", summary="", restore=name, backup=backup_name, velero_namespace=request.velero_namespace,
        namespaces=list(request.namespaces), namespace_mapping=mapping,
        expected=[f"{kind} {ns}/{obj}" for kind, ns, obj in expected],
    )  # fmt: skip
    if controls.plan:
        summary = f"plan only: would restore {targets} from backup {backup_name!r} ({len(expected)} objects checked)"
        return _publish(base.model_copy(update={"summary": summary}))
    decision = request_approval(controls, restore_markdown(base, "Approve this Velero restore?"))
    if not decision.approved:
        refused = base.model_copy(update={"outcome": "not-approved", "summary": "not approved: nothing changed"})
        return not_approved_state(_publish(refused), decision)

    annotations = change_annotations(controls, "velero-restore", backup=backup_name)
    create_velero_object(cluster, request.velero_namespace, "Restore", name, restore_spec(request, backup_name),
                         annotations)  # fmt: skip
    done = wait_for_phase(cluster, request.velero_namespace, "restores", name, request.wait_timeout_seconds)
    status = done.get("status") or {}
    result = base.model_copy(
        update={
            "outcome": "changed", "approval": decision.comment, "phase": status.get("phase"),
            "errors": int(status.get("errors") or 0), "warnings": int(status.get("warnings") or 0),
            "problems": backup_problems(status),
        }
    )  # fmt: skip
    if phase_outcome(result.phase) != "succeeded":
        _publish(result.model_copy(update={"summary": f"restore {name!r} ended {result.phase}"}))
        raise VeleroFailed(f"restore {name!r} ended {result.phase}: {'; '.join(result.problems) or '-'}")
    missing, unavailable = verify_restored(cluster, expected, request.verify_timeout_seconds)
    result = result.model_copy(update={"missing": missing, "unavailable": unavailable})
    if missing or unavailable:
        _publish(result.model_copy(update={"summary": f"restore {name!r}: objects missing or not available"}))
        raise VeleroFailed(f"restore {name!r} Completed but missing {missing}, not available {unavailable}")
    summary = f"restored {targets} from backup {backup_name!r}: {len(expected)} objects back, Deployments available"
    return _publish(result.model_copy(update={"summary": summary}))
