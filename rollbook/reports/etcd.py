"""Results of the etcd backup flows and the markdown a person reads for each (pure, unit-tested)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult
from rollbook.etcd_backup import InventoryDiff, Manifest, summary_counts
from rollbook.retention import RetentionPlan

_LIST_LIMIT = 50


class SnapshotResult(BaseModel):
    """What an etcd-snapshot run stored."""

    name: str
    snapshot_key: str
    manifest_key: str
    cluster: str
    revision: int
    etcd_hash: int
    total_keys: int
    size: int
    sha256: str
    s3_checksum_sha256: str
    parts: int
    objects: int = Field(description="Objects in the inventory recorded with the snapshot.")
    seconds: dict[str, float] = Field(description="Time per phase: snapshot, verify, inventory, upload.")


def _bullets(items: list[str], *, none: str = "none") -> str:
    if not items:
        return f"- {none}\n"
    shown = "".join(f"- `{item}`\n" for item in items[:_LIST_LIMIT])
    more = len(items) - _LIST_LIMIT
    return shown + (f"- … and {more} more\n" if more > 0 else "")


def _phases(seconds: dict[str, float]) -> str:
    rows = "".join(f"| {phase} | {value:.1f} |\n" for phase, value in seconds.items())
    return f"| phase | seconds |\n|---|---|\n{rows}| **total** | **{sum(seconds.values()):.1f}** |\n"


def snapshot_markdown(result: SnapshotResult, manifest: Manifest) -> str:
    counts = "".join(f"| {row['resource']} | {row['objects']} |\n" for row in summary_counts(manifest.inventory))
    return (
        f"# etcd snapshot of `{result.cluster}`\n\n"
        f"Stored `{result.snapshot_key}` ({result.size:,} bytes, {result.parts} part(s)) and its manifest "
        f"`{result.manifest_key}`.\n\n"
        f"- etcd revision **{result.revision}**, hash `{result.etcd_hash}`, {result.total_keys:,} keys "
        f"(checked with `etcdutl snapshot status` before upload)\n"
        f"- SHA-256 `{result.sha256}`; S3 composite checksum `{result.s3_checksum_sha256}`\n"
        f"- taken at {manifest.taken_at:%Y-%m-%d %H:%M:%S} UTC with "
        + ", ".join(f"{tool} {version}" for tool, version in manifest.tools.items())
        + f"\n- encryption: {manifest.encryption.mode}\n\n"
        f"## Inventory ({result.objects:,} objects)\n\n| resource | objects |\n|---|---|\n{counts}\n"
        f"## Time\n\n{_phases(result.seconds)}"
    )


class RetentionResult(ChangeResult):
    """What a backup-retention run kept and deleted (or, planned, would delete)."""

    cluster: str
    keep: dict[str, list[str]] = Field(description="Snapshot -> the rules that keep it.")
    delete: list[str] = Field(description="Snapshots deleted (or, in plan mode, that would be).")
    unverified: dict[str, str] = Field(description="Snapshots kept because their manifest is missing or unreadable.")
    deleted_objects: list[str] = Field(default=[], description="Object names actually deleted (snapshot+manifest).")


def retention_markdown(result: RetentionResult, plan: RetentionPlan) -> str:
    verb = "would delete" if result.outcome == "planned" else "deleted"
    kept = "".join(f"- `{name}`: {', '.join(reasons)}\n" for name, reasons in result.keep.items()) or "- none\n"
    unverified = "".join(f"- `{name}`: {problem}\n" for name, problem in result.unverified.items())
    return (
        f"# Backup retention for `{result.cluster}`: {result.outcome}\n\n{result.summary}\n\n"
        f"Rules: {plan.rules.describe()}\n\n"
        f"## {verb} ({len(result.delete)})\n\n{_bullets(result.delete)}\n"
        f"## Kept ({len(result.keep)})\n\n{kept}\n"
        + (
            f"## Kept without a readable manifest ({len(result.unverified)})\n\n"
            f"Never deleted automatically: check these by hand.\n\n{unverified}"
            if unverified
            else ""
        )
    )


class RestoreResult(ChangeResult):
    """How an etcd-restore run ended, with its evidence."""

    snapshot: str
    revision: int
    taken_at: str
    come_back: list[str] = Field(default=[], description="Objects the restore brought back.")
    disappeared: list[str] = Field(default=[], description="Objects created after the snapshot, gone now.")
    missing: list[str] = Field(default=[], description="Objects of the snapshot's inventory not served afterwards.")
    refused: list[str] = Field(default=[], description="Why the snapshot was refused (nothing was touched).")
    previous_data_dir: str | None = Field(default=None, description="Where the replaced etcd data was moved.")
    seconds: dict[str, float] = Field(default={}, description="Time to recover, per phase.")


def restore_evidence_markdown(manifest: Manifest, diff: InventoryDiff | None, *, driver: str) -> str:
    """What the approver sees: which snapshot, and what a restore does to the live cluster's objects."""
    if diff is None:
        changes = "The live cluster could not be read, so no comparison is possible.\n"
    else:
        changes = (
            f"### Comes back ({len(diff.come_back)})\n\n{_bullets(diff.come_back)}\n"
            f"### Disappears ({len(diff.disappear)})\n\n{_bullets(diff.disappear)}"
        )
    return (
        f"# Restore `{manifest.cluster.name}` from `{manifest.name}`\n\n"
        f"- taken at {manifest.taken_at:%Y-%m-%d %H:%M:%S} UTC, etcd revision **{manifest.etcd.revision}**, "
        f"{manifest.inventory.total:,} objects\n"
        f"- verified: SHA-256, manifest and `etcdutl snapshot status` match\n"
        f"- control plane driver: `{driver}`: the API servers stop, etcd restarts on the restored data\n\n"
        f"## Against the live cluster\n\n{changes}"
    )


