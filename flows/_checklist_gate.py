"""The pre-deploy checklist as the first gate of every deploy flow (helm-atomic-upgrade, canary-rollout, blue-green).

The `predeploy-checklist` flow runs as a subflow on exactly the release, chart and values the deploy would
install; a failed verdict (ChecklistFailed) ends the run before any release, route or weight is touched. The
judging settings are one model, so the three deploy forms show the same checklist fields as the checklist itself.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows._cluster_source import ClusterSource
from flows.predeploy_checklist import ChecklistFailed, ChecklistRequest, predeploy_checklist
from rollbook.checklist import CheckPolicy, Waiver
from rollbook.form_rules import form_rules_schema, given, not_both
from rollbook.types import BlockName, FormOptional, LocalPath
from tasks.migrations import MigrationCheck
from tasks.scanners import ScannerKind, severity_ok

__all__ = ["ChecklistFailed", "ChecklistOptions", "checklist_gate"]


class ChecklistOptions(BaseModel):
    """How the checklist judges the release (its own fields; the cluster, release, chart and values come from the
    deploy itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        not_both(
            given("registry_block"), given("cosign_public_key"), "give registry_block or cosign_public_key, not both"
        ),
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

    @field_validator("severity_threshold")
    @classmethod
    def _severity(cls, value: str) -> str:
        return severity_ok(value)

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        """The checklist request built from these options refuses both; say so in the form, not mid-run."""
        if self.registry_block and self.cosign_public_key:
            raise ValueError("give registry_block or cosign_public_key, not both")
        return self


def checklist_gate(
    source: ClusterSource,
    *,
    run: bool,
    options: ChecklistOptions,
    namespace: str,
    release: str,
    chart: str,
    values: dict[str, Any],
    helm: str,
) -> str:
    """The checklist's verdict summary, or why it did not run; ChecklistFailed (with the verdict) stops the deploy."""
    if not run:
        return "not run (run_checklist is off)"
    request = ChecklistRequest(
        cluster_block=source.cluster_block,
        kubeconfig_path=source.kubeconfig_path,
        context=source.context,
        namespace=namespace,
        release=release,
        chart=chart,
        values=values,
        helm_executable=helm,
        **dict(options),
    )
    try:
        verdict = predeploy_checklist(request=request)
    except ChecklistFailed as exc:
        raise ChecklistFailed(
            f"deploy of release {release!r} in namespace {namespace!r} stopped before any change: "
            f"the pre-deploy checklist failed: {exc}",
            exc.verdict,
        ) from None
    return verdict.summary
