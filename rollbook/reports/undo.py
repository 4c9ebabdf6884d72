"""deployment-undo's plan and result, and the markdown a person reads for each (pure, unit-tested).

The flow computes an `UndoPlan` from the Deployment and the ReplicaSet it restores, returns an `UndoResult`
(the plan's public evidence plus how the run ended) and publishes the markdown rendered here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rollbook.change import ChangeResult, Outcome


class UndoPlan(BaseModel):
    """What the rollback would change; `target_template` and `new_annotations` are what it writes."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    deployment: str
    resource_version: str
    paused: bool
    from_revision: int
    to_revision: int
    target_replica_set: str
    target_uid: str
    skip: bool = Field(description="The live template already is the target's: nothing to write.")
    current_images: list[str]
    target_images: list[str]
    template_changes: list[dict[str, Any]]
    annotations_removed: list[str]
    annotations_set: dict[str, str]
    target_template: dict[str, Any] = Field(repr=False)
    new_annotations: dict[str, str] = Field(repr=False)
    schema_guard: str = Field(default="", description="The schema guard's verdict on the target, when configured.")


# The plan's fields a result repeats as evidence (the rest is what the patch writes, not for a report).
EVIDENCE_FIELDS = (
    "namespace",
    "deployment",
    "from_revision",
    "to_revision",
    "target_replica_set",
    "current_images",
    "target_images",
    "template_changes",
    "annotations_removed",
    "annotations_set",
    "schema_guard",
)


class UndoResult(ChangeResult):
    """How a deployment-undo run ended, with its evidence."""

    namespace: str
    deployment: str
    from_revision: int = Field(description="The revision live before the rollback.")
    to_revision: int = Field(description="The revision restored (as numbered before the controller renumbers it).")
    target_replica_set: str
    current_images: list[str]
    target_images: list[str]
    template_changes: list[dict[str, Any]] = Field(default_factory=list)
    annotations_removed: list[str] = Field(default_factory=list)
    annotations_set: dict[str, str] = Field(default_factory=dict)
    schema_guard: str = Field(default="", description="The schema guard's verdict on the target, when configured.")
    candidates: list[dict[str, Any]] = Field(default_factory=list, description="last_known_good: what was checked.")
    rollout: dict[str, Any] | None = Field(default=None, description="The rollout wait, when this run waited.")
    revision_after: int | None = Field(default=None, description="The Deployment's revision once rolled out.")
    applied_by: str | None = Field(
        default=None, description="The run that applied this rollback, when this run found it already applied."
    )

    @classmethod
    def from_plan(cls, plan: UndoPlan, *, outcome: Outcome, summary: str, **evidence: Any) -> UndoResult:
        return cls(outcome=outcome, summary=summary, **{k: getattr(plan, k) for k in EVIDENCE_FIELDS}, **evidence)


def plan_markdown(plan: UndoPlan, heading: str) -> str:
    lines = [
        f"### {heading}",
        "",
        f"Deployment `{plan.namespace}/{plan.deployment}`: revision {plan.from_revision} → "
        f"revision {plan.to_revision} (ReplicaSet `{plan.target_replica_set}`)",
        "",
        f"- images: `{', '.join(plan.current_images)}` → `{', '.join(plan.target_images)}`",
    ]
    if plan.schema_guard:
        lines.append(f"- schema guard: {plan.schema_guard}")
    if plan.template_changes:
        lines += ["", "| template field | current | target |", "|---|---|---|"]
        for change in plan.template_changes:
            lines.append(f"| `{change['path']}` | `{change['current']}` | `{change['target']}` |")
    if plan.annotations_set or plan.annotations_removed:
        lines += ["", "Deployment annotations (as kubectl copies them from the ReplicaSet):"]
        lines += [f"- set `{k}` = `{v}`" for k, v in sorted(plan.annotations_set.items())]
        lines += [f"- remove `{k}`" for k in plan.annotations_removed]
    return "\n".join(lines) + "\n"


_HEADINGS: dict[str, str] = {
    "changed": "Rolled back",
    "planned": "Plan (nothing changed)",
    "not-approved": "Rollback not approved (nothing changed)",
}


def result_markdown(result: UndoResult, plan: UndoPlan) -> str:
    """The report of a run that returned: the plan under a heading saying how it ended, then the summary."""
    if result.outcome == "unchanged":
        heading = "Rollback already applied" if result.applied_by else "Nothing to do"
        return f"### Undo `{result.namespace}/{result.deployment}`: {heading.lower()}\n\n{result.summary}\n"
    heading = _HEADINGS.get(result.outcome, result.outcome)
    wait = ""
    if result.rollout is not None and (result.rollout.get("api_errors") or 0) > 0:
        wait = (
            f"\nThe API server was unavailable during the wait ({result.rollout['api_errors']} failed calls, "
            f"{result.rollout.get('api_outage_seconds', 0)}s); the wait rode it out.\n"
        )
    return plan_markdown(plan, heading) + f"\n{result.summary}\n" + wait


def rollout_failed_markdown(plan: UndoPlan, message: str, pod_problems: dict[str, list[str]]) -> str:
    """The report of a rollback that was applied but did not roll out: the plan, why, and each pod's problems."""
    pods = "\n".join(f"- `{pod}`: {', '.join(p) or 'no problem reported'}" for pod, p in sorted(pod_problems.items()))
    return plan_markdown(plan, "Rollback applied, rollout FAILED") + f"\n{message}\n\n{pods}\n"