def restore_result_markdown(result: RestoreResult) -> str:
    body = f"# etcd restore: {result.outcome}\n\n{result.summary}\n\n"
    if result.refused:
        return body + "## Refused, nothing was touched\n\n" + _bullets(result.refused)
    body += (
        f"Snapshot `{result.snapshot}` (revision {result.revision}, taken {result.taken_at}).\n\n"
        f"## Came back ({len(result.come_back)})\n\n{_bullets(result.come_back)}\n"
        f"## Gone: created after the snapshot ({len(result.disappeared)})\n\n{_bullets(result.disappeared)}\n"
        f"## Missing after the restore ({len(result.missing)})\n\n{_bullets(result.missing)}\n"
    )
    if result.previous_data_dir:
        body += f"The replaced etcd data is kept in `{result.previous_data_dir}`.\n\n"
    return body + (f"## Time to recover\n\n{_phases(result.seconds)}" if result.seconds else "")


class DrillResult(ChangeResult):
    """A dr-drill's score: did everything come back, and how fast."""

    drill: str
    disaster: str
    snapshot: str
    objects: int = Field(description="Objects in the snapshot's inventory.")
    workload_objects: int = Field(description="Objects the drill created (namespaces, ConfigMaps, Deployments).")
    lost: list[str] = Field(description="Objects of the snapshot not served after the restore.")
    time_to_recover: float = Field(description="Seconds from the disaster's end to a verified cluster.")
    target_seconds: float
    passed: bool
    phases: dict[str, float] = Field(default={}, description="The restore's phases, in seconds.")


def drill_markdown(result: DrillResult) -> str:
    verdict = "PASSED" if result.passed else "FAILED"
    return (
        f"# DR drill `{result.drill}`: **{verdict}**\n\n{result.summary}\n\n"
        f"| | |\n|---|---|\n| disaster | {result.disaster} |\n| snapshot | `{result.snapshot}` |\n"
        f"| objects in the snapshot | {result.objects:,} |\n| drill workload | {result.workload_objects:,} objects |\n"
        f"| objects lost | **{len(result.lost)}** |\n"
        f"| time to recover | **{result.time_to_recover:.1f} s** (goal {result.target_seconds:.0f} s) |\n\n"
        f"## Lost ({len(result.lost)})\n\n{_bullets(result.lost)}\n"
        f"## Restore phases\n\n{_phases(result.phases)}"
    )
