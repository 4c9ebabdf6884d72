"""What the Helm runbooks return: one typed result per flow (a `ChangeResult` with its evidence), and the
rows of a release's history for the read-only `helm-history` flow.

Kept beside the pure Helm logic so reports (`rollbook/reports/helm.py`) render them without importing tasks or
flows, and tests read fields instead of indexing dicts.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from rollbook.change import ChangeResult
from rollbook.helm_recovery import StuckRelease
from rollbook.helm_releases import ImageChange, RevisionInfo, ValueChange
from rollbook.pods import PodProblem

__all__ = [
    "AtomicUpgradeResult",
    "HelmHistoryResult",
    "HelmRollbackResult",
    "PodProblem",
    "RehearsalResult",
    "ReleaseChange",
    "StepResult",
]


class ReleaseChange(ChangeResult):
    """What every Helm change reports: the release, where it started, and what the plan said would change."""

    release: str
    namespace: str
    from_revision: int | None = Field(description="The live revision before the change (None: not installed).")
    value_changes: list[ValueChange] = []
    image_changes: list[ImageChange] = []
    annotated_deployments: list[str] = []


class HelmRollbackResult(ReleaseChange):
    """helm-rollback: which revision it went back to, and the state it verified afterwards."""

    to_revision: int
    from_chart: str = ""
    to_chart: str = ""
    new_revision: int | None = Field(default=None, description="The revision helm created for the rollback.")
    status: str = ""
    pods_ready: bool | None = None
    pod_problems: list[str] = []
    live_images: dict[str, list[str]] = {}
    schema_guard: str = Field(default="", description="The schema guard's verdict on the target, when configured.")
    recovered: StuckRelease | None = Field(
        default=None,
        description="The pending revision an interrupted helm had left, marked failed before rolling back.",
    )


class AtomicUpgradeResult(ReleaseChange):
    """helm-atomic-upgrade: the revision that is live afterwards and, when helm rolled back, why."""

    to_chart: str = ""
    already_live: bool = Field(
        default=False, description="The deployed revision already was this chart with these values: nothing to do."
    )
    checklist: str | None = Field(default=None, description="The pre-deploy checklist's verdict, when it ran.")
    interrupted_install: str = Field(
        default="", description="Evidence of an earlier first install that never finished, removed and made anew."
    )
    succeeded: bool | None = None
    live_revision: int | None = None
    live_status: str = ""
    attempted_revision: int | None = None
    rolled_back: bool = False
    helm_error: str = ""
    failure_reasons: list[str] = []
    pod_problems: list[PodProblem] = []
    pods_ready: bool | None = None
    pod_report_problems: list[str] = []
    seconds: float = 0.0


class HelmHistoryResult(BaseModel):
    """helm-history (read-only): every stored revision, oldest first, and which one is deployed."""

    release: str
    namespace: str
    revisions: list[RevisionInfo]
    deployed: int | None = Field(description="The revision helm reports as deployed (None: none is).")
    stuck: StuckRelease | None = Field(default=None, description="Evidence when the release is stuck pending.")
    read_at: dt.datetime


class StepResult(BaseModel):
    """One timed step of the rollback rehearsal."""

    step: str
    ok: bool
    seconds: float
    detail: str = ""


class RehearsalResult(ChangeResult):
    """rollback-rehearsal: every step with its time; `total_seconds` is the drill's wall time (steps included)."""

    namespace: str
    release: str
    from_tag: str
    to_tag: str
    passed: bool = False
    total_seconds: float = 0.0
    steps: list[StepResult] = []
